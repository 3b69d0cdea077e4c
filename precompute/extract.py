"""Stage ``extract``: run the AudioLLM over the dataset stage's manifest
(``<out_dir>/dataset/manifest.csv``) and store residual-stream activations after each
configured layer (``ard_core.store`` describes the layout).

Resumable: the manifest is cut into fixed shards of ``clips_per_shard`` clips in
manifest order; finished shards are skipped, a half-written one (``.tmp``) is
redone. Multi-GPU: under ``torchrun`` each rank takes the shards ``i`` with
``i % WORLD_SIZE == RANK`` and uses ``cuda:LOCAL_RANK``::

    torchrun --nproc_per_node 4 -m precompute extract --config configs/qwen2-audio-7b.toml
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ard_core.activations import clip_states
from ard_core.audio import AudioError, load_audio
from ard_core.catalog import ActivationIndexRow, Catalog, ClipRow, ModelRow
from ard_core.config import ConfigError, RunConfig, resolve_device, to_dict
from ard_core.datasets import ClipRecord, load_manifest
from ard_core.durable import crash_point
from ard_core.models import AudioLLM, ModelConfig
from ard_core.store import ActivationStore, ActivationWriter, StoreMeta
from precompute import handover
from precompute.cli import add_config_argument, load_config
from precompute.configs import ExtractConfig

log = logging.getLogger(__name__)


class ExtractResult(NamedTuple):
    store: Path
    n_clips: int
    shards_written: int
    shards_skipped: int
    failed: list[dict]


class DistInfo(NamedTuple):
    rank: int
    world: int
    local_rank: int


def dist_info() -> DistInfo:
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


def select_clips(manifest: Path, cfg: ExtractConfig) -> list[ClipRecord]:
    """The manifest's clips of ``cfg.splits``, in manifest order (the first ``max_clips`` when set)."""
    records = [r for r in load_manifest(manifest) if r.split in cfg.splits]
    return records[: cfg.max_clips] if cfg.max_clips else records


def keep_mask(acts: np.ndarray, factor: float) -> np.ndarray:
    """Tokens to keep when dropping attention sinks: norm <= factor * median norm."""
    norms = np.linalg.norm(acts.astype(np.float32), axis=1)
    return norms <= factor * np.median(norms)


def extract_batch(
    llm: AudioLLM, audios: Sequence[np.ndarray], prompt: str, layers: Sequence[int], positions: str
) -> list[dict[int, tuple[np.ndarray, np.ndarray]]]:
    """For each clip: {layer: (acts (T, d) float32, positions (T,))}, positions indexing the clip's kept span."""
    return [{l: (acts.float().cpu().numpy(), np.arange(len(acts), dtype=np.int32)) for l, acts in states.items()}
            for states in clip_states(llm, audios, prompt, layers, positions)]


def extract_clips(llm: AudioLLM, records: Sequence[ClipRecord], prompt: str, cfg: ExtractConfig,
                  writer: ActivationWriter) -> None:
    """One forward batch: each clip's kept tokens per layer into ``writer``; undecodable clips are
    logged, recorded as failures and skipped."""
    batch_recs, audios = [], []
    for rec in records:
        try:
            audios.append(load_audio(rec.path, sr=llm.sampling_rate))
            batch_recs.append(rec)
        except AudioError as exc:
            log.warning("clip %r skipped: %s", rec.clip_id, exc)
            writer.add_failure(rec.clip_id, str(exc))
    if not batch_recs:
        return
    for rec, per_layer in zip(batch_recs, extract_batch(llm, audios, prompt, cfg.layers, cfg.positions)):
        for layer, (acts, pos) in per_layer.items():
            if cfg.drop_sinks:
                keep = keep_mask(acts, cfg.sink_norm_factor)
                acts, pos = acts[keep], pos[keep]
            writer.add(rec.clip_id, layer, acts, pos)


