"""dfd_kit.exercises: each checker accepts the kit's own implementation (and a learner's
correct one), rejects plausible wrong ones with a paragraph naming the mistake, reports an
unimplemented stub and a learner's exception kindly, and never prints the answer."""
from __future__ import annotations

import numpy as np
import pytest

import dfd_kit  # noqa: F401  (configures Jittor before anything imports it)
from dfd_kit import exercises as ex
from dfd_kit.config import COMPONENTS, PARTS


def check(checker, fn, capsys):
    """Run a checker; return (result, the printed text in one line)."""
    result = checker(fn)
    out = " ".join(capsys.readouterr().out.split())
    assert out == result.message   # one paragraph, printed and returned
    return result, out


def passes(checker, fn, capsys):
    result, out = check(checker, fn, capsys)
    assert result.passed and bool(result) and result.status == "passed", out
    assert out.startswith("Passed!")


def fails(checker, fn, capsys, *words):
    result, out = check(checker, fn, capsys)
    assert not result and result.status == "failed", out
    for w in words:
        assert w in out, f"{w!r} not in: {out}"
    return out


# ----------------------------------------------------------------------------- common behaviour

def stub(*args):
    ...  # your code here


def test_a_stub_gets_a_friendly_not_implemented_paragraph_and_nothing_raises(capsys):
    for checker in (ex.check_crop_components, ex.check_nearest_rows, ex.check_locally_linear_weights,
                    ex.check_paste_parts):
        result, out = check(checker, stub, capsys)
        assert result.status == "not implemented" and not result
        assert out.startswith("Not implemented yet") and "\n" not in result.message


def test_a_stub_raising_not_implemented_error_counts_as_not_implemented(capsys):
    def crop_components(sketch, layout):
        raise NotImplementedError

    result, out = check(ex.check_crop_components, crop_components, capsys)
    assert result.status == "not implemented"


def test_strict_mode_raises_on_a_failure_and_returns_on_a_pass(capsys):
    with pytest.raises(AssertionError, match="Not implemented yet"):
        ex.check_nearest_rows(stub, strict=True)
    assert ex.check_nearest_rows(kit_nearest_rows, strict=True)


def test_an_exception_in_the_learners_code_is_reported_with_its_line_and_a_hint(capsys):
    def crop_components(sketch, layout):
        b = layout.left_eye   # a plausible slip: Layout has no attribute per component
        return b

    result, out = check(ex.check_crop_components, crop_components, capsys)
    assert result.status == "error"
    assert "AttributeError" in out and "`b = layout.left_eye" in out and "layout.box(name)" in out
    assert "input 1 of" in out


def test_passing_the_result_instead_of_the_function_is_explained(capsys):
    result, out = check(ex.check_paste_parts, np.zeros(3), capsys)
    assert result.status == "failed" and "the function itself" in out


def test_the_result_repr_is_short():
    assert repr(ex.CheckResult("paste_parts", "passed", "x")) == "CheckResult('paste_parts', 'passed')"


# ----------------------------------------------------------------------------- 01: crops

def learner_crop(sketch, layout, grow=0, swap=False, paint=255, in_place=False, paint_first=False):
    """A learner's crop_components; the keywords put in one mistake each."""
    remainder = sketch if in_place else sketch.copy()
    crops = {}

    def at(b):
        return (b.x, b.y) if swap else (b.y, b.x)

    if paint_first:
        for name in PARTS:
            b = layout.box(name)
            y, x = at(b)
            remainder[y:y + b.size, x:x + b.size] = paint
    for name in PARTS:
        b = layout.box(name)
        y, x = at(b)
        crops[name] = (remainder if paint_first else sketch)[y:y + b.size + grow, x:x + b.size + grow].copy()
    for name in PARTS:
        b = layout.box(name)
        y, x = at(b)
        remainder[y:y + b.size + grow, x:x + b.size + grow] = paint
    crops["remainder"] = remainder
    return crops


