"""Stage ``train-sae``: a TopK SAE for every (layer, expansion) of the ``[sae]`` table.

``[sae].source = "store"`` (the default) trains each SAE in turn on the activation store at
``OUT_DIR/activations``; ``"stream"`` trains them all at once on the model's forward passes over
the manifest's ``[sae].stream_splits`` clips (:mod:`ard_core.sae.stream`), storing nothing. Writes
``OUT_DIR/saes/SAE_ID/{cfg.json, sae.safetensors, train.json, train_log.jsonl}``
and registers each SAE (FVU, L0, dead fraction) in the catalog's ``saes`` table.
Finished SAEs are skipped (re-registered only); an interrupted one resumes from its
last checkpoint (``OUT_DIR/saes/SAE_ID/checkpoint/``). Each ``[sae].random_controls`` pair also
gets a frozen random SAE of its shape, never trained (:mod:`ard_core.sae.random`), saved and
registered as ``SAE_ID-random`` so that the later stages treat it like the others. Multi-GPU, one process per
GPU, each rank taking a disjoint part of every batch::

    torchrun --nproc_per_node 4 -m precompute train-sae --config configs/qwen2-audio-7b.toml
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist

from ard_core.catalog import Catalog, SaeRow, control_id, sae_id_for
from ard_core.config import ConfigError, RunConfig, resolve_device, to_dict
from ard_core.sae.checkpoint import finished_run, remove_checkpoint
from ard_core.sae.data import Dist, TokenSource
from ard_core.sae.random import random_sae, sample_metrics
from ard_core.datasets import load_manifest
from ard_core.models import ModelConfig
from ard_core.sae.stream import ActivationStream, StreamLayer, StreamSpec, train_stream
from ard_core.sae.train import SaeSection, TrainResult, train_sae
from ard_core.store import ActivationStore
from precompute import handover
from precompute.cli import add_config_argument, load_config
from precompute.configs import ExtractConfig

log = logging.getLogger(__name__)

# Settings whose change makes a finished SAE stale (retrained); the rest only affect speed or logging.
RESULT_KEYS = ("k", "batch_size", "steps", "lr", "warmup_steps", "lr_decay_frac", "auxk_alpha", "dead_tokens",
               "dead_data_frac", "b_dec_init", "init_sample_tokens", "source")
STREAM_KEYS = ("stream_splits", "buffer_tokens", "stream_batch_clips")
"""Settings that decide a streamed SAE's data (and only a streamed one's)."""
ADDED_LATER = {"source": "store"}
"""Keys a train.json written before they existed lacks, with the value such a run had."""


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
    keys = RESULT_KEYS + (STREAM_KEYS if section.source == "stream" else ())
    return [k for k in keys if old.get(k, ADDED_LATER.get(k)) != new.get(k)]


class Job(NamedTuple):
    sae_id: str
    layer: int
    expansion: int
    sae_dir: Path


def _finished_row(job: Job, section: SaeSection, model: str, d_model: int, d: Dist) -> SaeRow | None:
    """The catalog row of an SAE finished with the current settings, or None when it must (re)train."""
    done = finished_run(job.sae_dir)
    stale = is_stale(done, section) if done else []
    if done and not stale:
        log.info("%s: finished earlier (FVU %.4f), skipped", job.sae_id, done["metrics"]["fvu"])
        if d.main:
            remove_checkpoint(job.sae_dir)  # left by a run killed between train.json and its cleanup
        m = done["metrics"]
        return SaeRow(job.sae_id, model, job.layer, job.expansion, section.k, d_model, job.expansion * d_model,
                      str(job.sae_dir), float(m["fvu"]), float(m["dead_frac"]), float(m["l0"]))
    if stale:
        log.warning("%s: [sae] %s changed since it was trained; retraining", job.sae_id, ", ".join(stale))
        if d.main:  # a leftover checkpoint is of the old settings too
            (job.sae_dir / "train.json").unlink(missing_ok=True)
            remove_checkpoint(job.sae_dir)
        if d.world > 1:
            dist.barrier()
    return None


def train_all(run: RunConfig, section: SaeSection, only: list[str] | None = None, progress: bool = True) -> list[SaeRow]:
    device = _init_distributed(resolve_device(run.run.device))
    d = Dist.current()
    store = ActivationStore(run.run.out_dir / "activations")
    missing = [l for l in section.layers if l not in store.layers]
    if missing:
        raise ConfigError(f"[sae].layers has {missing}, not in the activation store (layers {store.layers}); "
                          "add them to [extract].layers and re-run extract, or drop them")
    model = store.meta.model
    jobs = [Job(sae_id_for(model, layer, e), layer, e, run.run.out_dir / "saes" / sae_id_for(model, layer, e))
            for layer in section.layers for e in section.expansions]
    jobs = [j for j in jobs if not only or j.sae_id in only]
    if not jobs and only:
        raise ConfigError(f"--only {only} matched none of the SAE ids of [sae] (model {model!r}, layers "
                          f"{section.layers}, expansions {section.expansions})")
    rows: dict[str, SaeRow] = {}

    def register(job: Job, row: SaeRow) -> None:  # as each SAE is ready: a kill keeps the rows of those done
        rows[job.sae_id] = row
        if d.main:
            with Catalog.open(run.run.catalog_path) as cat:
                cat.upsert_sae(row)

    todo = []
    for job in jobs:
        row = _finished_row(job, section, model, store.d_model, d)
        if row is not None:
            register(job, row)
        elif section.source == "stream":
            todo.append(job)  # trained together below, on one stream of forward passes
        else:
            register(job, _trained(job, model, train_sae(section, store, job.layer, job.expansion, job.sae_dir,
                                                         model_name=model, device=device, seed=run.run.seed,
                                                         progress=progress)))
    controls = [Job(cid, l, e, run.run.out_dir / "saes" / cid) for l, e in section.random_controls
                for cid in [control_id(sae_id_for(model, l, e))]]
    controls = [c for c in controls if not only or c.sae_id in only]
    stream = (_open_stream(run, section, {j.layer for j in todo + controls}, model, device)
              if todo or (controls and section.source == "stream" and d.main) else None)
    if todo:
        for job, res in zip(todo, train_stream(section, stream, [(j.layer, j.expansion, j.sae_dir) for j in todo],
                                               model_name=model, device=device, seed=run.run.seed,
                                               progress=progress)):
            register(job, _trained(job, model, res))
    for job in controls:
        if d.main:  # stream mode: the control's samples come from the same forward passes as its twin's
            src = stream.layer(job.layer) if section.source == "stream" else TokenSource(
                store, job.layer, section.batch_size, run.run.seed, torch.device("cpu"), section.in_memory_max_gb,
                section.buffer_tokens)
            register(job, _control(job, section, src, store.d_model, model, run.run.seed))
    return [rows[j.sae_id] for j in jobs + controls if j.sae_id in rows]


def _control(job: Job, section: SaeSection, src: TokenSource | StreamLayer, d_model: int, model: str,
             seed: int) -> SaeRow:
    """Build (again: it is cheap and deterministic) and save the random control of ``job``'s shape; its
    input scale and FVU/L0 come from the same token samples its trained twin's init and finish read."""
    init = src.sample(section.init_sample_tokens, seed=seed * 100_003 + 7_919).cpu()
    sae = random_sae(d_model, job.expansion, section.k, init, model=model, layer=job.layer, seed=seed)
    m = sample_metrics(sae, src.sample(section.eval_tokens, seed=seed * 100_003 + 104_729).cpu())
    sae.save(job.sae_dir)
    log.info("%s: random control, FVU %.4f  L0 %.1f  dead %.3f", job.sae_id, m.fvu, m.l0, m.dead_frac)
    return SaeRow(job.sae_id, model, job.layer, job.expansion, section.k, d_model, sae.cfg.d_sae,
                  str(job.sae_dir), m.fvu, m.dead_frac, m.l0)


