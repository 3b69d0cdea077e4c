"""``python -m precompute plan``: what a run will need, before any weights are loaded.

Builds the model of ``[model]`` on the meta device (:mod:`ard_core.models.meta`: for a hub id
without local files, the copy of its config shipped in ``configs/models/``), checks the layers,
hook points and audio-token positions the config names, and prints, for the clips of the
dataset stage's manifest (or ``--clips N`` of ``--clip-seconds S`` before the dataset stage ran):

- the activation store: tokens per layer (25 audio tokens per second, capped by the window)
  x d_model x the store dtype, per layer and in all;
- each SAE's parameters and its weights + gradients + Adam state (fp32) per GPU, and whether
  ``[sae].in_memory_max_gb`` holds a layer's tokens;
- tokens per SAE (steps x batch) and passes over the data;
- the catalog's size, from the rows the score stage writes;
- both ways to feed the SAEs (``[sae].source``): from the store, or streamed from the model's
  forward passes through a shuffling buffer, with the disk, passes and GPU hours of each
  (FLOPs: forward 2 x parameters x positions, SAE 6 x d x d_sae per token, at the throughput
  measured by ``bench/gpu_smoke.py``), and which fits ``--disk-gb``.

Figures are estimates; :mod:`precompute.plan_figures` computes them, this module checks and prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ard_core.config import ConfigError, RunConfig
from ard_core.datasets import load_manifest
from ard_core.models import ModelConfig
from ard_core.models.meta import ModelShape, check_shape, meta_shape
from ard_core.sae.train import SaeSection
from precompute import handover
from precompute.cli import add_config_argument, load_config
from precompute.configs import ExtractConfig, LensConfig, ScoreConfig
from precompute.plan_figures import (
    DEFAULT_CALIBRATION, Clips, Plan, Throughput, estimate, format_plan,
)


def check_config(shape: ModelShape, extract: ExtractConfig, sae: SaeSection, lens: LensConfig) -> list[str]:
    """Problems with the layers and positions the config names, for this model."""
    top = shape.n_layers - 1
    problems = check_shape(shape)
    bad = [l for l in extract.layers if l > top]
    if bad:
        problems.append(f"[extract].layers {bad} out of range: {shape.name} has decoder layers 0..{top}")
    missing = [l for l in sae.layers if l not in extract.layers]
    if missing:
        problems.append(f"[sae].layers {missing} are not in [extract].layers {extract.layers}: score reads "
                        "every SAE's layer from the activation store")
    if lens.enrich_gap >= shape.n_layers:
        problems.append(f"[lens].enrich_gap {lens.enrich_gap} >= the model's {shape.n_layers} layers")
    if sae.source == "stream" and extract.drop_sinks:
        problems.append("[sae].source = 'stream' needs [extract].drop_sinks = false (every layer must give "
                        "the same tokens per clip)")
    return problems


def manifest_clips(run: RunConfig, shape: ModelShape, splits: list[str], max_clips: int | None) -> Clips | None:
    """Audio tokens of the manifest's clips of ``splits``; None before the dataset stage ran."""
    try:
        path = handover.manifest(run)
    except handover.StageOutputMissing:
        return None
    records = [r for r in load_manifest(path) if r.split in splits]
    records = records[:max_clips] if max_clips else records
    return Clips(len(records), sum(shape.audio_tokens(r.duration_s) for r in records), f"manifest {path}")


def estimate_clips(shape: ModelShape, n: int | None, seconds: float) -> Clips:
    if n is None:
        raise ConfigError("no manifest yet (the dataset stage has not run for this out_dir): give --clips N "
                          "(and --clip-seconds S, the mean clip length) for an estimate")
    return Clips(n, n * shape.audio_tokens(seconds), f"--clips {n} of {seconds:g} s")


def plan(run: RunConfig, clips: int | None = None, clip_seconds: float | None = None, disk_gb: float | None = None,
         calibration: Path = DEFAULT_CALIBRATION, forward_tflops: float | None = None,
         sae_tflops: float | None = None) -> tuple[Plan, list[str]]:
    """The figures of :class:`Plan` and the list of problems found (empty when the config is sound)."""
    model_cfg = run.section("model", ModelConfig)
    extract = run.section("extract", ExtractConfig)
    sae = run.section("sae", SaeSection)
    shape = meta_shape(model_cfg.name_or_path, model_cfg.family)
    problems = check_config(shape, extract, sae, run.section("lens", LensConfig))
    seconds = shape.window_s if clip_seconds is None else clip_seconds
    if clips is not None:  # an explicit estimate wins over the manifest
        stored = streamed = estimate_clips(shape, clips, seconds)
    else:
        stored = manifest_clips(run, shape, extract.splits, extract.max_clips) or estimate_clips(shape, None, seconds)
        streamed = manifest_clips(run, shape, sae.stream_splits, None) or stored
    tput = Throughput.from_smoke(calibration, shape).override(forward_tflops, sae_tflops)
    result = estimate(shape, extract, sae, run.section("score", ScoreConfig), stored, streamed, tput, disk_gb)
    return result, problems


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)
    p.add_argument("--clips", type=int, default=None,
                   help="number of clips, for an estimate before the dataset stage has written its manifest")
    p.add_argument("--clip-seconds", type=float, default=None,
                   help="mean clip length for --clips (default: the model's window, 30 s: an upper bound)")
    p.add_argument("--disk-gb", type=float, default=None, help="disk you have for the activation store, in GB")
    p.add_argument("--calibration", type=Path, default=DEFAULT_CALIBRATION,
                   help="bench/gpu_smoke.py JSON whose measured throughput turns FLOPs into GPU hours")
    p.add_argument("--forward-tflops", type=float, default=None, help="override the model's forward TFLOP/s")
    p.add_argument("--sae-tflops", type=float, default=None, help="override the SAE training TFLOP/s")


def main(args: argparse.Namespace) -> int:
    run = load_config(args)
    result, problems = plan(run, args.clips, args.clip_seconds, args.disk_gb, args.calibration, args.forward_tflops,
                            args.sae_tflops)
    print(format_plan(result, run))
    if problems:
        print("\nproblems (fix before running):")
        for line in problems:
            print(f"  - {line}")
        return 1
    print("\nchecks: layers in range, decoder layers resolved by the adapter, audio token and window consistent: OK")
    return 0