def test_crop_checker_accepts_the_kits_crops_and_a_learners_correct_ones(capsys):
    from dfd_kit.components import crop_components

    passes(ex.check_crop_components, crop_components, capsys)
    passes(ex.check_crop_components, learner_crop, capsys)


def test_crop_checker_names_an_off_by_one_crop(capsys):
    out = fails(ex.check_crop_components, lambda s, lay: learner_crop(s, lay, grow=1), capsys,
                "off-by-one crop", "(64, 64)", "input 1 of")
    assert "(65, 65)" in out


def test_crop_checker_names_y_and_x_swapped(capsys):
    fails(ex.check_crop_components, lambda s, lay: learner_crop(s, lay, swap=True), capsys, "(y, x) swapped")


def test_crop_checker_names_painting_into_the_callers_sketch(capsys):
    fails(ex.check_crop_components, lambda s, lay: learner_crop(s, lay, in_place=True), capsys,
          "changed the sketch", "copy")


def test_crop_checker_names_black_paint_and_parts_cropped_after_painting(capsys):
    fails(ex.check_crop_components, lambda s, lay: learner_crop(s, lay, paint=0), capsys, "painted black")
    fails(ex.check_crop_components, lambda s, lay: learner_crop(s, lay, paint_first=True), capsys,
          "cropped after the boxes had been painted")


def test_crop_checker_names_a_missing_component(capsys):
    def no_remainder(sketch, layout):
        crops = learner_crop(sketch, layout)
        del crops["remainder"]
        return crops

    fails(ex.check_crop_components, no_remainder, capsys, "lacks remainder")


def test_crop_checker_never_prints_the_answer(capsys):
    import inspect

    result, out = check(ex.check_crop_components, lambda s, lay: learner_crop(s, lay, grow=1), capsys)
    assert "def " not in out and "for name in" not in out
    kit_lines = [line.strip() for line in inspect.getsource(ex._kit_crop_components).splitlines()]
    assert not [line for line in kit_lines if len(line) > 20 and line in out]


# ----------------------------------------------------------------------------- 03: nearest rows and weights

def kit_nearest_rows(latent, bank, k):
    from dfd_kit.manifold import nearest_neighbours

    return nearest_neighbours(latent, bank, k)[0]


def learner_nearest(latent, bank, k):
    d = ((bank - latent) ** 2).sum(axis=1)
    return np.argsort(d)[:k]


def test_nearest_rows_checker_accepts_the_kit_and_a_learners_argsort(capsys):
    passes(ex.check_nearest_rows, kit_nearest_rows, capsys)
    passes(ex.check_nearest_rows, learner_nearest, capsys)


@pytest.mark.parametrize("wrong, words", [
    (lambda z, b, k: np.argsort(((b - z) ** 2).sum(1))[::-1][:k], ["farthest"]),
    (lambda z, b, k: np.argsort(((b - z) ** 2).sum(1))[:k + 1], ["off by one", "returned 11 indices"]),
    (lambda z, b, k: np.argpartition(((b - z) ** 2).sum(1), k)[:k][::-1], ["another order", "nearest first"]),
    (lambda z, b, k: np.argsort(-(b @ z))[:k], ["largest dot product", "squared Euclidean"]),
    (lambda z, b, k: np.sort(((b - z) ** 2).sum(1))[:k], ["perhaps the distances", "np.argsort"]),
])
def test_nearest_rows_checker_names_plausible_mistakes(wrong, words, capsys):
    fails(ex.check_nearest_rows, wrong, capsys, *words)


def learner_weights(latent, neighbours, penalty=ex.ANCHOR_PENALTY):
    anchor, others = neighbours[0].astype(np.float64), neighbours[1:].astype(np.float64)
    m = (others - anchor).T
    r = latent - anchor
    if penalty is not None:
        m = np.vstack([m, np.full((1, m.shape[1]), penalty)])
        r = np.append(r, 0.0)
    x = np.linalg.lstsq(m, r, rcond=None)[0]
    return np.concatenate([[1 - x.sum()], x])


