"""Stage ``quality``: the figures a researcher compares SAEs by, on held-out clips, for every SAE and
its random control (``sae_metrics``; the report's and the app's SAE quality table).

- **explained_variance** and **l0** on at most ``heldout_tokens`` tokens of the ``[quality].split``
  clips from the activation store: 1 - sum ||x - x_hat||^2 / sum ||x - mean||^2 and the mean number
  of active latents per token (training's FVU and L0 were measured on training tokens);
- **spliced-in fidelity** (:mod:`precompute.quality_fidelity`): P3 accuracy per track with the SAE's
  reconstruction in place of its layer's output, the KL at the answer position, and the CE-loss
  score on teacher-forced captions, at audio positions and (suffix ``@all``) every position;
- **sparse probing** (:mod:`ard_core.probing`): ``probe_k<k>_<track>``, the mean balanced accuracy
  of the track's one-vs-rest k-sparse probes on clip-pooled latents, chosen and fitted on
  ``probe_splits``, scored on the split; the same on the layer's raw neurons under
  ``MODEL-lL-neurons``.

Seed stability is not measured here: ``evaluate --seeds`` adds it (:mod:`precompute.seeds`).
The stage replaces every row of its split; it needs the model, the activation store and the SAEs.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ard_core.catalog import Catalog, ClipRow, SaeMetricRow, SaeRow
from ard_core.config import ConfigError, RunConfig, resolve_device
from ard_core.durable import write_text
from ard_core.models import AudioLLM, ModelConfig
from ard_core.probing import probe, track_scores
from ard_core.retrieval import clip_keys
from ard_core.sae import TopKSAE
from ard_core.sae.recipe import evaluate
from ard_core.store import ActivationStore
from precompute import handover
from precompute.cli import add_config_argument, load_config
from precompute.configs import QualityConfig
from precompute.quality_fidelity import fidelity_rows
from precompute.quality_report import quality_md

log = logging.getLogger(__name__)


def neurons_id(model: str, layer: int) -> str:
    """The sae_metrics id of a layer's raw neurons (the probes' baseline)."""
    return f"{model}-l{layer}-neurons"


def heldout_tokens(store: ActivationStore, layer: int, clip_ids: Sequence[str], n: int, seed: int) -> torch.Tensor:
    """Up to ``n`` float32 tokens of ``clip_ids`` at ``layer``, whole clips in a seeded order."""
    have = {r.clip_id for r in store.index(layer)}
    ids = [c for c in clip_ids if c in have]
    order = [c for _, c in sorted(zip(clip_keys(ids, seed).tolist(), ids))]
    parts, total = [], 0
    for c in order:
        if total >= n:
            break
        x = store.clip_tokens(layer, c)
        parts.append(torch.from_numpy(x[: n - total].astype(np.float32)))
        total += len(parts[-1])
    return torch.cat(parts) if parts else torch.zeros(0, store.d_model)


@torch.inference_mode()
def heldout_rows(store: ActivationStore, saes: Sequence[SaeRow], models: Mapping[str, TopKSAE], clip_ids: list[str],
                 cfg: QualityConfig, seed: int) -> list[SaeMetricRow]:
    """Explained variance (1 - FVU, as training measures FVU) and L0 of every SAE on the split's tokens."""
    rows = []
    for layer in sorted({s.layer for s in saes}):
        x = heldout_tokens(store, layer, clip_ids, cfg.heldout_tokens, seed)
        if not len(x):
            log.warning("no %s tokens at layer %d in the store: no explained variance there", cfg.split, layer)
            continue
        for s in (s for s in saes if s.layer == layer):
            fvu, l0 = evaluate(models[s.sae_id], x.to(models[s.sae_id].device))
            rows += [SaeMetricRow(s.sae_id, "explained_variance", cfg.split, 1.0 - fvu, None),
                     SaeMetricRow(s.sae_id, "l0", cfg.split, l0, None)]
    return rows


def probe_rows(store: ActivationStore, saes: Sequence[SaeRow], models: Mapping[str, TopKSAE],
               clips: Sequence[ClipRow], cfg: QualityConfig, seed: int) -> list[SaeMetricRow]:
    """k-sparse probes per track on every SAE's latents and on each layer's raw neurons."""
    labels = {c.clip_id: c.labels for c in clips if c.labels}
    train = {c.clip_id for c in clips if c.split in cfg.probe_splits and c.labels}
    test = {c.clip_id for c in clips if c.split == cfg.split and c.labels}
    if not train or not test:
        log.warning("no labelled clips in %s or %s: no sparse probes", cfg.probe_splits, cfg.split)
        return []
    bases: list[tuple[str, int, TopKSAE | None]] = [(s.sae_id, s.layer, models[s.sae_id]) for s in saes]
    bases += [(neurons_id(saes[0].model, l), l, None) for l in sorted({s.layer for s in saes})]
    rows = []
    for sae_id, layer, sae in tqdm(bases, desc="sparse probes", unit="SAE"):
        results = probe(store, layer, sae, labels, train, test, cfg.probe_ks, seed=seed, desc=sae_id)
        rows += [SaeMetricRow(sae_id, f"probe_k{k}_{track}", cfg.split, s.mean, s.std)
                 for (track, k), s in track_scores(results).items()]
    return rows


def quality(run: RunConfig, model_cfg: ModelConfig, cfg: QualityConfig, llm: AudioLLM | None = None) -> Path:
    """Every figure of the module docstring into ``sae_metrics`` and ``OUT_DIR/quality/README.md``."""
    device = resolve_device(run.run.device)
    handover.save(run, cfg)
    store = ActivationStore(run.run.out_dir / "activations")
    seed = run.run.seed
    with Catalog.open(run.run.catalog_path) as cat:
        saes = cat.saes()
        if not saes:
            raise ConfigError("no SAEs in the catalog; run train-sae first")
        clips = cat.rows(ClipRow)
        split_ids = [c.clip_id for c in clips if c.split == cfg.split]
        if not split_ids:
            raise ConfigError(f"no {cfg.split!r} clips in the catalog; set [quality].split to an extracted split")
        models = {s.sae_id: TopKSAE.load(cat.resolve(s.path) or s.path, device=device).eval() for s in saes}
        timings: dict[str, float] = defaultdict(float)
        t0 = time.perf_counter()
        rows = heldout_rows(store, saes, models, split_ids, cfg, seed)
        timings["heldout"] = time.perf_counter() - t0
        rows += probe_rows(store, saes, models, clips, cfg, seed)
        timings["probes"] = time.perf_counter() - t0 - timings["heldout"]
        llm = llm or model_cfg.load(device)
        rows += fidelity_rows(llm, clips, saes, models, cfg, seed)
        timings["fidelity"] = time.perf_counter() - t0 - timings["heldout"] - timings["probes"]
        log.info("quality: %s", ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
        with cat.transaction():
            cat.delete_where("sae_metrics", split=cfg.split)
            cat.upsert(rows)
    out = run.run.out_dir / "quality" / "README.md"
    write_text(out, "\n".join(["# SAE quality", "", *quality_md(rows, saes, llm.name)]) + "\n")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)


def main(args: argparse.Namespace) -> int:
    run = load_config(args)
    out = quality(run, run.section("model", ModelConfig), run.section("quality", QualityConfig))
    print(out.read_text())
    return 0
