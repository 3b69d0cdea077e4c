"""Stage ``score``: representative clips and monosemanticity for every SAE (AR&D 2.2-2.3).

For each SAE in the catalog, the probing clips' activations stream from the
store through the SAE; per clip and feature, mu, c and r = mu * c come from the
K active latents (``ard_core.retrieval``), and the top-p / bottom-p clips of every
feature are kept for each scoring method ('ard', 'mean_act', 'coverage'), plus
'poly' (the same ard score on the raw neurons of x at that layer) and 'random'
(random p clips for the ard top-C features, one draw per seed).

Monosemanticity (eqs. 3-4) uses CLAP audio embeddings computed once per clip
and cached in the catalog (``clip_embeddings``). Features are ranked by it; the
top C of each method are the ones the describe/evaluate stages name and score.

Per method it also records (``evaluations``, table ``coverage``) the share of its selected
top-p clips, over its top-C features, whose coverage c is below 0.5: on a corpus where a
concept can fill only a part of a clip, how often each score picks such clips.

Activation over time of an example is NOT stored: the app recomputes it on
demand from the activation store (one clip through the SAE is milliseconds), which
keeps the catalog small (p x 2 x d_z sequences per SAE would dominate it).
"""

from __future__ import annotations

import argparse
import logging
from typing import NamedTuple, Sequence

import numpy as np
import torch

from ard_core.catalog import (
    Catalog,
    ClipRow,
    EvaluationRow,
    FeatureExampleRow,
    FeatureRow,
    MethodScoreRow,
    SaeRow,
)
from ard_core.clap import cached_audio_embeddings
from ard_core.clap import embedder_name as clap_embedder_name
from ard_core.config import ConfigError, RunConfig, resolve_device
from ard_core.monosemanticity import monosemanticity, rank_features
from ard_core.retrieval import (RepresentativeSelector, Selection, low_coverage_share, random_representatives,
                                select_representatives)
from ard_core.sae import TopKSAE
from ard_core.store import ActivationStore
from precompute import handover
from precompute.cli import add_config_argument, load_config
from precompute.configs import ScoreConfig

log = logging.getLogger(__name__)


class ScoreResult(NamedTuple):
    saes: list[str]
    n_clips: int
    n_embedded: int


def embedder_name(cfg: ScoreConfig) -> str:
    return clap_embedder_name(cfg.clap_backend, cfg.clap_model)


def select(store: ActivationStore, layer: int, clip_ids: set[str], n_features: int, sae: TopKSAE | None,
           cfg: ScoreConfig, seed: int, desc: str) -> RepresentativeSelector:
    """:func:`ard_core.retrieval.select_representatives` with the [score] table's p, methods and batch sizes."""
    return select_representatives(store, layer, clip_ids, n_features, sae, p=cfg.p, methods=cfg.methods, seed=seed,
                                  batch_clips=cfg.batch_clips, encode_tokens=cfg.encode_tokens, desc=desc)


def ensure_embeddings(cat: Catalog, clips: dict[str, ClipRow], needed: set[str], cfg: ScoreConfig,
                      device: str) -> dict[str, np.ndarray]:
    """CLAP audio embeddings of ``needed`` clips, computing and caching the missing ones."""
    return cached_audio_embeddings(cat, {c: clips[c].path for c in needed}, needed, cfg.clap_backend, cfg.clap_model,
                                   device)


def gather(emb: dict[str, np.ndarray], clip_ids: list[str], index: torch.Tensor) -> torch.Tensor:
    """(F, p) clip indices -> (F, p, D) embeddings."""
    table = np.stack([emb[c] for c in clip_ids])
    return torch.from_numpy(table[index.clamp(min=0).numpy()])