def test_weights_checker_accepts_the_kit_and_a_learners_stacked_least_squares(capsys):
    from dfd_kit.manifold import locally_linear_weights

    passes(ex.check_locally_linear_weights, locally_linear_weights, capsys)
    passes(ex.check_locally_linear_weights, learner_weights, capsys)


def test_weights_checker_names_a_missing_anchor_penalty(capsys):
    fails(ex.check_locally_linear_weights, lambda z, v: learner_weights(z, v, penalty=None), capsys,
          "missing anchor penalty", "ANCHOR_PENALTY")


def test_weights_checker_names_unnormalised_weights(capsys):
    out = fails(ex.check_locally_linear_weights, lambda z, v: np.linalg.lstsq(v.T, z, rcond=None)[0], capsys,
                "unnormalised weights", "not 1")
    assert "sum to" in out


def test_weights_checker_names_weights_rescaled_after_the_fit_and_a_missing_anchor_weight(capsys):
    def rescaled(z, v):
        a = np.linalg.lstsq(v.T, z, rcond=None)[0]
        return a / a.sum()

    fails(ex.check_locally_linear_weights, rescaled, capsys, "divided by its sum")
    fails(ex.check_locally_linear_weights, lambda z, v: learner_weights(z, v)[1:], capsys,
          "anchor's own weight is missing")


def test_weights_checker_names_a_penalty_of_another_strength(capsys):
    fails(ex.check_locally_linear_weights, lambda z, v: learner_weights(z, v, penalty=1.0), capsys,
          "another strength")


def test_weights_checker_reports_a_singular_solve_on_identical_neighbours(capsys):
    def by_solve(latent, neighbours):
        anchor, others = neighbours[0].astype(np.float64), neighbours[1:].astype(np.float64)
        m = np.vstack([(others - anchor).T, np.full((1, len(others)), ex.ANCHOR_PENALTY)])
        r = np.append(latent - anchor, 0.0)
        x = np.linalg.solve(m.T @ m, m.T @ r)
        return np.concatenate([[1 - x.sum()], x])

    result, out = check(ex.check_locally_linear_weights, by_solve, capsys)
    assert not result and "identical" in out and "lstsq" in out
    assert "input 6 of 6" in out   # the earlier inputs passed


# ----------------------------------------------------------------------------- 04: pasting

def kit_paste(maps, layout):
    import jittor as jt
    from dfd_kit.mapping import paste_feature_maps

    with jt.no_grad():
        return paste_feature_maps({c: jt.array(m[None]) for c, m in maps.items()}, layout).numpy()[0]


def learner_paste(maps, layout, swap=False, trim=True, order=None, in_place=False):
    face = maps["remainder"] if in_place else maps["remainder"].copy()
    for name in order or layout.paste_order:
        b = layout.box(name)
        rows = layout.nose_rows if (name == "nose" and trim) else b.size
        y, x = (b.x, b.y) if swap else (b.y, b.x)
        face[:, y:y + rows, x:x + b.size] = maps[name][:, :rows]
    return face


def test_paste_checker_accepts_the_kit_and_a_learners_slice_assignment(capsys):
    passes(ex.check_paste_parts, kit_paste, capsys)
    passes(ex.check_paste_parts, learner_paste, capsys)


@pytest.mark.parametrize("kw, words", [
    (dict(swap=True), ["(y, x) swapped"]),
    (dict(trim=False), ["nose was pasted whole", "nose_rows"]),
    (dict(order=("left_eye", "right_eye", "nose", "mouth")), ["order", "paste_order"]),
    (dict(in_place=True), ["changed the remainder map", "copy"]),
])
def test_paste_checker_names_plausible_mistakes(kw, words, capsys):
    fails(ex.check_paste_parts, lambda maps, layout: learner_paste(maps, layout, **kw), capsys, *words)


def test_paste_checker_names_channels_last(capsys):
    fails(ex.check_paste_parts, lambda maps, layout: np.moveaxis(learner_paste(maps, layout), 0, -1), capsys,
          "channels last")


