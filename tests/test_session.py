"""The incremental engine without any UI (dfd_kit.session): what each change runs, and that
an incremental result is the result a full generation gives."""
from __future__ import annotations

import numpy as np
import pytest

from dfd_kit.config import COMPONENTS
from dfd_kit.errors import ConfigError


@pytest.fixture
def session(demo_model):
    from dfd_kit.session import Session

    return Session(demo_model)


def with_mouth_stroke(sketch, layout, dy=0):
    out = sketch.copy()
    b = layout.box("mouth")
    y = b.y + b.size // 2 + dy
    out[y:y + 2, b.x + b.size // 4:b.x + 3 * b.size // 4] = 0
    return out


def test_the_first_update_runs_everything_and_equals_a_full_generation(session, demo_model, demo_sketch):
    touched = session.update(demo_sketch, sex="female", k=5)
    assert touched == set(COMPONENTS)
    assert all(session.stats["encoded"][c] == 1 for c in COMPONENTS)
    full = demo_model.generate(demo_sketch, sex="female", k=5, shadows=False)
    np.testing.assert_array_equal(session.result.image, full.image)
    assert session.update(demo_sketch, sex="female", k=5) is None, "nothing changed, nothing runs"
    assert session.stats["updates"] == 1


def test_a_stroke_runs_only_the_components_it_touches(session, demo_model, demo_sketch):
    session.update(demo_sketch)
    drawn = with_mouth_stroke(demo_sketch, demo_model.layout)
    touched = session.update(drawn)
    assert "mouth" in touched and "left_eye" not in touched and "remainder" not in touched
    assert session.stats["encoded"]["left_eye"] == 1 and session.stats["encoded"]["mouth"] == 2
    np.testing.assert_array_equal(session.result.image, demo_model.generate(drawn, shadows=False).image)


def test_a_weight_projects_one_component_again_and_a_bank_projects_all(session, demo_model, demo_sketch):
    session.update(demo_sketch)
    w = {c: 1.0 for c in COMPONENTS}
    w["nose"] = 0.3
    assert session.update(demo_sketch, w) == set(), "no component is encoded again"
    assert session.stats["projected"]["nose"] == 2 and session.stats["projected"]["mouth"] == 1
    np.testing.assert_array_equal(session.result.image,
                                  demo_model.generate(demo_sketch, w, shadows=False).image)
    session.update_shadows()
    shadowed = dict(session.stats["shadowed"])
    session.update(demo_sketch, w, sex="female")
    assert all(session.stats["projected"][c] >= 2 for c in COMPONENTS)
    session.update_shadows()
    assert all(session.stats["shadowed"][c] == shadowed[c] + 1 for c in COMPONENTS), \
        "another bank has other neighbours: every shadow is drawn again"


def test_shadows_are_the_neighbours_of_the_result(session, demo_model, demo_sketch):
    session.update(demo_sketch)
    assert session.update_shadows() is True
    res = session.result
    assert res.shadow.shape == (demo_model.layout.size,) * 2 and res.shadow.dtype == np.uint8
    assert set(res.shadows) == set(COMPONENTS)
    assert session.update_shadows() is False, "nothing stale, nothing redrawn"
    rows = session.stats["decoded_rows"]["mouth"]
    session.update(with_mouth_stroke(demo_sketch, demo_model.layout))
    session.update_shadows()
    session.update(demo_sketch)
    session.update_shadows()
    assert session.stats["decoded_rows"]["mouth"] >= rows   # rows decoded once: back to known neighbours


def test_a_pinned_stage_holds_and_a_failed_update_commits_nothing(session, demo_model, demo_sketch, monkeypatch):
    session.update(demo_sketch)
    session.freeze("projection", "mouth")
    vector = session.result.projections["mouth"].vector.copy()
    session.update(with_mouth_stroke(demo_sketch, demo_model.layout))
    np.testing.assert_array_equal(session.result.projections["mouth"].vector, vector)
    assert session.unfreeze() == {"mouth"}
    before = session.result
    monkeypatch.setattr(demo_model, "render", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        session.update(with_mouth_stroke(demo_sketch, demo_model.layout, dy=4))
    assert session.result is before
    with pytest.raises(ConfigError, match="unknown stage"):
        session.freeze("synthesis", "mouth")


def test_weights_left_out_take_the_models_default(demo_model, demo_sketch):
    """A model's ``config.blend_weight`` fills in the weights the caller leaves out, in
    generate and in the session alike; the weights given are kept."""
    import copy
    from dataclasses import replace

    from dfd_kit.session import Session

    half = copy.copy(demo_model)
    half.config = replace(demo_model.config, blend_weight=0.5)
    res = half.generate(demo_sketch, {"mouth": 1.0}, shadows=False)
    given = {**{c: 0.5 for c in COMPONENTS}, "mouth": 1.0}
    assert res.part_weights == given
    np.testing.assert_array_equal(res.image, demo_model.generate(demo_sketch, given, shadows=False).image)
    full = demo_model.generate(demo_sketch, shadows=False)
    assert full.part_weights == {c: 1.0 for c in COMPONENTS}
    assert np.abs(res.image.astype(int) - full.image).mean() > 0.5, "the default weight moved the face"
    s = Session(half)
    s.update(demo_sketch, {"mouth": 1.0})
    np.testing.assert_array_equal(s.result.image, res.image)
