"""Stage ``train-sae``: a TopK SAE for every (layer, expansion) of the ``[sae]`` table.

Reads the activation store at ``OUT_DIR/activations``, writes
``OUT_DIR/saes/SAE_ID/{cfg.json, sae.safetensors, train.json, train_log.jsonl}``
and registers each SAE (FVU, L0, dead fraction) in the catalog's ``saes`` table.
Finished SAEs are skipped (re-registered only); an interrupted one resumes from its
last checkpoint (``OUT_DIR/saes/SAE_ID/checkpoint/``). Multi-GPU, one process per
GPU, each rank taking a disjoint part of every batch::

    torchrun --nproc_per_node 4 -m precompute train-sae --config configs/qwen2-audio-7b.toml
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch
import torch.distributed as dist

from ard_core.catalog import Catalog, SaeRow, sae_id_for
from ard_core.config import ConfigError, RunConfig, resolve_device, to_dict
from ard_core.sae.checkpoint import finished_run, remove_checkpoint
from ard_core.sae.data import Dist
from ard_core.sae.train import SaeSection, TrainResult, train_sae
from ard_core.store import ActivationStore
from precompute.cli import add_config_argument, load_config

log = logging.getLogger(__name__)

# Settings whose change makes a finished SAE stale (retrained); the rest only affect speed or logging.
RESULT_KEYS = ("k", "batch_size", "steps", "lr", "warmup_steps", "lr_decay_frac", "auxk_alpha", "dead_tokens",
               "dead_data_frac", "b_dec_init", "init_sample_tokens")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)
    p.add_argument("--only", action="append", default=None, metavar="SAE_ID",
                   help="train only this SAE id (repeatable), e.g. tiny-audiollm-l4-e8")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def _init_distributed(device: str) -> torch.device:
    """Join the torchrun process group when WORLD_SIZE > 1; returns this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda") and world > 1:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device(f"cuda:{local}")
    return torch.device(device)


def is_stale(done: dict, section: SaeSection) -> list[str]:
    """Keys of RESULT_KEYS whose value differs between a finished run and the config."""
    old, new = done.get("section", {}), to_dict(section)
    return [k for k in RESULT_KEYS if old.get(k) != new.get(k)]


def train_all(run: RunConfig, section: SaeSection, only: list[str] | None = None, progress: bool = True) -> list[SaeRow]:
    device = _init_distributed(resolve_device(run.run.device))
    d = Dist.current()
    store = ActivationStore(run.run.out_dir / "activations")
    missing = [l for l in section.layers if l not in store.layers]
    if missing:
        raise ConfigError(f"[sae].layers has {missing}, not in the activation store (layers {store.layers}); "
                          "add them to [extract].layers and re-run extract, or drop them")
    model = store.meta.model
    rows: list[SaeRow] = []
    for layer in section.layers:
        for expansion in section.expansions:
            sae_id = sae_id_for(model, layer, expansion)
            if only and sae_id not in only:
                continue
            sae_dir = run.run.out_dir / "saes" / sae_id
            done = finished_run(sae_dir)
            stale = is_stale(done, section) if done else []
            if done and not stale:
                log.info("%s: finished earlier (FVU %.4f), skipped", sae_id, done["metrics"]["fvu"])
                if d.main:
                    remove_checkpoint(sae_dir)  # left by a run killed between train.json and its cleanup
                m = done["metrics"]
                row = SaeRow(sae_id, model, layer, expansion, section.k, store.d_model, expansion * store.d_model,
                             str(sae_dir), float(m["fvu"]), float(m["dead_frac"]), float(m["l0"]))
            else:
                if stale:
                    log.warning("%s: [sae] %s changed since it was trained; retraining", sae_id, ", ".join(stale))
                    if d.main:  # a leftover checkpoint is of the old settings too
                        (sae_dir / "train.json").unlink(missing_ok=True)
                        remove_checkpoint(sae_dir)
                    if d.world > 1:
                        dist.barrier()
                res = train_sae(section, store, layer, expansion, sae_dir, model_name=model, device=device,
                                seed=run.run.seed, progress=progress)
                row = _row(sae_id, model, layer, expansion, res)
                if d.main:
                    log.info("%s: FVU %.4f  L0 %.1f  dead %.3f  %.0f tokens/s (%s path)", sae_id, res.metrics.fvu,
                             res.metrics.l0, res.metrics.dead_frac, res.tokens_per_s, res.impl)
            if d.main:
                with Catalog.open(run.run.catalog_path) as cat:
                    cat.upsert_sae(row)
            rows.append(row)
    if not rows and only:
        raise ConfigError(f"--only {only} matched none of the SAE ids of [sae] (model {model!r}, layers "
                          f"{section.layers}, expansions {section.expansions})")
    return rows


def _row(sae_id: str, model: str, layer: int, expansion: int, res: TrainResult) -> SaeRow:
    c = res.cfg
    return SaeRow(sae_id, model, layer, expansion, c.k, c.d_in, c.d_sae, str(res.sae_dir),
                  res.metrics.fvu, res.metrics.dead_frac, res.metrics.l0)


def main(args: argparse.Namespace) -> int:
    run = load_config(args)
    section = run.section("sae", SaeSection)
    threads = torch.get_num_threads()
    if section.threads is not None:
        torch.set_num_threads(section.threads)
    try:
        rows = train_all(run, section, only=args.only, progress=not args.no_progress)
        main_rank = Dist.current().main
    finally:
        torch.set_num_threads(threads)
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if main_rank:
        for r in rows:
            print(f"{r.sae_id}: FVU {r.fvu:.4f}  L0 {r.l0:.1f}  dead {r.dead_frac:.3f}  -> {Path(r.path)}")
    return 0
