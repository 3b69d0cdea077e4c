"""The catalog's named reads (what the app's pages ask), each against a small hand-written catalog."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from ard_core.catalog import (
    Catalog,
    ClipPredictionRow,
    ClipRow,
    ClipScoreRow,
    DetectionRow,
    ConceptQuery,
    EvaluationRow,
    FeatureExampleRow,
    FeatureRow,
    LensEnrichmentRow,
    LensScoreRow,
    LensSummaryRow,
    ModelRow,
    NotFound,
    SaeRow,
    SteerabilityRow,
    SteeringResultRow,
)

from ard_core.steerability import wilson_lower

A, B, C = "m-l1-e4", "m-l3-e2", "m-l3-e4"


@pytest.fixture(scope="module")
def cat(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("reads")
    (root / "clips" / "sub").mkdir(parents=True)
    for name in ("clips/c1.wav", "clips/sub/c2.wav"):
        (root / name).write_bytes(b"RIFF")
    clips = [ClipRow("c1", "mini", "train", "clips/c1.wav", 1.0, {"gender": "female", "sound": "dog"}, "a dog"),
             ClipRow("c2", "mini", "test", str(root / "clips/sub/c2.wav"), 2.0, {"gender": "male"}, ""),
             ClipRow("c3", "mini", "probe", "gone/c3.wav", 1.5, {}, "a cat")]
    saes = [SaeRow(s, "m", layer, e, 4, 16, 16 * e, f"saes/{s}", 0.1, 0.0, 4.0)
            for s, layer, e in ((C, 3, 4), (A, 1, 4), (B, 3, 2))]
    features = [FeatureRow(A, 0, "dog bark", "dogs barking", 0.8, 2, 0.1, 3.0),
                FeatureRow(A, 2, None, None, 0.9, 1, 0.2, 1.0),
                FeatureRow(A, 5, "", None, None, 3, None, None),
                FeatureRow(B, 1, "cat", "a cat meowing #2", 0.5, 1, 0.3, 2.0)]
    examples = [FeatureExampleRow("ard", A, 0, kind, rank, clip, 1.0 / (rank + 1), 0.5, 0.5)
                for kind, rank, clip in (("top", 2, "c3"), ("top", 0, "c2"), ("bottom", 0, "c3"), ("top", 1, "c1"))]
    examples.append(FeatureExampleRow("mean_act", A, 0, "top", 0, "c1", 9.0, 9.0, 1.0))
    lens = [LensScoreRow("m", track, fmt, "last", "all", layer, 0.1 * layer + (track == "sound"), 20)
            for track in ("gender", "sound") for fmt in ("P1", "P2") for layer in (3, 1, 2)]
    lens.append(LensScoreRow("lens-only", "gender", "P1", "last", "all", 7, 0.5, 4))
    summary = [LensSummaryRow("m", "gender", "P2", 0.7, None, 20, 2), LensSummaryRow("m", "gender", "P1", 0.9, 1.5, 20, 2),
               LensSummaryRow("m", "sound", "P1", 0.6, 2.0, 20, 4)]
    enrich = [LensEnrichmentRow("m", "sound", "info_score", lam, 0, 2, 0.5 + lam, 8) for lam in (0.5, 0.0)]
    enrich += [LensEnrichmentRow("m", "sound", "random_layer", 0.0, s, None, acc, 8) for s, acc in enumerate((0.2, 0.4, 0.6))]
    enrich += [LensEnrichmentRow("m", "sound", "random_layer", 0.5, 0, None, 0.3, 8)]
    evals = [EvaluationRow("table4", "ard", A, "monosemanticity", 0.8, 0.1), EvaluationRow("table1", "ard", A, "f1", 0.5, None),
             EvaluationRow("table3", "pearson", "m", "r", 0.4, None), EvaluationRow("table3", "pearson", "x", "r", 0.9, None)]
    steering = [SteeringResultRow("f->m", "ard", A, 0, v, "label_prob", 0.1 * v, 4) for v in (8.0, 2.0)]
    evals.append(EvaluationRow("table1", "ard", A, "f1", 0.3, 0.02, "per_clip", 0.26, 0.34, 1))
    per_clip = [ClipScoreRow(A, m, s, "c2", 1, 1, 1.0, 1.0, 1.0, 1.0) for m, s in (("ard", 0), ("random", 0), ("random", 1))]
    preds = [ClipPredictionRow(A, m, s, "c2", 1, 0, "man", 0.5, "a man speaking", 0.9, True) for m, s in
             (("random", 1), ("ard", 0), ("random", 0))]
    detection = [DetectionRow(A, 0, "llm", 0.75, 3, 3), DetectionRow(A, 0, "clap", 0.9, 5, 5),
                 DetectionRow(B, 1, "clap", None, 0, 0)]
    # feature A/0 steers gender->male best: 9 of 12 beats 2 of 2 (a flip rate's lower bound ranks, not the rate)
    # and beats the same flips at a larger multiple; B/1 steers sound->cat on 1 of 2 and nothing on gender;
    # A/2 was tried and flipped nothing
    def st(sae, k, track, target, value, flipped, n, mult, clip, how):
        return SteerabilityRow(sae, k, track, target, value, flipped / n, n, flipped, mult, clip, "P3", how,
                               wilson_lower(flipped, n))

    steer = [st(A, 0, "gender", "male", 9.0, 9, 12, 2.0, "c1", "name"),
             st(A, 0, "gender", "female", 18.0, 9, 12, 4.0, "c2", "contrast"),
             st(A, 0, "sound", "dog", 4.0, 2, 2, 1.0, "c3", "name"),
             st(B, 1, "sound", "cat", 3.0, 1, 2, 1.0, "c1", "name+contrast"),
             st(B, 1, "gender", "male", 3.0, 0, 4, 1.0, None, "contrast"),
             st(A, 2, "gender", "male", 5.0, 0, 4, 1.0, None, "contrast")]
    path = root / "run" / "catalog.duckdb"
    with Catalog.open(path) as w:
        for rows in (clips, saes, features, examples, lens, summary, enrich, evals, steering, per_clip, preds, detection,
                     steer,
                     [ModelRow("m", "models/m", "X", 6, 16), ModelRow("a-model", "models/a", "X", 2, 8)]):
            w.upsert(rows)
    with Catalog.open(path, read_only=True) as c:
        yield c


def test_counts_saes_and_models(cat: Catalog) -> None:
    assert cat.counts() == (3, 4, 2, 3)  # the empty name is not a name
    assert [s.sae_id for s in cat.saes()] == [A, B, C]  # by layer, then expansion
    assert cat.sae(B).expansion == 2
    with pytest.raises(NotFound, match=f"no SAE 'x-l1-e2' in this catalog \\(SAEs: {A}, {B}, {C}\\)"):
        cat.sae("x-l1-e2")
    assert cat.primary_model().model == "m"  # the model with the most SAEs


def test_feature_page(cat: Catalog) -> None:
    page = cat.feature_page(f"{A}/0")
    assert page.feature == FeatureRow(A, 0, "dog bark", "dogs barking", 0.8, 2, 0.1, 3.0)
    assert (page.ref, page.prev_ref, page.next_ref) == (f"{A}/0", None, f"{A}/2")
    # only the 'ard' examples, top then bottom, each by rank
    assert [(e.method, e.kind, e.rank, e.clip_id) for e in page.examples] == [
        ("ard", "top", 0, "c2"), ("ard", "top", 1, "c1"), ("ard", "top", 2, "c3"), ("ard", "bottom", 0, "c3")]
    assert cat.feature_page(f"{A}/2").examples == [] and cat.feature_page(f"{A}/2").prev_feature == 0
    assert cat.feature_page(f"{A}/5").next_ref is None
    with pytest.raises(NotFound, match="features 0..63"):
        cat.feature_page(f"{A}/7")
    with pytest.raises(NotFound, match="no SAE"):
        cat.feature_page("x-l1-e2/0")
    with pytest.raises(ValueError, match="SAE_ID/K"):
        cat.feature_page("nonsense")


def test_feature_lists(cat: Catalog) -> None:
    np.testing.assert_array_equal(cat.feature_densities(A), [0.1, 0.2, np.nan])
    assert cat.feature_names([f"{A}/0", f"{A}/2", "m-l9-e1/1"]) == {f"{A}/0": "dog bark", f"{A}/2": ""}
    assert cat.feature_names([]) == {}
    assert cat.named_features() == [f"{A}/0", f"{B}/1"]
    # named first, each group by rank
    assert [(f.ref, f.name) for f in cat.ranked_features(3)] == [(f"{B}/1", "cat"), (f"{A}/0", "dog bark"),
                                                                  (f"{A}/2", None)]


def _refs(cat: Catalog, **q) -> list[str]:
    return [r.ref for r in cat.concepts_page(ConceptQuery(**q)).rows]


def test_concepts_page_filters_sorts_and_pages(cat: Catalog) -> None:
    assert _refs(cat) == [f"{A}/2", f"{B}/1", f"{A}/0", f"{A}/5"]  # by rank, ties by layer
    assert _refs(cat, sort="monosemanticity", descending=True) == [f"{A}/2", f"{A}/0", f"{B}/1", f"{A}/5"]
    assert _refs(cat, text="DOG barking") == [f"{A}/0"]  # every word, case-insensitively
    assert _refs(cat, text="#2") == [f"{A}/2", f"{B}/1"]  # feature index 2, or '2' in the text
    assert _refs(cat, text=f"{B}/1") == [f"{B}/1"]
    assert _refs(cat, layer=3) == [f"{B}/1"] and _refs(cat, sae_id=A, named_only=True) == [f"{A}/0"]
    assert _refs(cat, min_monosemanticity=0.85) == [f"{A}/2"]
    page = cat.concepts_page(ConceptQuery(page_size=3, page=9))  # past the end: the last page
    assert (page.total, page.page, page.n_pages, [r.ref for r in page.rows]) == (4, 2, 2, [f"{A}/5"])
    row = cat.concepts_page(ConceptQuery(text="cat")).rows[0]
    assert row[:9] == (B, 1, "cat", "a cat meowing #2", 3, 0.5, 1, 0.3, None)
    # by detection score (the 'clap' judge), features without one last
    assert _refs(cat, sort="detection", descending=True) == [f"{A}/0", f"{A}/2", f"{A}/5", f"{B}/1"]  # ties: layer
    assert cat.concepts_page(ConceptQuery(text="dog")).rows[0].detection == 0.9
    assert cat.concepts_page(ConceptQuery(text="zebra")) == ([], 0, 1, 1)
    with pytest.raises(ValueError, match="cannot sort by 'f.rank; DROP'"):
        ConceptQuery(sort="f.rank; DROP")


def test_clips(cat: Catalog, tmp_path: Path) -> None:
    assert cat.clip("c1").labels == {"gender": "female", "sound": "dog"}
    with pytest.raises(NotFound, match="no clip 'c9'"):
        cat.clip("c9")
    assert sorted(cat.clips(["c1", "c9", "c3"])) == ["c1", "c3"] and cat.clips([]) == {}
    assert [c.clip_id for c in cat.clip_choices(2)] == ["c2", "c1"]  # the test split first
    assert cat.label_values() == {"gender": ["female", "male"], "sound": ["dog"]}
    root = cat.path.parent.parent
    # c3's file is not on this machine; c1's relative path resolves against the run's parent folders
    assert cat.top_clip_files(f"{A}/0", 5) == [("c2", root / "clips/sub/c2.wav"), ("c1", root / "clips/c1.wav")]
    assert [c.clip_id for c in cat.top_clip_files(f"{A}/0", 1)] == ["c2"]
    assert cat.clip_folders() == [str((root / "clips").resolve())]  # clips/sub collapsed into clips
    assert cat.resolve("gone/c3.wav") is None and cat.resolve(None) is None
    ann = tmp_path / "a.duckdb"
    assert cat.private_paths(ann) == [str(cat.path.resolve()), str(ann.resolve()),
                                      str(cat.path.resolve().parent / "activations"),
                                      str(cat.path.resolve()) + ".wal", str(ann.resolve()) + ".wal"]


def test_lens_reads(cat: Catalog) -> None:
    assert cat.lens_models() == ["lens-only", "m"]
    assert cat.lens_tracks("m") == ["gender", "sound"] and cat.lens_formats("m") == ["P1", "P2"]
    assert cat.lens_tracks(None) == [] == cat.lens_formats(None)
    assert cat.model_layers("m") == 6 and cat.model_layers("lens-only") == 7 and cat.model_layers("none") is None
    curve = cat.lens_curve("m", "sound", "P2", "last", "all")
    assert [r.layer for r in curve] == [1, 2, 3] and curve[0].score == pytest.approx(1.1)
    assert cat.lens_curve("m", "sound", "P2", "last", "correct") == []
    grid = cat.lens_grid("m", "P1", "last", "all")
    assert [(r.track, r.layer) for r in grid] == [(t, l) for t in ("gender", "sound") for l in (1, 2, 3)]
    assert [(r.track, r.prompt_format) for r in cat.lens_summary("m")] == [("gender", "P1"), ("gender", "P2"),
                                                                          ("sound", "P1")]
    assert [r.critical_layer for r in cat.lens_summary("m", "gender")] == [1.5, None]
    assert cat.enrichment_tracks("m") == ["sound"] and cat.enrichment_tracks("lens-only") == []
    assert [r.lam for r in cat.enrichment_runs("m", "sound", "info_score")] == [0.0, 0.5]
    stats = cat.enrichment_stats("m", "sound", "random_layer")
    assert [s.lam for s in stats] == [0.0, 0.5]
    assert stats[0].mean == pytest.approx(0.4) and stats[0].std == pytest.approx(0.2)  # sample std of .2 .4 .6
    assert stats[1] == (0.5, pytest.approx(0.3), 0.0)  # one seed: std 0


def test_evaluation_and_steering_reads(cat: Catalog) -> None:
    assert cat.evaluation_tables() == ["table1", "table3", "table4"]
    assert [(r.sae_id, r.value) for r in cat.evaluation_rows("table3")] == [("m", 0.4), ("x", 0.9)]
    assert [r.value for r in cat.evaluation_rows("table3", sae_id="m")] == [0.4]
    assert cat.evaluation_rows("table9") == []
    assert [(r.protocol, r.value) for r in cat.evaluation_rows("table1")] == [("per_clip", 0.3), ("run", 0.5)]
    per_clip = cat.evaluation_rows("table1", protocol="per_clip")[0]
    assert (per_clip.std, per_clip.ci_low, per_clip.ci_high, per_clip.n) == (0.02, 0.26, 0.34, 1)
    assert cat.evaluation_protocols("table1") == ["per_clip", "run"] and cat.evaluation_protocols("table9") == []


def test_per_clip_and_detection_reads(cat: Catalog) -> None:
    assert cat.evaluated_clips() == ["c2"]
    ev = cat.clip_evaluation("c2")
    assert ev.clip.labels == {"gender": "male"}
    assert [(s.method, s.seed) for s in ev.scores] == [("ard", 0), ("random", 0)]  # random: seed 0 only
    assert [(p.method, p.seed) for p in ev.predictions] == [("ard", 0), ("random", 0)]
    assert [(p.method, p.seed) for p in cat.clip_evaluation("c2", seed=1).predictions] == [("ard", 0), ("random", 1)]
    with pytest.raises(NotFound, match="no clip 'zz'"):
        cat.clip_evaluation("zz")
    assert [(d.judge, d.score) for d in cat.feature_detection(A, 0)] == [("clap", 0.9), ("llm", 0.75)]
    assert cat.feature_detection(A, 2) == []
    assert [r.value for r in cat.steering_results()] == [2.0, 8.0]


def test_steerability_reads(cat: Catalog) -> None:
    # a feature's rows, best first: 2 of 2 after 9 of 12, the same flips at the smaller multiple first
    assert [(r.track, r.target) for r in cat.steerability(f"{A}/0")] == [
        ("gender", "male"), ("gender", "female"), ("sound", "dog")]
    assert wilson_lower(2, 2) < wilson_lower(9, 12) < 0.75 and wilson_lower(0, 4) == 0.0
    assert cat.steerability(f"{B}/9") == []
    assert [r.ref for r in cat.steerability_for("gender", "male")] == [f"{A}/0", f"{A}/2", f"{B}/1"]
    # the picker: features that steer the track (a flip), each by its best target
    got = cat.steerable_features("gender", 10)
    assert [(f.ref, f.name, f.best.target) for f in got] == [(f"{A}/0", "dog bark", "male")]
    assert [f.ref for f in cat.steerable_features("sound", 10)] == [f"{A}/0", f"{B}/1"]
    assert cat.steerability_tracks() == ["gender", "sound"]


def test_concepts_sort_and_filter_by_steerability(cat: Catalog) -> None:
    rows = cat.concepts_page(ConceptQuery(sort="steerability", descending=True)).rows
    assert [r.ref for r in rows] == [f"{A}/0", f"{B}/1", f"{A}/2", f"{A}/5"]  # unmeasured last
    assert rows[0].steers == "gender -> male 9/12" and rows[-1].steers == ""
    assert _refs(cat, steer_track="gender") == [f"{A}/0"]  # B/1 and A/2 flipped nothing on gender
    assert sorted(_refs(cat, steer_track="sound")) == [f"{A}/0", f"{B}/1"]
    assert _refs(cat, min_steerability=0.6) == [f"{A}/0"]


def test_a_read_only_catalog_serves_many_threads(cat: Catalog) -> None:
    """Each read runs on its own cursor: one DuckDB connection used by two threads at once is not safe."""
    want = _refs(cat, sort="density")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(40):
                assert _refs(cat, sort="density") == want
                assert cat.feature_page(f"{A}/0").feature.name == "dog bark"
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
