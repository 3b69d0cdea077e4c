"""Similar features: the neighbour searches against brute force, the similar stage against a reference
computed from the store by hand, the planted features finding each other across layers, the page."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ui_fixtures import KINDS, UiRun, run  # noqa: F401 (run is a fixture)

from ard_core.catalog import Catalog, ClipRow
from ard_core.config import RunConfig
from ard_core.sae import TopKSAE
from ard_core.similarity import correlation_neighbours, decoder_neighbours
from ard_core.store import ActivationStore
from ard_core.ui import feature
from ard_core.ui.context import AppContext
from precompute import handover
from precompute.configs import ScoreConfig, SimilarConfig
from precompute.similar import similar


def test_decoder_neighbours_match_brute_force() -> None:
    W = torch.randn(300, 12)
    alive = torch.rand(300) > 0.2
    nb = decoder_neighbours(W, 10, alive, chunk=64)  # chunks must not change the answer
    unit = W / W.norm(dim=1, keepdim=True)
    cos = (unit @ unit.T).numpy()
    for f in (0, 17, 299):
        cand = [j for j in range(300) if j != f and alive[j]]
        want = sorted(cand, key=lambda j: -cos[f, j])[:10]
        assert nb.index[f].tolist() == want
        np.testing.assert_allclose(nb.value[f].numpy(), cos[f, want], rtol=1e-5, atol=1e-6)


def test_correlation_neighbours_match_numpy_and_skip_silent_features() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((40, 30)).astype(np.float32)
    b = rng.random((40, 50)).astype(np.float32)
    b[:, 7] = 2 * a[:, 3] + 1  # a perfect linear twin
    b[:, 9] = 0.0  # silent on every clip: nobody's neighbour
    a[:, 4] = 0.0  # silent source: no neighbours
    nb = correlation_neighbours(torch.from_numpy(a), torch.from_numpy(b), 3, chunk=7)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(a.T, b.T)[:30, 30:]
    corr[:, 9] = -np.inf
    for f in (0, 3, 29):
        want = np.argsort(-corr[f], kind="stable")[:3]
        assert nb.index[f].tolist() == want.tolist()
        np.testing.assert_allclose(nb.value[f].numpy(), corr[f, want], rtol=1e-4, atol=1e-5)
    assert nb.index[3, 0] == 7 and nb.value[3, 0] == pytest.approx(1.0, abs=1e-5)
    assert nb.index[4].tolist() == [-1, -1, -1] and torch.isnan(nb.value[4]).all()
    assert 9 not in nb.index.flatten().tolist()


def test_the_stage_matches_a_hand_computed_reference(run: UiRun, tmp_path: Path) -> None:
    shutil.copytree(run.root / "run", tmp_path / "run")
    cfg = RunConfig.from_raw({"run": {"out_dir": str(tmp_path / "run"), "device": "cpu"}})
    score = ScoreConfig(splits=["train", "probe"])
    handover.save(cfg, score)
    res = similar(cfg, SimilarConfig(top_decoder=5, top_other=2))
    a, b = run.sae_ids
    store = ActivationStore(tmp_path / "run" / "activations")
    with Catalog.open(tmp_path / "run" / "catalog.duckdb", read_only=True) as cat:
        probe = sorted(c.clip_id for c in cat.rows(ClipRow) if c.split in score.splits)
        assert res.n_clips == len(probe) == 8
        mus = {}
        for sae_id in (a, b):
            row = cat.sae(sae_id)
            sae = TopKSAE.load(cat.resolve(row.path))
            mus[sae_id] = np.stack([sae.encode_dense(torch.from_numpy(np.asarray(
                store.clip_tokens(row.layer, c), np.float32))).detach().mean(0).numpy() for c in probe])
        ref = f"{a}/{run.ref('hum').split('/')[1]}"
        got = cat.similar_features(ref)
        k = int(ref.split("/")[1])
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.corrcoef(mus[a].T, mus[b].T)[k, mus[a].shape[1]:]
        corr[mus[b].sum(0) == 0] = -np.inf
        want = np.argsort(-np.nan_to_num(corr, nan=-np.inf), kind="stable")[:2]
        across = [r for r in got if r.kind == "activation"]
        assert [r.ref for r in across] == [f"{b}/{j}" for j in want]
        assert [r.similarity for r in across] == pytest.approx(corr[want].tolist(), rel=1e-4)
        assert across[0].ref == run.ref("hum", 2)  # the planted twin one layer up
        within = [r for r in got if r.kind == "decoder"]
        assert len(within) == 5 and ref not in [r.ref for r in within]


def test_the_feature_page_lists_similar_features(run: UiRun, tmp_path: Path) -> None:
    ctx = AppContext.open(run.catalog, load_model=False, annotations_path=tmp_path / "a.duckdb", clap="")
    try:
        for kind in ("hum", "noise"):
            v = feature.feature_view(ctx, run.ref(kind))
            across = [s for s in v.similar if s.kind == "activation"]
            assert across[0].ref == run.ref(kind, 2) and across[0].name == KINDS[kind][1]
            assert len([s for s in v.similar if s.kind == "decoder"]) == 10
        md = feature.show(ctx, run.ref("hum"))[-1]
        assert f"[{run.ref('hum', 2)}](?feature={run.ref('hum', 2)}) {KINDS['hum'][1]}" in md
        assert feature.feature_json(ctx, run.ref("hum"))["similar"][0]["kind"] == "decoder"
    finally:
        ctx.close()