def example_rows(method: str, sae_id: str, features: Sequence[int], top: Selection, bottom: Selection,
                 clip_ids: list[str]) -> list[FeatureExampleRow]:
    rows = []
    for kind, s in (("top", top), ("bottom", bottom)):
        for f in features:
            for rank in range(s.clip_index.shape[1]):
                ci = int(s.clip_index[f, rank])
                if ci >= 0:
                    rows.append(FeatureExampleRow(method, sae_id, int(f), kind, rank, clip_ids[ci],
                                                  float(s.score[f, rank]), float(s.mean_act[f, rank]),
                                                  float(s.coverage[f, rank])))
    return rows


def score_sae(cat: Catalog, store: ActivationStore, sae_row: SaeRow, clips: dict[str, ClipRow], probe_ids: set[str],
              cfg: ScoreConfig, seed: int, device: str, poly: RepresentativeSelector | None) -> None:
    """Score one SAE; ``poly`` is the raw-neuron selector of its layer (shared by the layer's SAEs)."""
    sae = TopKSAE.load(sae_row.path, device=device).eval()
    sel = select(store, sae_row.layer, probe_ids, sae_row.d_sae, sae, cfg, seed, f"score {sae_row.sae_id}")
    ids = sel.clip_ids
    # every clip any method may show or embed
    needed: set[str] = set()
    results = {m: sel.result(m) for m in cfg.methods}
    for top, bottom in results.values():
        for s in (top, bottom):
            needed |= {ids[i] for i in s.clip_index.flatten().tolist() if i >= 0}
    randoms = [random_representatives(len(ids), sae_row.d_sae, cfg.p, seed + 1000 * s) for s in range(cfg.random_seeds)]
    for rt, rb in randoms:
        needed |= {ids[i] for i in torch.cat([rt, rb]).flatten().tolist()}
    if poly is not None:
        pt, pb = poly.result("ard")
        needed |= {poly.clip_ids[i] for i in torch.cat([pt.clip_index, pb.clip_index]).flatten().tolist() if i >= 0}
    emb = ensure_embeddings(cat, clips, needed, cfg, device)

    score_rows: list[MethodScoreRow] = []
    example_rows_all: list[FeatureExampleRow] = []
    shares: list[EvaluationRow] = []
    ard_ms = None
    for m, (top, bottom) in results.items():
        ms = monosemanticity(gather(emb, ids, top.clip_index), gather(emb, ids, bottom.clip_index), cfg.eps)
        kept, rank = rank_features(ms, cfg.top_c)
        shares.append(_coverage_row(m, sae_row.sae_id, top, kept))
        score_rows += [MethodScoreRow(m, sae_row.sae_id, f, 0, _num(ms[f]), int(rank[f])) for f in range(len(ms))]
        # ard: every feature's examples (the app shows any feature); baselines: their top C
        shown = range(sae_row.d_sae) if m == "ard" else kept.tolist()
        example_rows_all += example_rows(m, sae_row.sae_id, shown, top, bottom, ids)
        if m == "ard":
            ard_ms, ard_rank, ard_kept = ms, rank, kept
    for s, (rt, rb) in enumerate(randoms):  # random representatives of the ard top-C features
        got_scores, got_examples = _random_rows(sae_row.sae_id, s, rt, rb, ard_kept, ard_rank, emb, ids, cfg.eps)
        score_rows += got_scores
        example_rows_all += got_examples
    if poly is not None:
        pt, pb = poly.result("ard")
        pids = poly.clip_ids
        ms = monosemanticity(gather(emb, pids, pt.clip_index), gather(emb, pids, pb.clip_index), cfg.eps)
        kept, rank = rank_features(ms, min(cfg.top_c, sae_row.d_in))
        shares.append(_coverage_row("poly", sae_row.sae_id, pt, kept))
        score_rows += [MethodScoreRow("poly", sae_row.sae_id, f, 0, _num(ms[f]), int(rank[f])) for f in range(len(ms))]
        example_rows_all += example_rows("poly", sae_row.sae_id, kept.tolist(), pt, pb, pids)

    density, max_act = sel.density, sel.max_act
    features = [FeatureRow(sae_row.sae_id, f, None, None, _num(ard_ms[f]), int(ard_rank[f]), float(density[f]),
                           _num(max_act[f]) if torch.isfinite(max_act[f]) else None) for f in range(sae_row.d_sae)]
    with cat.transaction():  # a kill in between must not leave this SAE's rows half replaced
        for table in ("features", "feature_examples", "method_scores"):
            cat.delete_where(table, sae_id=sae_row.sae_id)
        cat.delete_where("evaluations", table_name=COVERAGE_TABLE, sae_id=sae_row.sae_id)
        cat.upsert(features)
        cat.upsert(example_rows_all)
        cat.upsert(score_rows)
        cat.upsert([r for r in shares if r.value is not None])


