"""The score stage on a tiny pipeline: streamed top clips equal a dense reference; catalog contents;
describe, evaluate, steerability and steer-eval read what the stages before them saved, not their config sections."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ard_core.catalog import Catalog, ClipRow, FeatureExampleRow, FeatureRow, MethodScoreRow, SaeRow, sae_id_for
from ard_core.config import RunConfig
from ard_core.datasets import load_manifest, save_manifest
from ard_core.models import ModelConfig
from ard_core.retrieval import select_representatives
from ard_core.sae import SaeConfig, TopKSAE
from ard_core.store import ActivationStore
from conftest import gender_tone_manifest
from test_naming import fake_server  # noqa: F401 (a fixture)
from precompute import handover
from precompute.configs import ExtractConfig, ScoreConfig
from precompute.extract import extract
from precompute.score import score

# The config's [score].top_c; the score stage runs with a ScoreConfig of top_c = 10 instead, as
# if [score] had been edited after scoring: the later stages must use the 10 that score kept.
CONFIG_TOP_C = 3


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_model_dir, tiny_llm, tiny_clap_dir):
    tmp = tmp_path_factory.mktemp("score")
    manifest = gender_tone_manifest(tmp, "m.csv")
    save_manifest(load_manifest(manifest), tmp / "run" / "dataset" / "manifest.csv")  # what the dataset stage leaves
    run = RunConfig.from_raw({"run": {"out_dir": str(tmp / "run"), "device": "cpu", "seed": 3},
                              "model": {"name_or_path": str(tiny_model_dir)},
                              "extract": {"layers": [1], "store_dtype": "float32"},
                              "score": {"top_c": CONFIG_TOP_C, "clap_model": "no/such/clap"}})
    extract(run, run.section("model", ModelConfig), run.section("extract", ExtractConfig), llm=tiny_llm)
    torch.manual_seed(0)
    sae = TopKSAE(SaeConfig(d_in=32, d_sae=64, k=6, model=tiny_llm.name, layer=1))
    sid = sae_id_for(tiny_llm.name, 1, 2)
    sae.save(tmp / "run" / "saes" / sid)
    with Catalog.open(run.run.catalog_path) as cat:
        cat.upsert_sae(SaeRow(sid, tiny_llm.name, 1, 2, 6, 32, 64, str(tmp / "run" / "saes" / sid), 0.5, 0.0, 6.0))
    cfg = ScoreConfig(p=3, top_c=10, batch_clips=5, random_seeds=2, clap_model=str(tiny_clap_dir))
    score(run, cfg)
    return run, sae, sid, cfg


def test_top_clips_match_dense_reference(scored):
    run, sae, sid, cfg = scored
    store = ActivationStore(run.run.out_dir / "activations")
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        probe = {r["clip_id"] for r in cat.query("SELECT clip_id FROM clips WHERE split IN ('train', 'probe')")}
        ex = cat.rows(FeatureExampleRow, "method = 'ard' AND kind = 'top' AND sae_id = ?", [sid])
    r = {}
    for cid in sorted(probe):
        z = sae.encode_dense(torch.from_numpy(store.clip_tokens(1, cid).astype(np.float32))).detach()
        r[cid] = (z.mean(0) * (z > 0).float().mean(0)).numpy()
    got = {}
    for e in ex:
        got.setdefault(e.feature, {})[e.rank] = (e.clip_id, e.score)
    for f in range(64):
        best = max(r[c][f] for c in probe)
        clip0, score0 = got[f][0]
        assert score0 == pytest.approx(best, rel=1e-5, abs=1e-7)
        assert r[clip0][f] == pytest.approx(best, rel=1e-5, abs=1e-7)


def test_encoding_in_token_chunks_selects_the_same_clips(scored):
    run, sae, sid, cfg = scored
    store = ActivationStore(run.run.out_dir / "activations")
    clips = set(store.clip_ids())
    kw = dict(p=cfg.p, methods=cfg.methods, seed=3, batch_clips=cfg.batch_clips)
    whole = select_representatives(store, 1, clips, 64, sae, encode_tokens=cfg.encode_tokens, **kw)
    assert max(r.n_tokens for r in store.index(1)) * cfg.batch_clips < cfg.encode_tokens  # so: one call
    chunked = select_representatives(store, 1, clips, 64, sae, encode_tokens=7, **kw)
    assert chunked.n_tokens == whole.n_tokens and torch.equal(chunked.n_active, whole.n_active)
    for m in cfg.methods:
        for a, b in zip(whole.result(m), chunked.result(m)):
            assert torch.equal(a.clip_index, b.clip_index)
            torch.testing.assert_close(a.score, b.score, equal_nan=True)


def test_catalog_holds_features_methods_and_embeddings(scored):
    run, sae, sid, cfg = scored
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        feats = cat.rows(FeatureRow, "sae_id = ?", [sid])
        assert len(feats) == 64
        assert sorted(f.rank for f in feats) == list(range(1, 65))
        assert all(0 <= f.density <= 1 for f in feats)
        methods = {r["method"] for r in cat.query("SELECT DISTINCT method FROM method_scores")}
        assert methods == {"ard", "mean_act", "coverage", "random", "poly"}
        n_random = cat.query("SELECT count(*) AS n FROM method_scores WHERE method = 'random'")[0]["n"]
        assert n_random == 2 * 10  # seeds x top C
        poly = cat.rows(MethodScoreRow, "method = 'poly'")
        assert len(poly) == 32  # one per raw neuron
        emb = cat.query("SELECT embedding FROM clip_embeddings LIMIT 1")[0]["embedding"]
        assert len(emb) > 0 and abs(np.linalg.norm(emb) - 1) < 1e-4


def test_low_coverage_share_per_method_recounts_from_the_stored_examples(scored):
    """The score stage's share of top-p clips with c < 0.5 is what the stored examples of each method's
    top-C features say (an independent count over the catalog's rows)."""
    run, sae, sid, cfg = scored
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        shares = {r["method"]: r["value"] for r in cat.query(
            "SELECT method, value FROM evaluations WHERE table_name = 'coverage' AND sae_id = ?", [sid])}
        assert set(shares) == {"ard", "mean_act", "coverage", "poly"}
        for method in shares:
            rows = cat.query("SELECT e.coverage FROM feature_examples e JOIN method_scores s ON s.method = e.method "
                             "AND s.sae_id = e.sae_id AND s.feature = e.feature AND s.seed = 0 "
                             "WHERE e.method = ? AND e.sae_id = ? AND e.kind = 'top' AND s.rank <= ?",
                             [method, sid, cfg.top_c if method != "poly" else min(cfg.top_c, 32)])
            assert rows
            assert shares[method] == pytest.approx(np.mean([r["coverage"] < 0.5 for r in rows]))
    assert 0.0 <= min(shares.values()) <= max(shares.values()) <= 1.0


def test_rescoring_is_deterministic(scored):
    run, sae, sid, cfg = scored
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        before = cat.rows(FeatureExampleRow, "sae_id = ?", [sid])
    score(run, cfg)
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        after = cat.rows(FeatureExampleRow, "sae_id = ?", [sid])
    assert [(e.method, e.feature, e.kind, e.rank, e.clip_id) for e in before] == \
           [(e.method, e.feature, e.kind, e.rank, e.clip_id) for e in after]


class _FixedSummarizer:
    def summarize(self, captions):
        from ard_core.naming import Concept

        return Concept("woman speaking", f"{len(captions)} captions")


def _bag_of_words(texts):
    vocab = ["man", "woman", "speaking", "dog"]
    v = np.array([[float(w in t.split()) for w in vocab] + [1e-3] for t in texts])
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def described(scored, tiny_llm):
    from precompute.configs import DescribeConfig
    from precompute.describe import describe

    run, sae, sid, cfg = scored
    return describe(run, None, DescribeConfig(caption_max_new_tokens=4), llm=tiny_llm, summarizer=_FixedSummarizer())


@pytest.fixture(scope="module")
def evaluated(scored, described):
    from precompute.configs import EvaluateConfig
    from precompute.evaluate import evaluate

    run, sae, sid, cfg = scored
    return evaluate(run, EvaluateConfig(gamma=0.7), embed=_bag_of_words)


def test_describe_names_the_top_c_that_score_saved_not_the_configs(scored, described):
    from ard_core.catalog import MethodConceptRow

    run, sae, sid, cfg = scored
    assert run.section("score", ScoreConfig).top_c == CONFIG_TOP_C != cfg.top_c
    assert handover.load(run, ScoreConfig) == cfg
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        ard = cat.rows(MethodConceptRow, "method = 'ard'")
    assert len(ard) == cfg.top_c
    assert handover.load(run, handover.Table1Choice).sae_id == sid  # the one SAE, for evaluate and steer-eval


def test_describe_and_evaluate(scored, described, evaluated):
    from ard_core.catalog import ClipCaptionRow, EvaluationRow, MethodConceptRow

    run, sae, sid, cfg = scored
    n = described
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        concepts = cat.rows(MethodConceptRow)
        assert n == len(concepts)
        by_method = {m: sum(c.method == m for c in concepts) for m in ("ard", "mean_act", "coverage", "poly", "random")}
        assert by_method == {"ard": 10, "mean_act": 10, "coverage": 10, "poly": 10, "random": 20}
        named = cat.rows(FeatureRow, "name IS NOT NULL")
        assert len(named) == 10 and all(f.rank <= 10 for f in named)
        captioned = {c.clip_id for c in cat.rows(ClipCaptionRow)}
        tops = {r["clip_id"] for r in cat.query("SELECT clip_id FROM feature_examples WHERE kind = 'top' AND "
                                                "method = 'ard' AND feature IN (SELECT feature FROM features "
                                                "WHERE name IS NOT NULL)")}
        assert tops <= captioned
    out = evaluated
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        t1 = {(r.method, r.metric): r for r in cat.evaluation_rows("table1", protocol="vocabulary")}
    # vocabulary references: 'a man speaking' (gender=male) and 'a woman speaking' (female); every
    # prediction says 'woman speaking': one Hungarian match out of 10 predictions and 2 references.
    assert t1[("ard", "precision")].value == pytest.approx(0.1)
    assert t1[("ard", "recall")].value == pytest.approx(0.5)
    assert t1[("random", "recall")].std == pytest.approx(0.0)
    text = (out / "README.md").read_text()
    assert "| AR&D |" in text and "gender" in text and "Per-clip view" in text


def test_per_clip_protocol_on_the_stage(scored, described, evaluated):
    """Every name is 'woman speaking' (bag-of-words: similarity 1 to 'a woman speaking', 0.5 to 'a man
    speaking'): a female test clip on which some named feature fires scores P = 1/|predictions|, R = 1;
    a male one scores 0; Table 1 is the mean over the test clips with its bootstrap interval."""
    from ard_core.catalog import ClipPredictionRow, ClipScoreRow

    run, sae, sid, cfg = scored
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        clips = {c.clip_id: c for c in cat.rows(ClipRow)}
        scores = cat.rows(ClipScoreRow, "method = 'ard'")
        preds = cat.rows(ClipPredictionRow, "method = 'ard'")
        t1 = {r.metric: r for r in cat.evaluation_rows("table1", protocol="per_clip") if r.method == "ard"}
        n_random = {r.seed for r in cat.rows(ClipScoreRow, "method = 'random'")}
    test_ids = {c for c, r in clips.items() if r.split == "test"}
    assert {s.clip_id for s in scores} == test_ids and len(test_ids) == 8 and n_random == {0, 1}
    fired = 0
    for s in scores:
        mine = [p for p in preds if p.clip_id == s.clip_id]
        assert s.n_predictions == len(mine) <= 5 and [p.rank for p in mine] == list(range(1, len(mine) + 1))
        assert all(a.activation >= b.activation > 0 for a, b in zip(mine, mine[1:] + mine[-1:]))
        if clips[s.clip_id].labels["gender"] == "female" and mine:
            fired += 1
            assert (s.precision, s.recall) == (pytest.approx(1 / len(mine)), 1.0)
            assert sum(p.matched for p in mine) == 1 and 0 < s.ap <= 1
        else:
            assert (s.precision, s.recall, s.ap) == (0.0, 0.0, 0.0)
    assert fired >= 1
    assert t1["recall"].value == pytest.approx(fired / 8) and t1["recall"].n == 8
    assert t1["precision"].value == pytest.approx(np.mean([s.precision for s in scores]))
    assert t1["f1"].ci_low <= t1["f1"].value <= t1["f1"].ci_high and t1["f1"].std > 0


def test_detection_scores_every_named_feature(scored, described, evaluated):
    from ard_core.catalog import DetectionRow

    run, sae, sid, cfg = scored
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        named = {f.feature for f in cat.rows(FeatureRow, "name IS NOT NULL")}
        det = cat.rows(DetectionRow)
    assert {d.feature for d in det} == named and {d.judge for d in det} == {"clap"}
    for d in det:
        assert d.n_pos == d.n_neg <= 20
        assert (d.score is None) == (d.n_pos == 0) and (d.score is None or 0 <= d.score <= 1)


def _table_hashes(db):
    import hashlib

    with Catalog.open(db, read_only=True) as cat:
        return {t: hashlib.sha256("\n".join(sorted(repr(tuple(r.values())) for r in cat.query(f'SELECT * FROM "{t}"')))
                                  .encode()).hexdigest() for t in cat.tables()}


def test_score_and_evaluate_twice_give_identical_tables(scored, described, tiny_llm):
    """Single-threaded runs are deterministic: score, describe and evaluate again on the same inputs
    write exactly the same rows to every table (hashes of the sorted rows)."""
    from precompute.configs import DescribeConfig, EvaluateConfig
    from precompute.describe import describe
    from precompute.evaluate import evaluate

    run, sae, sid, cfg = scored

    def once():
        score(run, cfg)
        describe(run, None, DescribeConfig(caption_max_new_tokens=4), llm=tiny_llm, summarizer=_FixedSummarizer())
        evaluate(run, EvaluateConfig(gamma=0.7), embed=_bag_of_words)
        return _table_hashes(run.run.catalog_path)

    first, second = once(), once()
    assert first == second
    assert {"evaluations", "clip_scores", "clip_predictions", "feature_detection", "feature_examples"} <= set(first)


def test_steerability_then_steer_eval(scored, evaluated, tiny_llm):
    """steerability reads the references evaluate saved; steer-eval takes its choice from steerability's rows
    (chosen on probe) and judges it on another split with both denominators."""
    from ard_core.catalog import SteeringResultRow
    from precompute.configs import SteerabilityConfig, SteerEvalConfig
    from precompute.steer_eval import steer_eval
    from precompute.steerability import steerability

    run, sae, sid, cfg = scored
    steerability(run, None, SteerabilityConfig(pool_clips=8, clips_per_target=4, screen_clips=2, finalists=1,
                                               multiples=[1.0, 4.0]), llm=tiny_llm, embed=_bag_of_words)
    se = SteerEvalConfig(mappings=["female->male", "male->female"], split="train")
    out = steer_eval(run, None, se, llm=tiny_llm)
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        measured = {r.target for r in cat.steerability_for("gender", "male") + cat.steerability_for("gender", "female")}
        rows = cat.rows(SteeringResultRow)
        train = [c for c in cat.rows(ClipRow) if c.split == "train"]
    # the random model answers every probe clip the same way, so one direction is measured, and only it is judged
    assert len(measured) == 1
    target = measured.pop()
    source = "female" if target == "male" else "male"
    assert {r.mapping for r in rows} == {f"{source}->{target}"}
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        best = cat.steerability_for("gender", target)[0]
    n_source = sum(c.labels.get("gender") == source for c in train)
    assert {r.method for r in rows} == {"ard", "poly"} and all(r.layer == 1 and r.best_layer for r in rows)
    ard = next(r for r in rows if r.method == "ard")
    assert (ard.sae_id, ard.feature, ard.value, ard.probe_flip_rate) == (best.sae_id, best.feature, best.value,
                                                                         best.flip_rate)
    for r in rows:
        assert r.n_all == n_source and r.n <= r.n_all
        assert r.sensitivity_all * r.n_all == pytest.approx(r.sensitivity * r.n)  # the same shifted samples
    text = (out / "README.md").read_text()
    assert "| AR&D |" in text and f"->{target}" in text
    # Table 3 with its bootstrap over the movable source samples: one row per mapping and method, its best layer's
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        t3 = {r.method: r for r in cat.evaluation_rows("steering", protocol="run")}
    assert set(t3) == {"ard", "poly"}
    for method, r in t3.items():
        mine = next(x for x in rows if x.method == method and x.best_layer)
        assert r.value == pytest.approx(mine.sensitivity) and r.n == mine.n and r.metric == f"{source}->{target}"
        assert r.ci_low <= r.value <= r.ci_high and r.std >= 0


def test_report_writes_the_readme_section_between_markers(scored, evaluated, tmp_path, monkeypatch):
    import argparse

    from ard_core.config import ConfigError
    from precompute import report

    run, sae, sid, cfg = scored
    monkeypatch.setattr(report, "load_config", lambda args: run)
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\nbefore\n<!-- report:begin -->\nstale text\n<!-- report:end -->\nafter\n")
    args = argparse.Namespace(config="cfg.toml", readme=readme, figures=tmp_path / "figs")
    assert report.main(args) == 0
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n<!-- report:begin -->\n") and text.endswith("<!-- report:end -->\nafter\n")
    assert "stale text" not in text and "at commit " in text
    assert "### Table 1, per clip" in text and "| AR&D |" in text and "Vocabulary coverage" in text
    assert "(the lens stage has not run)" in text and "Over SAE seeds: not run" in text
    report.main(args)
    assert readme.read_text() == text  # the same run renders the same section
    readme.write_text("no markers here\n")
    with pytest.raises(ConfigError, match="report:begin"):
        report.main(args)


def test_evaluate_embeds_with_the_clap_model_score_saved(scored, evaluated, tiny_clap_dir):
    """The config's [score].clap_model names no model; evaluate must build its text embedder from
    the score stage's saved copy (the tiny CLAP) and still produce every table."""
    from ard_core.catalog import EvaluationRow
    from precompute.configs import EvaluateConfig
    from precompute.evaluate import evaluate

    run, sae, sid, cfg = scored
    assert run.section("score", ScoreConfig).clap_model == "no/such/clap"
    assert handover.load(run, ScoreConfig).clap_model == str(tiny_clap_dir)
    evaluate(run, EvaluateConfig(gamma=0.7))
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        tables = {r.table_name for r in cat.rows(EvaluationRow)}
    assert {"table1", "table4", "track_match"} <= tables


def test_llm_detection_through_the_summarizer_endpoint(scored, described, evaluated, fake_server):
    """detection_judges = ['llm'] asks describe's [describe.summarizer] endpoint (the fake OpenAI server)
    about each sampled clip's caption; every name here is 'woman speaking' and every caption says
    'speaking', so the judge says yes to all and the AUROC is 0.5."""
    from ard_core.catalog import DetectionRow
    from ard_core.naming import SummarizerConfig
    from precompute.configs import DescribeConfig, EvaluateConfig
    from precompute.evaluate import evaluate
    from test_naming import _FakeChat

    run, sae, sid, cfg = scored
    saved = handover.load(run, DescribeConfig)
    url = f"http://127.0.0.1:{fake_server.server_port}/v1"
    handover.save(run, DescribeConfig(summarizer=SummarizerConfig(backend="openai", base_url=url, model="j", retries=0)))
    try:
        evaluate(run, EvaluateConfig(gamma=0.7, detection_judges=["llm"], detection_n=3), embed=_bag_of_words)
    finally:
        handover.save(run, saved)
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        det = cat.rows(DetectionRow)
    assert {d.judge for d in det} == {"llm"} and len(det) == cfg.top_c
    assert len(_FakeChat.calls) == sum(d.n_pos + d.n_neg for d in det) > 0
    assert all(d.score == 0.5 for d in det if d.score is not None)