def extract(run: RunConfig, model_cfg: ModelConfig, cfg: ExtractConfig, llm: AudioLLM | None = None) -> ExtractResult:
    """Activations of the dataset stage's clips into ``<out_dir>/activations``, resuming finished shards."""
    dist = dist_info()
    device = resolve_device(run.run.device)
    if device.startswith("cuda") and dist.world > 1:
        device = f"cuda:{dist.local_rank}"
    manifest = handover.manifest(run)
    records = select_clips(manifest, cfg)
    if not records:
        raise ConfigError(f"no clips selected from {manifest} for splits {cfg.splits}")
    if llm is None:
        llm = model_cfg.load(device)
    for layer in cfg.layers:
        if layer >= llm.n_layers:
            raise ConfigError(f"[extract].layers has {layer}, but {llm.name} has layers 0..{llm.n_layers - 1}")
    root = run.run.out_dir / "activations"
    prompt = llm.build_prompt(cfg.prompt)
    meta = StoreMeta(model=llm.name, layers=list(cfg.layers), d_model=llm.d_model, positions=cfg.positions,
                     dtype=cfg.store_dtype, drop_sinks=cfg.drop_sinks, sink_norm_factor=cfg.sink_norm_factor,
                     prompt=prompt, extra={"model_path": model_cfg.name_or_path, "extract": to_dict(cfg)})
    writer = ActivationWriter(root, meta)
    handover.save(run, cfg)
    shards = [records[i : i + cfg.clips_per_shard] for i in range(0, len(records), cfg.clips_per_shard)]
    mine = [i for i in range(len(shards)) if i % dist.world == dist.rank]
    todo = [i for i in mine if not writer.is_done(i)]
    skipped = len(mine) - len(todo)
    if skipped:
        log.info("resuming: %d of %d shard(s) already complete", skipped, len(mine))
    n_todo = sum(len(shards[i]) for i in todo)
    bar = tqdm(total=n_todo, unit="clip", desc=f"extract[{dist.rank}]" if dist.world > 1 else "extract")
    t0 = time.perf_counter()
    for si in todo:
        for b in range(0, len(shards[si]), cfg.batch_size):
            batch = shards[si][b : b + cfg.batch_size]
            extract_clips(llm, batch, prompt, cfg, writer)
            bar.update(len(batch))
            bar.set_postfix(clips_per_s=f"{bar.n / max(time.perf_counter() - t0, 1e-9):.1f}")
        writer.commit(si)
        crash_point("shard")
    bar.close()
    if dist.world > 1 and torch.distributed.is_available():
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        torch.distributed.barrier()
    store = ActivationStore(root)
    if dist.rank == 0:
        register(run, model_cfg, llm, store, records)
    return ExtractResult(root, len(records), len(todo), skipped, store.failures())


def register(run: RunConfig, model_cfg: ModelConfig, llm: AudioLLM, store: ActivationStore,
             records: Sequence[ClipRecord]) -> None:
    """Clips, model and activation index into the catalog (idempotent, one transaction)."""
    family = type(llm).__name__
    with Catalog.open(run.run.catalog_path) as cat, cat.transaction():
        cat.upsert([ModelRow(llm.name, model_cfg.name_or_path, family, llm.n_layers, llm.d_model)])
        cat.upsert([ClipRow(r.clip_id, r.dataset, r.split, str(r.path), float(r.duration_s), dict(r.labels), r.caption)
                    for r in records])
        cat.delete_where("activation_index", model=llm.name)
        rows = [ActivationIndexRow(llm.name, row.layer, row.clip_id, shard, row.offset, row.n_tokens)
                for layer in store.layers for row, shard in store.index_with_shards(layer)]
        cat.upsert(rows)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)
    p.add_argument("--max-clips", type=int, default=None, help="override [extract].max_clips")


def main(args: argparse.Namespace) -> int:
    run = load_config(args)
    cfg = run.section("extract", ExtractConfig)
    if args.max_clips is not None:
        cfg.max_clips = args.max_clips
    res = extract(run, run.section("model", ModelConfig), cfg)
    print(f"activations: {res.store}  clips: {res.n_clips}  shards written: {res.shards_written}  "
          f"skipped (already complete): {res.shards_skipped}  failed clips: {len(res.failed)}")
    for f in res.failed[:20]:
        print(f"  failed {f['clip_id']}: {f['reason']}")
    return 0