# ----------------------------------------------------------------------------- 06: a stage-1 step

def kit_stage1_step(encoders, decoders, optimizer, inputs, targets, layout, ink_weight):
    from dfd_kit.training.stage1 import stage1_step

    return stage1_step(encoders, decoders, optimizer, inputs, targets, layout, "mse", ink_weight)["total"]


def learner_step(encoders, decoders, optimizer, inputs, targets, layout, ink_weight, use_ink=True,
                 against="targets", combine="sum", steps="one"):
    import jittor as jt
    from dfd_kit.training.stage1 import reconstruction_loss, stack_crops

    x = stack_crops(inputs, layout)
    y = stack_crops(targets if against == "targets" else inputs, layout)
    losses = []
    for c in COMPONENTS:
        out = decoders[c](encoders[c](jt.array(x[c])))
        loss = reconstruction_loss(out, jt.array(y[c]), "mse", ink_weight if use_ink else 0.0)
        if steps == "per component":
            optimizer.step(loss)
        losses.append(loss)
    total = sum(losses) / (len(losses) if combine == "mean" else 1)
    if steps == "one":
        optimizer.step(total)
    return total.item()


def test_stage1_checker_accepts_the_kits_step_and_a_learners(capsys):
    passes(ex.check_stage1_step, kit_stage1_step, capsys)
    passes(ex.check_stage1_step, learner_step, capsys)


@pytest.mark.parametrize("kw, words", [
    (dict(use_ink=False), ["no ink weight"]),
    (dict(against="inputs"), ["input 2 of 3", "clean targets"]),
    (dict(combine="mean"), ["averaged"]),
    (dict(steps="none"), ["did not change", "optimizer.step"]),
    (dict(steps="per component"), ["exactly one `optimizer.step`"]),
])
def test_stage1_checker_names_plausible_mistakes(kw, words, capsys):
    fails(ex.check_stage1_step, lambda *a: learner_step(*a, **kw), capsys, *words)


def test_stage1_checker_reports_a_stub_as_not_implemented(capsys):
    result, out = check(ex.check_stage1_step, stub, capsys)
    assert result.status == "not implemented" and out.startswith("Not implemented yet")


def test_paste_checker_names_parts_pasted_onto_zeros_and_reports_a_broadcast_error(capsys):
    def onto_zeros(maps, layout):
        face = np.zeros_like(maps["remainder"])
        maps = dict(maps, remainder=face)
        return learner_paste(maps, layout)

    fails(ex.check_paste_parts, onto_zeros, capsys, "pasted onto zeros")

    def untrimmed_slice(maps, layout):   # the region trimmed, the part not: shapes do not match
        face = maps["remainder"].copy()
        for name in layout.paste_order:
            b = layout.box(name)
            rows = layout.nose_rows if name == "nose" else b.size
            face[:, b.y:b.y + rows, b.x:b.x + b.size] = maps[name]
        return face

    result, out = check(ex.check_paste_parts, untrimmed_slice, capsys)
    assert result.status == "error" and "ValueError" in out and "nose_rows" in out


# ----------------------------------------------------------------------------- the mistakes are measured from the kit

def test_the_checkers_mistake_variants_without_a_mistake_are_the_kits_own_results():
    """Each checker names a mistake by redoing the computation with that one change; with no
    change, that redo must give exactly what the kit gives, on every input."""
    from dfd_kit.components import crop_components
    from dfd_kit.manifold import locally_linear_weights

    for case in ex._crop_cases():
        want = crop_components(*case.args)
        got = ex._crop_variant(*case.args)
        assert all(np.array_equal(got[c], want[c]) for c in COMPONENTS), case.label
    for case in ex._weights_cases():
        np.testing.assert_allclose(ex._weights_variant(*case.args), locally_linear_weights(*case.args),
                                   rtol=1e-6, atol=1e-7, err_msg=case.label)
    for case in ex._paste_cases():
        np.testing.assert_array_equal(ex._paste_variant(*case.args), kit_paste(*case.args), err_msg=case.label)