def _random_rows(sae_id: str, seed: int, top: torch.Tensor, bottom: torch.Tensor, kept: torch.Tensor,
                 rank: torch.Tensor, emb: dict[str, np.ndarray], ids: list[str],
                 eps: float) -> tuple[list[MethodScoreRow], list[FeatureExampleRow]]:
    """One 'random' draw's monosemanticity and examples for the ard top-C features ``kept``."""
    ms = monosemanticity(gather(emb, ids, top[kept]), gather(emb, ids, bottom[kept]), eps)
    scores = [MethodScoreRow("random", sae_id, int(f), seed, _num(v), int(rank[f])) for f, v in zip(kept.tolist(), ms)]
    examples = [FeatureExampleRow(f"random:{seed}", sae_id, int(f), kind, r, ids[int(picks[f, r])],
                                  float("nan"), float("nan"), float("nan"))
                for kind, picks in (("top", top), ("bottom", bottom)) for f in kept.tolist()
                for r in range(picks.shape[1])]
    return scores, examples


COVERAGE_TABLE = "coverage"
"""``evaluations.table_name`` of the score stage's low-coverage shares."""


def _coverage_row(method: str, sae_id: str, top: Selection, kept: torch.Tensor) -> EvaluationRow:
    """The share of a method's top-p clips (over its top-C features) where the feature covers < half the tokens."""
    return EvaluationRow(COVERAGE_TABLE, method, sae_id, "share_top_clips_c_lt_0.5", low_coverage_share(top, kept), None)


def _num(x: torch.Tensor | float) -> float | None:
    v = float(x)
    return None if np.isnan(v) else v


def score(run: RunConfig, cfg: ScoreConfig) -> ScoreResult:
    device = resolve_device(run.run.device)
    store = ActivationStore(run.run.out_dir / "activations")
    handover.save(run, cfg)
    with Catalog.open(run.run.catalog_path) as cat:
        clips = {c.clip_id: c for c in cat.rows(ClipRow)}
        probe_ids = {c for c, r in clips.items() if r.split in cfg.splits}
        if not probe_ids:
            raise ConfigError(f"no clips of splits {cfg.splits} in the catalog; run the extract stage first")
        saes = cat.rows(SaeRow, "model = ?", [store.meta.model])
        if not saes:
            raise ConfigError(f"no SAEs for model {store.meta.model!r} in the catalog; run train-sae first")
        polys: dict[int, RepresentativeSelector] = {}
        for row in saes:
            if cfg.poly and row.layer not in polys:
                polys[row.layer] = select(store, row.layer, probe_ids, row.d_in, None, cfg, run.run.seed,
                                          f"poly l{row.layer}")
            score_sae(cat, store, row, clips, probe_ids, cfg, run.run.seed, device, polys.get(row.layer))
            log.info("scored %s", row.sae_id)
        n_emb = cat.count("clip_embeddings")
    return ScoreResult([s.sae_id for s in saes], len(probe_ids), n_emb)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)


def main(args: argparse.Namespace) -> int:
    run = load_config(args)
    res = score(run, run.section("score", ScoreConfig))
    print(f"scored {len(res.saes)} SAE(s) on {res.n_clips} probing clips: {', '.join(res.saes)}; "
          f"{res.n_embedded} clip embeddings cached")
    return 0