def _trained(job: Job, model: str, res: TrainResult) -> SaeRow:
    if Dist.current().main:
        log.info("%s: FVU %.4f  L0 %.1f  dead %.3f  %.0f tokens/s (%s path)", job.sae_id, res.metrics.fvu,
                 res.metrics.l0, res.metrics.dead_frac, res.tokens_per_s, res.impl)
    return _row(job.sae_id, model, job.layer, job.expansion, res)


def _open_stream(run: RunConfig, section: SaeSection, layers: set[int], model: str,
                 device: torch.device) -> ActivationStream:
    """The model's forward passes over [sae].stream_splits at ``layers``, with the extract stage's prompt and
    positions (its saved config copy), so the SAEs see the tokens score reads from the store."""
    ext = handover.load(run, ExtractConfig)
    if ext.drop_sinks:
        raise ConfigError("[sae].source = 'stream' needs [extract].drop_sinks = false: dropped sink tokens "
                          "differ by layer, and the stream feeds every layer from the same positions")
    records = [r for r in load_manifest(handover.manifest(run)) if r.split in section.stream_splits]
    llm = run.section("model", ModelConfig).load(str(device))
    if llm.name != model:
        raise ConfigError(f"[model] loads {llm.name!r}, but the activation store was extracted from {model!r}; "
                          "run extract again or point [model] at the same checkpoint")
    spec = StreamSpec(llm.build_prompt(ext.prompt), ext.positions, sorted(layers))
    log.info("streaming %d clips of splits %s through %s at layers %s", len(records), section.stream_splits,
             llm.name, spec.layers)
    return ActivationStream(llm, records, spec, section.batch_size, section.buffer_tokens,
                            section.stream_batch_clips, run.run.seed, device, run.run.out_dir / "saes" / "stream.json")


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
