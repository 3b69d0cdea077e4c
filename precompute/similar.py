"""Stage ``similar``: every listed feature's nearest features (the feature page's "similar features").

Within its SAE, the ``[similar].top_decoder`` features whose decoder rows have the largest cosine
with its own; in each SAE of another layer, the ``top_other`` features whose clip mean
activations correlate most with its own over the probing clips (the score stage's splits, read
from its saved config copy). Library code: :mod:`ard_core.similarity`. Rows go to the catalog's
``similar_features`` table, replaced per SAE in one transaction.
"""

from __future__ import annotations

import argparse
import logging
from typing import NamedTuple

import torch

from ard_core.catalog import Catalog, ClipRow, FeatureRow, SaeRow, SimilarFeatureRow
from ard_core.config import ConfigError, RunConfig, resolve_device
from ard_core.sae import TopKSAE
from ard_core.similarity import Neighbours, clip_means, correlation_neighbours, decoder_neighbours
from ard_core.store import ActivationStore
from precompute import handover
from precompute.cli import add_config_argument, load_config
from precompute.configs import ScoreConfig, SimilarConfig

log = logging.getLogger(__name__)


class SimilarResult(NamedTuple):
    saes: list[str]
    n_clips: int
    n_rows: int


def neighbour_rows(sae_id: str, kind: str, other_sae_id: str, nb: Neighbours,
                   listed: set[int]) -> list[SimilarFeatureRow]:
    """Catalog rows of ``nb`` for the listed source features (missing neighbours left out)."""
    out = []
    for f in sorted(listed):
        for rank, (j, v) in enumerate(zip(nb.index[f].tolist(), nb.value[f].tolist())):
            if j >= 0:
                out.append(SimilarFeatureRow(f"{sae_id}/{f}", sae_id, f, kind, other_sae_id, rank, j, float(v)))
    return out


class ClipMeans(NamedTuple):
    clip_ids: list[str]
    """The probing clips every SAE's layer has tokens for, in order."""
    means: dict[str, torch.Tensor]
    """sae_id -> (clips, F) mean activation of each feature on each clip."""
    decoders: dict[str, torch.Tensor]
    """sae_id -> (F, d) decoder rows."""


def clip_means_of(cat: Catalog, store: ActivationStore, saes: list[SaeRow], clip_ids: set[str], score: ScoreConfig,
                  device: str) -> ClipMeans:
    """Every SAE's clip means on the probing clips (streamed from the store with the score stage's batch sizes)."""
    per_sae, decoders = {}, {}
    for row in saes:
        sae = TopKSAE.load(cat.resolve(row.path) or row.path, device=device).eval()
        decoders[row.sae_id] = sae.W_dec.detach().cpu()
        per_sae[row.sae_id] = clip_means(store, row.layer, clip_ids, sae, batch_clips=score.batch_clips,
                                         encode_tokens=score.encode_tokens, desc=f"means {row.sae_id}")
    common = sorted(set.intersection(*(set(m) for m in per_sae.values())))
    if not common:
        raise ConfigError("no probing clip has activations at every SAE's layer; run the extract stage")
    return ClipMeans(common, {s: torch.stack([m[c] for c in common]).cpu() for s, m in per_sae.items()}, decoders)


def similar_rows(row: SaeRow, saes: list[SaeRow], cm: ClipMeans, cfg: SimilarConfig,
                 listed: set[int]) -> list[SimilarFeatureRow]:
    """One SAE's rows: decoder neighbours among its features that fire on a probing clip, and per SAE of
    another layer its features with the most correlated clip means."""
    out: list[SimilarFeatureRow] = []
    if cfg.top_decoder:
        alive = cm.means[row.sae_id].sum(0) > 0
        nb = decoder_neighbours(cm.decoders[row.sae_id], cfg.top_decoder, alive)
        out += neighbour_rows(row.sae_id, "decoder", row.sae_id, nb, listed)
    for other in saes:
        if cfg.top_other and other.layer != row.layer:
            nb = correlation_neighbours(cm.means[row.sae_id], cm.means[other.sae_id], cfg.top_other)
            out += neighbour_rows(row.sae_id, "activation", other.sae_id, nb, listed)
    return out


def similar(run: RunConfig, cfg: SimilarConfig) -> SimilarResult:
    device = resolve_device(run.run.device)
    score = handover.load(run, ScoreConfig)  # the probing clips are the score stage's
    store = ActivationStore(run.run.out_dir / "activations")
    handover.save(run, cfg)
    with Catalog.open(run.run.catalog_path) as cat:
        saes = cat.rows(SaeRow, "model = ?", [store.meta.model])
        if not saes:
            raise ConfigError(f"no SAEs for model {store.meta.model!r} in the catalog; run train-sae first")
        clip_ids = {c.clip_id for c in cat.rows(ClipRow) if c.split in score.splits}
        cm = clip_means_of(cat, store, saes, clip_ids, score, device)
        n_rows = 0
        for row in saes:
            listed = {f.feature for f in cat.rows(FeatureRow, "sae_id = ?", [row.sae_id])}
            rows = similar_rows(row, saes, cm, cfg, listed)
            with cat.transaction():
                cat.delete_where("similar_features", sae_id=row.sae_id)
                cat.upsert(rows)
            n_rows += len(rows)
            log.info("similar features of %s: %d rows", row.sae_id, len(rows))
    return SimilarResult([s.sae_id for s in saes], len(cm.clip_ids), n_rows)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)


def main(args: argparse.Namespace) -> int:
    run = load_config(args)
    res = similar(run, run.section("similar", SimilarConfig))
    print(f"similar features of {len(res.saes)} SAE(s) over {res.n_clips} probing clips: {res.n_rows} rows")
    return 0
