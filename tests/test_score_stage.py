"""The score stage on a tiny pipeline: streamed top clips equal a dense reference; catalog contents."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ard_core.catalog import Catalog, FeatureExampleRow, FeatureRow, MethodScoreRow, SaeRow, sae_id_for
from ard_core.config import RunConfig
from ard_core.models import ModelConfig
from ard_core.sae import SaeConfig, TopKSAE
from ard_core.store import ActivationStore
from conftest import gender_tone_manifest
from precompute.extract import ExtractConfig, extract
from precompute.score import ScoreConfig, score, select


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_model_dir, tiny_llm, tiny_clap_dir):
    tmp = tmp_path_factory.mktemp("score")
    manifest = gender_tone_manifest(tmp, "m.csv")
    run = RunConfig.from_raw({"run": {"out_dir": str(tmp / "run"), "device": "cpu", "seed": 3},
                              "model": {"name_or_path": str(tiny_model_dir)},
                              "extract": {"manifest": str(manifest), "layers": [1], "store_dtype": "float32"}})
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
    whole = select(store, 1, clips, 64, cfg, 3, sae, "whole")  # a batch is < encode_tokens tokens: one call
    assert max(r.n_tokens for r in store.index(1)) * cfg.batch_clips < cfg.encode_tokens
    chunked = select(store, 1, clips, 64, dataclasses.replace(cfg, encode_tokens=7), 3, sae, "chunks of 7")
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
    from precompute.describe import DescribeConfig, describe

    run, sae, sid, cfg = scored
    return describe(run, None, DescribeConfig(caption_max_new_tokens=4), cfg.top_c, llm=tiny_llm,
                    summarizer=_FixedSummarizer())


def test_describe_and_evaluate(scored, described):
    from ard_core.catalog import ClipCaptionRow, EvaluationRow, MethodConceptRow
    from precompute.describe import DescribeConfig
    from precompute.evaluate import EvaluateConfig, evaluate

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
    out = evaluate(run, EvaluateConfig(gamma=0.7), cfg, DescribeConfig(), embed=_bag_of_words)
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        t1 = {(r.method, r.metric): r for r in cat.rows(EvaluationRow, "table_name = 'table1'")}
    # references: 'man speaking' (gender=male) and 'woman speaking' (female); every prediction says
    # 'woman speaking': one Hungarian match out of 10 predictions and 2 references.
    assert t1[("ard", "precision")].value == pytest.approx(0.1)
    assert t1[("ard", "recall")].value == pytest.approx(0.5)
    assert t1[("random", "recall")].std == pytest.approx(0.0)
    text = (out / "README.md").read_text()
    assert "| AR&D |" in text and "gender" in text


def test_steer_eval_table(scored, described, tiny_llm):
    from ard_core.catalog import SteeringResultRow
    from precompute.steer_eval import SteerEvalConfig, predict, steer_eval

    run, sae, sid, cfg = scored
    se = SteerEvalConfig(mappings=["male->female"], split="train", features_per_mapping=2, multiples=[1.0, 50.0])
    out = steer_eval(run, None, se, llm=tiny_llm, embed=_bag_of_words)
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        rows = cat.rows(SteeringResultRow)
    assert {r.method for r in rows} == {"ard", "poly"}
    assert len(rows) == 2 * 2 * 2  # methods x features x multiples
    assert all(0.0 <= r.sensitivity <= 1.0 for r in rows if r.n)
    assert len({r.n for r in rows}) == 1  # the same movable source samples for every row
    text = (out / "README.md").read_text()
    assert "| AR&D |" in text and "male->female" in text
