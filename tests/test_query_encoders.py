"""Query encoders (dfd_kit.training.query): projection searches from where they put a drawing,
blends from the drawing's own latent; a model saves and loads them, its config says so, and
a folder that lacks them, or says so wrongly, is reported."""
from __future__ import annotations

import json

import numpy as np
import pytest

import dfd_kit
from dfd_kit import ParamsError
from dfd_kit.config import COMPONENTS, DEMO, replace
from dfd_kit.loading import checkpoint_file, params_sha256
from dfd_kit.manifold import blend, locally_linear_weights, nearest_neighbours, project_to_manifold
from dfd_kit.pipeline import load_model, save_model
from dfd_kit.session import Session

from conftest import make_demo_model


@pytest.fixture(scope="module")
def query_model():
    """The random demo model with query encoders of their own (other random weights)."""
    import jittor as jt

    from dfd_kit.pipeline import build_network

    model = make_demo_model()
    jt.set_global_seed(7)
    model.query_encoders = {c: build_network("query_encoder", DEMO, c) for c in COMPONENTS}
    model.config = replace(model.config, query_encoders=True)
    return model


@pytest.fixture(scope="module")
def query_params(query_model, tmp_path_factory):
    return save_model(query_model, tmp_path_factory.mktemp("query_params"), dtype=np.float32)


def test_projection_searches_from_the_query_and_blends_from_the_latent():
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((40, 8)).astype(np.float32)
    latent, query = rng.standard_normal(8).astype(np.float32), bank[5] + 0.01
    p = project_to_manifold(latent, bank, 4, 0.3, query=query)
    idx, _ = nearest_neighbours(query, bank, 4)
    np.testing.assert_array_equal(p.neighbours, idx)
    assert p.neighbours[0] == 5
    w = locally_linear_weights(query, bank[idx])
    np.testing.assert_allclose(p.weights, w, rtol=0, atol=1e-12)
    np.testing.assert_allclose(p.projected, w @ bank[idx].astype(np.float64), atol=1e-6)
    np.testing.assert_array_equal(p.vector, blend(latent, w @ bank[idx].astype(np.float64), 0.3))
    # w = 0 keeps the drawing's latent whatever the query; no query is the paper's search
    np.testing.assert_array_equal(project_to_manifold(latent, bank, 4, 0.0, query=query).vector, latent)
    plain = project_to_manifold(latent, bank, 4, 0.3)
    same = project_to_manifold(latent, bank, 4, 0.3, query=latent)
    np.testing.assert_array_equal(plain.vector, same.vector)
    assert set(plain.neighbours) != set(p.neighbours)


def test_a_saved_model_with_query_encoders_loads_them_and_generates_the_same(query_model, query_params,
                                                                                demo_sketch):
    assert json.loads((query_params / "config.json").read_text())["query_encoders"] is True
    loaded = load_model(query_params, shadows=False)
    assert loaded.config.query_encoders and set(loaded.query_encoders) == set(COMPONENTS)
    a = query_model.generate(demo_sketch, sex="female", shadows=False)
    b = loaded.generate(demo_sketch, sex="female", shadows=False)
    for c in COMPONENTS:
        np.testing.assert_array_equal(a.queries[c], b.queries[c])
        np.testing.assert_array_equal(a.projections[c].neighbours, b.projections[c].neighbours)
    np.testing.assert_array_equal(a.image, b.image)


def test_generate_searches_from_each_crops_query(query_params, demo_sketch):
    model = load_model(query_params, shadows=False)
    res = model.generate(demo_sketch, {"nose": 0.5}, sex="male", shadows=False)
    crops = model.crop(model.normalise(demo_sketch))
    queries = model.encode_queries(crops)
    latents = model.encode(crops)
    bank = model.banks["male"]
    for c in COMPONENTS:
        np.testing.assert_array_equal(res.queries[c], queries[c])
        assert not np.allclose(queries[c], latents[c])   # other weights: another place to search
        own = project_to_manifold(latents[c], bank[c], model.config.k, res.part_weights[c], query=queries[c])
        np.testing.assert_array_equal(res.projections[c].neighbours, own.neighbours)
        np.testing.assert_array_equal(res.projections[c].vector, own.vector)
    # the drawing pad's session does the same work piecewise and gets the same face
    session = Session(model)
    session.update(model.normalise(demo_sketch), {"nose": 0.5}, "male")
    for c in COMPONENTS:
        np.testing.assert_array_equal(session.result.projections[c].vector, res.projections[c].vector)
    np.testing.assert_array_equal(session.result.image, res.image)


def test_a_frozen_embedding_keeps_its_query(query_params, demo_sketch):
    model = load_model(query_params, shadows=False)
    session = Session(model)
    sketch = model.normalise(demo_sketch)
    session.update(sketch)
    before, latent = session.result.projections["nose"], session.result.latents["nose"].copy()
    session.freeze("embedding", "nose")
    encoded = session.stats["encoded"]["nose"]
    moved = sketch.copy()
    b = model.layout.box("nose")
    moved[b.y + 4:b.y + 12, b.x + 4:b.x + 40] = 0   # a stroke across the nose
    session.update(moved)
    assert session.stats["encoded"]["nose"] == encoded + 1   # the new crop was encoded, its query too
    np.testing.assert_array_equal(session.result.latents["nose"], latent)
    np.testing.assert_array_equal(session.result.projections["nose"].neighbours, before.neighbours)
    np.testing.assert_array_equal(session.result.projections["nose"].vector, before.vector)
    session.unfreeze("embedding", "nose")
    session.update(moved)
    assert not np.array_equal(session.result.queries["nose"], model.encode_queries(model.crop(sketch))["nose"])


