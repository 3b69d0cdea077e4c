"""Handlers of the Concepts, Feature, Lens and Evaluation tabs, called directly on the fixture catalog."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch

from ui_fixtures import KINDS, PLANTED, UiRun, run  # noqa: F401 (run is a fixture)

from ard_core.catalog import ConceptQuery, NotFound
from ard_core.sae import TopKSAE
from ard_core.store import ActivationStore
from ard_core.traces import activation_sample
from ard_core.ui import concepts, evaluation, feature, lens
from ard_core.ui.context import AppContext, UserError


@pytest.fixture(scope="module")
def ctx(run: UiRun, tmp_path_factory: pytest.TempPathFactory):
    c = AppContext.open(run.catalog, load_model=False, annotations_path=tmp_path_factory.mktemp("ann") / "a.duckdb",
                        clap="")
    yield c
    c.close()


@pytest.fixture(scope="module")
def features(run: UiRun) -> list[dict]:
    con = duckdb.connect(str(run.catalog), read_only=True)
    cur = con.execute("SELECT f.*, s.layer FROM features f JOIN saes s USING (sae_id)")
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r)) for r in cur.fetchall()]
    con.close()
    return rows


def test_the_app_opens_the_catalog_read_only(ctx: AppContext) -> None:
    assert ctx.catalog.read_only
    with pytest.raises(duckdb.Error):
        ctx.catalog.con.execute("DELETE FROM features")


def test_search_matches_names_and_descriptions(ctx: AppContext, features: list[dict]) -> None:
    page = concepts.search_features(ctx, ConceptQuery(text="beep", page_size=100))
    expected = {f"{f['sae_id']}/{f['feature']}" for f in features
                if "beep" in (f["name"] or "").lower() or "beep" in (f["description"] or "").lower()}
    assert set(page.refs) == expected and len(expected) == 2
    # every word must match (AND), case-insensitively
    both = concepts.search_features(ctx, ConceptQuery(text="HIGH tonal"))
    assert set(both.refs) == expected
    assert concepts.search_features(ctx, ConceptQuery(text="beep hum")).total == 0
    # a reference finds exactly that feature
    ref = f"{ctx.catalog.saes()[0].sae_id}/{PLANTED['noise']}"
    assert concepts.search_features(ctx, ConceptQuery(text=ref)).refs == [ref]


def test_sort_filter_and_paging_agree_with_a_full_sort(ctx: AppContext, features: list[dict]) -> None:
    q = dict(sort="monosemanticity", descending=True, layer=2, page_size=7)
    first = concepts.search_features(ctx, ConceptQuery(**q))
    refs = []
    for p in range(1, first.n_pages + 1):
        page = concepts.search_features(ctx, ConceptQuery(**q, page=p))
        assert list(page.table["layer"]) == [2] * len(page.table)
        refs += page.refs
    layer2 = [f for f in features if f["layer"] == 2]
    assert first.total == len(layer2) == len(refs) == len(set(refs))
    ms = [f["monosemanticity"] for f in layer2 if f["monosemanticity"] is not None]
    got = [float(x) for x in concepts.search_features(ctx, ConceptQuery(**{**q, "page_size": 500})).table[
        "monosemanticity"].dropna()]
    assert got == pytest.approx(sorted((round(m, 3) for m in ms), reverse=True))
    # a page past the end clamps to the last one
    assert concepts.search_features(ctx, ConceptQuery(**q, page=999)).page == first.n_pages
    named = concepts.search_features(ctx, ConceptQuery(named_only=True, min_monosemanticity=0.7))
    assert named.total == 2 * len(PLANTED)
    with pytest.raises(ValueError, match="sort"):
        ConceptQuery(sort="1; DROP TABLE features")
    # the widgets' values: 'All' is no filter; what no query can hold is the user's to fix
    assert concepts.query_from_widgets("beep", concepts.ALL, "2", 0, False, "rank", False, 25, concepts.ALL,
                                       1) == ConceptQuery(text="beep", layer=2)
    for bad in (dict(layer="two"), dict(sort="1; DROP TABLE features")):
        args = {"text": "", "sae": concepts.ALL, "layer": concepts.ALL, "min_mono": 0, "named_only": False,
                "sort": "rank", "descending": False, "page_size": 25, "steers": concepts.ALL, "page": 1, **bad}
        with pytest.raises(UserError, match="layer|sort"):
            concepts.query_from_widgets(**args)


def _planted(run: UiRun, kind: str, layer: int = 1) -> str:
    return run.ref(kind, layer)


def test_feature_view_shows_the_catalog_examples(ctx: AppContext, run: UiRun) -> None:
    ref = _planted(run, "beep")
    v = feature.feature_view(ctx, ref)
    assert v.feature.name == KINDS["beep"][1]
    sae_id, k = ref.split("/")
    con = duckdb.connect(str(run.catalog), read_only=True)
    top = con.execute("SELECT clip_id FROM feature_examples WHERE method='ard' AND sae_id=? AND feature=? AND "
                      "kind='top' ORDER BY rank", [sae_id, int(k)]).fetchall()
    con.close()
    assert [e.clip_id for e in v.top] == [c for (c,) in top]
    assert all(e.clip_id.startswith("beep") for e in v.top)  # the planted feature's best clips are beeps
    assert all(e.audio_path and Path(e.audio_path).is_file() for e in v.top + v.bottom)
    assert f"?feature={ref}" in v.header
    assert v.prev_ref == f"{sae_id}/{int(k) - 1}" and v.next_ref == f"{sae_id}/{int(k) + 1}"
    assert feature.step(ctx, ref, +1) == v.next_ref


def test_activation_over_time_is_recomputed_from_the_store(ctx: AppContext, run: UiRun) -> None:
    ref = _planted(run, "beep", layer=2)
    sae_id, k = ref.split("/")
    k = int(k)
    v = feature.feature_view(ctx, ref)
    e = v.top[0]
    # reference: the store's tokens through the SAE, dense, column k
    sae = TopKSAE.load(Path(run.root) / "run" / "saes" / sae_id)
    x = ActivationStore(Path(run.root) / "run" / "activations").clip_tokens(2, e.clip_id)
    ref_acts = sae.encode_dense(torch.from_numpy(x.astype(np.float32)))[:, k].detach().numpy()
    np.testing.assert_allclose(e.trace.acts, ref_acts, rtol=1e-5, atol=1e-6)
    # the beep is gated on and off; the feature follows the gate (planted truth)
    import soundfile as sf

    audio, sr = sf.read(e.audio_path)
    on = np.array([np.sqrt(np.mean(f ** 2)) for f in np.array_split(audio, len(e.trace.acts))])
    assert np.corrcoef(on, e.trace.acts)[0, 1] > 0.9
    # token times span the clip
    clip = ctx.catalog.clip(e.clip_id)
    assert e.trace.times[0] == 0 and e.trace.times[-1] < clip.duration_s
    # 40 ms tokens (Qwen2-Audio's 25 per second): the last one ends within a token of the clip's end
    assert e.trace.times[1] - e.trace.times[0] == pytest.approx(0.04)
    assert clip.duration_s - 0.04 < e.trace.times[-1] + 0.04 <= clip.duration_s + 1e-9


def test_activation_histogram_counts_the_sampled_tokens(ctx: AppContext, run: UiRun) -> None:
    ref = _planted(run, "noise")
    sae_id, k = ref.split("/")
    sae_row = ctx.catalog.sae(sae_id)
    clips, n_tokens, acts, idx = activation_sample(ctx.sae(sae_id), ctx.store, sae_row.layer, ctx.hist_token_budget)
    store = ActivationStore(Path(run.root) / "run" / "activations")
    assert n_tokens == sum(store.clip_tokens(1, c).shape[0] for c in clips) == acts.shape[0]
    x = np.concatenate([store.clip_tokens(1, c) for c in clips]).astype(np.float32)
    dense = TopKSAE.load(Path(run.root) / "run" / "saes" / sae_id).encode_dense(torch.from_numpy(x))[:, int(k)].detach()
    fig = feature.feature_histogram(ctx, sae_row, int(k))
    hist_values = np.asarray(fig.data[0].x)
    np.testing.assert_allclose(np.sort(hist_values), np.sort(dense[dense > 0].numpy()), rtol=1e-5)


def test_feature_page_updates_and_bad_references(ctx: AppContext, run: UiRun) -> None:
    ups = feature.show(ctx, _planted(run, "clicks"))
    assert len(ups) == 12 + 2 * ctx.max_examples * 4  # 11 page widgets, 4 per example card, the similar section
    with pytest.raises(UserError, match="SAE_ID/K"):
        feature.feature_view(ctx, "not a ref")
    with pytest.raises(NotFound, match="no SAE"):
        feature.feature_view(ctx, "nope-l1-e4/3")
    with pytest.raises(NotFound, match="not in the catalog"):
        feature.feature_view(ctx, f"{run.sae_ids[0]}/100000")
    data = feature.feature_json(ctx, _planted(run, "clicks"))
    assert data["name"] == KINDS["clicks"][1] and len(data["top"]) == 3
    assert all(len(t["activation"]) > 0 for t in data["top"])


def test_lens_curves_and_tables_come_from_the_catalog(ctx: AppContext, run: UiRun) -> None:
    opts = lens.lens_options(ctx)
    assert opts.models == ["tiny-random"] and opts.tracks == ["gender", "sound_event"]
    fig = lens.info_curves(ctx, "tiny-random", "gender", ["P1", "P3"], ["last", "last_masked"], ["all", "incorrect"])
    assert len(fig.data) == 2 * 2 * 2
    con = duckdb.connect(str(run.catalog), read_only=True)
    want = [s for (s,) in con.execute("SELECT score FROM lens_scores WHERE track='gender' AND prompt_format='P3' AND "
                                      "position='last_masked' AND subset='incorrect' ORDER BY layer").fetchall()]
    con.close()
    trace = next(t for t in fig.data if t.name.startswith("P3 · last token, audio masked · incorrect"))
    assert list(trace.y) == pytest.approx(want)
    table = lens.summary_table(ctx, "tiny-random")
    assert list(table["format"]) == ["P1", "P2", "P3"] * 2
    assert table["accuracy %"].iloc[0] == pytest.approx(90.0)
    assert "0.420" in lens.correlation_text(ctx, "tiny-random")
    enrich = lens.enrichment(ctx, "tiny-random")
    rand = next(t for t in enrich.data if t.name and t.name.startswith("random"))
    # the fixture's random-layer runs at lambda = 1: 0.55, 0.53, 0.51
    assert rand.y[-1] == pytest.approx(np.mean([0.55, 0.53, 0.51]))
    with pytest.raises(UserError, match="position"):
        lens.info_curves(ctx, "tiny-random", "gender", ["P1"], ["middle"], ["all"])


def test_evaluation_tab_shows_the_papers_tables_with_their_spread(ctx: AppContext) -> None:
    got = {t.key: t for t in evaluation.tables(ctx)}
    assert list(got) == ["table1", "table1_gap", "table4", "steering", "lens_table2", "lens_table3", "coverage"]
    t1 = evaluation.table_frame(got["table1"])
    assert list(t1.columns) == ["Method", "MS", "Precision", "Recall", "F1", "mAP"]
    # methods in the paper's order (Poly. first, AR&D last), each figure with its bootstrap std
    assert list(t1["Method"]) == ["Poly. Feats.", "Rand. Rep.", "Mean Act.", "Coverage", "AR&D"]
    ard = t1.set_index("Method").loc["AR&D"]
    assert ard["F1"] == "0.55 ± 0.02" and ard["MS"] == "8.00" and ard["mAP"] == "0.40 ± 0.02"
    assert t1.set_index("Method").loc["Rand. Rep.", "MS"] == "6.50 ± 0.10"
    gap = evaluation.table_frame(got["table1_gap"]).iloc[0]
    assert gap.iloc[0] == "AR&D - Rand. Rep." and gap["F1"] == "0.24 ± 0.03 [0.18, 0.30]"
    t4 = evaluation.table_frame(got["table4"])  # method / expansion x layer
    assert list(t4.columns) == ["Method", "e", "layer 1", "layer 2"]
    assert t4.values.tolist() == [["Poly. Feats.", "-", "6.00", "6.00"], ["AR&D", "4", "8.00", "9.00"]]
    t3 = evaluation.table_frame(got["steering"])  # method x mapping
    assert t3.values.tolist() == [["Poly. Feats.", "0.00 ± 0.00 (n=4)"], ["AR&D", "0.75 ± 0.20 (n=4)"]]
    lens2 = evaluation.table_frame(got["lens_table2"])
    assert list(lens2.columns)[:5] == ["track", "|Y|", "n", "P1 acc", "P1 crit. layer"]
    assert lens2.iloc[0]["P1 acc"] == "90.0"
    assert evaluation.table_frame(got["lens_table3"]).iloc[0].tolist() == ["tiny-random", "6", "0.42", "0.030"]
    cov = evaluation.table_frame(got["coverage"])  # SAE x method
    assert cov.values.tolist() == [["tiny-random-l2-e4", "0.12", "0.25"]] and list(cov.columns)[1:] == ["Mean Act.", "AR&D"]
    steer = evaluation.steering_table(ctx)
    assert list(steer["method"]) == ["ard", "ard", "poly", "poly"] and list(steer["layer"]) == [1, 2, 1, 2]
    assert list(steer["best"]) == ["yes", "", "yes", ""]
    assert list(steer["sensitivity"])[:2] == [0.75, 0.25] and list(steer["sensitivity (all)"])[0] == 0.5


def test_every_evaluation_table_downloads_as_numeric_csv(ctx: AppContext, tmp_path: Path) -> None:
    for t in evaluation.tables(ctx):
        path = evaluation.table_csv(t, tmp_path)
        frame = pd.read_csv(path, keep_default_na=False)
        assert list(frame.columns)[: len(t.header())][: len(t.index)] == t.index
        assert len(frame) == len(t)
    t1 = pd.read_csv(tmp_path / "table1.csv").set_index("Method")
    assert {"F1", "F1 std", "F1 ci_low", "F1 ci_high", "F1 n", "MS", "MS std"} <= set(t1.columns)
    assert t1.loc["AR&D", "F1"] == pytest.approx(0.55) and t1.loc["AR&D", "F1 ci_high"] == pytest.approx(0.59)
    assert t1.loc["AR&D", "F1 n"] == 12 and np.isnan(t1.loc["AR&D", "MS std"])
    t4 = pd.read_csv(tmp_path / "table4.csv")
    assert t4["layer 2"].tolist() == [6.0, 9.0]


def test_per_clip_view_shows_labels_predictions_and_matches(ctx: AppContext) -> None:
    clips = ctx.catalog.evaluated_clips()
    assert len(clips) == 1
    v = evaluation.clip_view(ctx, clips[0])
    kind = clips[0].rsplit("_", 1)[0]
    assert f"sound_event: **{kind}**" in v.header and v.audio is not None and v.audio.endswith(".wav")
    assert list(v.scores["method"]) == ["ard", "poly"] and list(v.scores["AP"]) == [1.0, 0.0]
    assert list(v.predictions["rank"]) == [1, 2]
    first = v.predictions.iloc[0]
    assert first["name"] == KINDS[kind][1] and first["matched"] == "✓" and first["reference"] == KINDS[kind][0]
    assert first["feature"].endswith(f"/{PLANTED[kind]}") and v.predictions.iloc[1]["matched"] == ""
    with pytest.raises(UserError, match="no clip"):
        evaluation.clip_view(ctx, "no-such-clip")


def test_detection_scores_on_the_feature_page_and_sortable_in_concepts(ctx: AppContext, run: UiRun) -> None:
    sid = run.sae_ids[0]
    v = feature.feature_view(ctx, f"{sid}/{PLANTED['beep']}")
    assert v.detection["clap"].score == pytest.approx(0.7) and "detection (clap)" in v.scores
    assert feature.feature_view(ctx, f"{sid}/3").detection == {}
    page = concepts.search_features(ctx, ConceptQuery(sae_id=sid, sort="detection", descending=True, page_size=5))
    assert list(page.table["detection"])[:4] == [0.9, 0.8, 0.7, 0.6]
    assert page.refs[0] == f"{sid}/{PLANTED['clicks']}"


# -- steerability on the feature page and in the Concepts table --------------------------------------
def test_the_feature_page_says_what_it_steers_and_links_to_the_steer_tab(ctx: AppContext, run: UiRun) -> None:
    hum = feature.feature_view(ctx, run.ref("hum"))
    assert "Steers gender -> male** on 3 of 4 probe clips at value 30" in hum.steers
    assert "gender -> female** on 1 of 4" in hum.steers  # the next best, below it
    assert hum.steer_link == f"?tab=steer&feature={run.ref('hum')}&value=30"
    clicks = feature.feature_view(ctx, run.ref("clicks"))
    assert clicks.steer_link is None and "flipped 0 of 4" in clicks.steers
    beep = feature.feature_view(ctx, run.ref("beep"))
    assert beep.steer_link is None and "not measured" in beep.steers
    ups = feature.show(ctx, run.ref("hum"))
    widgets_order = ["ref", "prev", "next", "header", "scores", "steers", "steer_btn"]
    button = ups[widgets_order.index("steer_btn")]
    assert button.link == hum.steer_link and button.visible
    assert feature.feature_json(ctx, run.ref("hum"))["steerability"][0] == {
        "track": "gender", "target": "male", "value": 30.0, "flipped": 3, "n": 4}


def test_concepts_show_sort_and_filter_by_steerability(ctx: AppContext, run: UiRun) -> None:
    page = concepts.search_features(ctx, ConceptQuery(sort="steerability", descending=True))
    assert page.refs[:3] == [run.ref("hum"), run.ref("noise", 2), run.ref("clicks")]
    assert list(page.table["steers"])[:3] == ["gender -> male 3/4", "sound_event -> noise 2/3", "gender -> male 0/4"]
    gender = concepts.search_features(ctx, ConceptQuery(steer_track="gender", page_size=100))
    assert gender.refs == [run.ref("hum")]  # clicks was tried on gender but flipped nothing
    assert concepts.filter_options(ctx)[2] == [concepts.ALL, "gender", "sound_event"]
    q = concepts.query_from_widgets("", concepts.ALL, concepts.ALL, 0, False, "steerability", True, 25, "gender", 1)
    assert q == ConceptQuery(sort="steerability", descending=True, steer_track="gender")


def test_monosemanticity_slider_spans_the_catalogs_scores(ctx: AppContext, features: list[dict]) -> None:
    scores = [f["monosemanticity"] for f in features if f["monosemanticity"] is not None]
    s = concepts.mono_slider(ctx)
    assert s.minimum <= min(scores) < min(scores) + 0.1 and max(scores) <= s.maximum < max(scores) + 0.1
    args = ("", concepts.ALL, concepts.ALL, s.minimum, False, "rank", False, 25, concepts.ALL, 1)
    # the leftmost value is no filter: unscored (dead) features would be listed too
    everything = concepts.query_from_widgets(*args, mono_floor=s.minimum)
    assert everything.min_monosemanticity is None
    assert concepts.search_features(ctx, everything).total == len(features)
    # a value inside the range filters
    cut = 0.5
    q = concepts.query_from_widgets(*args[:3], cut, *args[4:], mono_floor=s.minimum)
    assert concepts.search_features(ctx, q).total == sum(m >= cut for m in scores)


def test_bottom_clips_say_what_they_are(ctx: AppContext, run: UiRun) -> None:
    v = feature.feature_view(ctx, run.ref("beep"))
    silent = [e._replace(mean_act=0.0, coverage=0.0, score=0.0) for e in v.bottom]
    assert "it does not fire at all on any of them (μ = 0)" in feature.bottom_title(silent, len(silent), 6)
    mixed = silent[:1] + v.bottom[1:]
    assert all(e.mean_act > 0 for e in v.bottom)  # the fixture's bottom clips are among clips where it fires
    assert "on 1 of them" in feature.bottom_title(mixed, len(mixed), 6)
    assert "fires weakly on each" in feature.bottom_title(v.bottom, len(v.bottom), 6)
    assert "contrast set" in feature.show(ctx, run.ref("beep"))[10]