def test_missing_query_encoders_are_named(query_params, tmp_path):
    import shutil

    dst = tmp_path / "Params"
    shutil.copytree(query_params, dst)
    (dst / checkpoint_file("query_encoder", "mouth")).unlink()
    with pytest.raises(ParamsError) as e:
        dfd_kit.load(dst)
    assert "query encoders" in str(e.value) and checkpoint_file("query_encoder", "mouth") in str(e.value)
    assert "1 of 5" in str(e.value)


def test_query_encoders_decide_the_params_hash(query_params, tmp_path):
    import shutil

    dst = tmp_path / "Params"
    shutil.copytree(query_params, dst)
    before = params_sha256(dst)
    f = dst / checkpoint_file("query_encoder", "nose")
    f.write_bytes(f.read_bytes() + b"\0")
    assert params_sha256(dst) != before


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_a_query_encoders_value_that_is_not_true_or_false_is_refused(params_copy, value):
    doc = json.loads((params_copy / "config.json").read_text())
    doc["query_encoders"] = value
    (params_copy / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ParamsError, match="query_encoders must be true or false"):
        dfd_kit.load(params_copy)


def test_a_model_without_query_encoders_searches_from_the_latent(demo_params, demo_sketch):
    model = load_model(demo_params, shadows=False)
    assert not model.config.query_encoders and model.query_encoders == {}
    res = model.generate(demo_sketch, shadows=False)
    assert res.queries == {}
    for c in COMPONENTS:
        own = project_to_manifold(res.latents[c], model.banks["male"][c], model.config.k, 1.0)
        np.testing.assert_array_equal(res.projections[c].neighbours, own.neighbours)
    assert not any("query" in p.name for p in demo_params.glob("*/*"))


def test_the_manifold_maps_mark_where_the_search_started(query_model, demo_model, demo_sketch):
    """The pad's map and its paper copy add a marker at the query, and only for a model that
    has query encoders (else the star is where the search starts)."""
    from dfd_kit.inspector import bank_pca
    from dfd_kit.plotting import plot_manifold_map
    from dfd_kit.widgets import DrawingPad

    for model in (query_model, demo_model):
        pad = DrawingPad(model, display_size=512)
        pad.load_sketch(demo_sketch)
        pad.map_toggle.value = True
        mm = pad.manifold_map
        c = mm.component
        bm = bank_pca(model, pad.sex, c)
        labels = [t.get_text() for t in mm.ax.get_legend().get_texts()]
        res = pad.result
        fig = plot_manifold_map(bm, res.latents[c], res.projections[c], c, query=res.queries.get(c))
        paper = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        if model is query_model:
            np.testing.assert_allclose(mm.query_point.get_offsets()[0], bm.place(res.queries[c]))
            assert "search starts" in labels and "search starts" in paper
        else:
            assert len(mm.query_point.get_offsets()) == 0
            assert "search starts" not in labels and "search starts" not in paper



def test_query_encoders_for_some_components_only_are_refused(query_model):
    from dfd_kit.errors import ConfigError
    from dfd_kit.pipeline import DeepFaceDrawing

    m = query_model
    with pytest.raises(ConfigError, match="all five components' or none"):
        DeepFaceDrawing(m.config, m.encoders, m.sketch_decoders, m.feature_decoders, m.generator, m.banks,
                        query_encoders={"nose": m.query_encoders["nose"]})
    assert "searched from query encoders" in repr(m)


def test_without_query_encoders_the_same_model_searches_from_the_latent(query_params, demo_sketch):
    model = load_model(query_params, shadows=False)
    paper = model.without_query_encoders()
    assert paper.encoders is model.encoders and paper.generator is model.generator and paper.banks is model.banks
    assert not paper.query_encoders and not paper.config.query_encoders and "searched from query" not in repr(paper)
    assert model.query_encoders and model.config.query_encoders          # the original is untouched
    assert paper.params_hash != model.params_hash
    res = paper.generate(demo_sketch, sex="male", shadows=False)
    assert res.queries == {}
    for c in COMPONENTS:
        own = project_to_manifold(res.latents[c], model.banks["male"][c], model.config.k, res.part_weights[c])
        np.testing.assert_array_equal(res.projections[c].neighbours, own.neighbours)
    assert any(set(res.projections[c].neighbours) != set(model.generate(demo_sketch, sex="male", shadows=False)
                                                          .projections[c].neighbours) for c in COMPONENTS)
    plain = dfd_kit.load("cartoon", shadows=False)
    assert plain.without_query_encoders() is plain


def test_the_search_start_figure_counts_the_clean_drawings_neighbours_each_search_found(query_model, demo_sketch):
    from dfd_kit.data.sketch import roughen_sketch
    from dfd_kit.plotting import plot_search_start

    sketch = query_model.normalise(demo_sketch)
    rough = roughen_sketch(sketch, np.random.default_rng(0), query_model.layout, 1.0)
    clean = query_model.generate(sketch, sex="female", shadows=False, keep_features=False)
    paper = query_model.without_query_encoders().generate(rough, sex="female", shadows=False, keep_features=False)
    searched = query_model.generate(rough, sex="female", shadows=False, keep_features=False)
    c = "nose"
    fig = plot_search_start(query_model, c, clean, paper, searched)
    right = set(clean.projections[c].neighbours.tolist())
    for ax, res in zip(fig.axes, (paper, searched)):
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        hits = len(right & set(res.projections[c].neighbours.tolist()))
        assert f"K = {query_model.config.k} found ({hits} of them right)" in labels
        assert ("search starts" in labels) == (res is searched)
