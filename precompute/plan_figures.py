"""The figures ``python -m precompute plan`` prints: disk, memory, tokens and GPU hours of a run.

Every figure is arithmetic on the config and the model's shapes (:class:`ModelShape`), so the
tests check each one against a hand computation. Two constants come from measurements, and
say so: the throughput that turns FLOPs into hours (``bench/gpu_smoke.py`` on one H200,
random-init 7B, ``bench/results/gpu_smoke-h200.json``), and the catalog's bytes per example
row (``bench/catalog_scale.py``: 336 MiB for 2.29M example rows, everything else included).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ard_core.config import RunConfig
from ard_core.models.meta import ModelShape, meta_shape
from ard_core.sae.train import SaeSection
from precompute.configs import ExtractConfig, ScoreConfig

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CALIBRATION = REPO / "bench" / "results" / "gpu_smoke-h200.json"
PROMPT_TOKENS = 35
"""Text positions around the audio in the caption prompt (gpu_smoke: 785 positions for 750 audio tokens)."""
CATALOG_BYTES_PER_EXAMPLE_ROW = 154
"""bench/catalog_scale.py: 336 MiB / 2.29M example rows (features, scores and pages included)."""
SAE_WORK_FACTOR = 5
"""Working memory of one SAE step, in (batch x d_sae) float32 matrices: gpu_smoke's peak at d_sae 32,768
and batch 4,096 was 2.6 GiB above the weights, gradients and Adam state."""
STREAM_FORWARD_GIB = 2.0
"""GPU memory of a 7B forward pass of 8 clips of 30 s beyond the weights (gpu_smoke: peak 17.65 GiB, weights
15.64); scaled by d_model x layers for other models."""
GB, GIB = 1e9, 2**30


class Clips(NamedTuple):
    """A set of clips as the plan counts them."""

    n: int
    audio_tokens: int
    """Audio positions over all clips (per layer)."""
    source: str
    """Where the counts came from (the manifest, or --clips)."""


class Throughput(NamedTuple):
    """Sustained TFLOP/s of the model's forward pass and of SAE training, and where they were measured."""

    forward_tflops: float
    sae_tflops: float
    source: str

    @classmethod
    def from_smoke(cls, path: Path, shape: ModelShape) -> "Throughput":
        """The rates ``bench/gpu_smoke.py`` achieved, under the same FLOP formulas as the plan."""
        data = json.loads(Path(path).read_text())
        ex, tr = data["extract"], data["train_sae"]
        measured = data["model"]["name"].removesuffix("-random")  # the model the smoke test ran, not the planned one
        if shape.name != measured and shape.params != data["model"]["parameters"]:
            shape = meta_shape(measured)
        fwd = ex["clips"] * forward_flops(shape, ex["tokens_per_clip"]) / ex["seconds"] / 1e12
        sae = 6 * tr["d_in"] * tr["d_sae"] * tr["tokens_per_s"] / 1e12
        return cls(fwd, sae, f"{data.get('gpu', '?')}, measured by bench/gpu_smoke.py ({Path(path).name})")

    def override(self, forward: float | None, sae: float | None) -> "Throughput":
        if forward is None and sae is None:
            return self
        return Throughput(forward or self.forward_tflops, sae or self.sae_tflops, "given on the command line")


def forward_flops(shape: ModelShape, audio_tokens: float) -> float:
    """One clip's forward: 2 x decoder parameters x positions, plus the audio encoder on its whole window."""
    return (2 * shape.text_flop_params * (audio_tokens + PROMPT_TOKENS)
            + 2 * shape.audio_params * shape.encoder_positions)


@dataclass
class SaeFigures:
    layer: int
    expansion: int
    d_sae: int
    params: int
    state_gib: float
    """fp32 weights + gradients + Adam moments (16 bytes per parameter)."""
    work_gib: float
    """Working memory of a step (SAE_WORK_FACTOR x batch x d_sae float32)."""
    train_flops: float
    """6 x d x d_sae per token, over steps x batch tokens."""


@dataclass
class Option:
    """One way to feed the SAEs ([sae].source)."""

    source: str
    disk_gb: float
    data: Clips
    passes: float
    gpu_gib: float
    gpu_hours: float
    fits: bool | None
    """Within --disk-gb (None when no budget was given)."""


@dataclass
class Plan:
    shape: ModelShape
    layers: list[int]
    store_dtype: str
    stored: Clips
    store_gb_per_layer: float
    store_gb: float
    layer_gib_in_memory: float
    in_memory: bool
    in_memory_max_gb: float
    saes: list[SaeFigures]
    tokens_per_sae: int
    catalog_gb: float
    throughput: Throughput
    disk_gb: float | None
    options: list[Option] = field(default_factory=list)

    def option(self, source: str) -> Option:
        return next(o for o in self.options if o.source == source)


def sae_figures(shape: ModelShape, sae: SaeSection) -> list[SaeFigures]:
    out = []
    for layer in sae.layers:
        for e in sae.expansions:
            d_sae = e * shape.d_model
            params = 2 * shape.d_model * d_sae + d_sae + shape.d_model
            tokens = sae.steps * sae.batch_size
            out.append(SaeFigures(layer, e, d_sae, params, 16 * params / GIB,
                                  SAE_WORK_FACTOR * 4 * sae.batch_size * d_sae / GIB,
                                  6 * shape.d_model * d_sae * tokens))
    return out


def catalog_gb(shape: ModelShape, saes: list[SaeFigures], score: ScoreConfig, n_clips: int) -> float:
    """Rows the score stage writes (examples of every feature for 'ard', of the top C for the
    baselines), at the bytes per row catalog_scale measured, plus one CLAP embedding per clip."""
    rows = 0
    for s in saes:
        top = min(score.top_c, s.d_sae)
        rows += 2 * score.p * (s.d_sae + (len(score.methods) - 1) * top + score.random_seeds * top)
        rows += 2 * score.p * min(score.top_c, shape.d_model) if score.poly else 0
    return (rows * CATALOG_BYTES_PER_EXAMPLE_ROW + n_clips * (1024 * 4 + 400)) / GB


def estimate(shape: ModelShape, extract: ExtractConfig, sae: SaeSection, score: ScoreConfig, stored: Clips,
             streamed: Clips, tput: Throughput, disk_gb: float | None) -> Plan:
    """Every figure of the plan for these sections and clips."""
    dtype_bytes = 2 if extract.store_dtype == "float16" else 4
    per_layer = stored.audio_tokens * (shape.d_model * dtype_bytes + 4) / GB  # + the int32 position per token
    layer_gib = stored.audio_tokens * shape.d_model * 2 / GIB  # held as float16 when in memory
    saes = sae_figures(shape, sae)
    tokens = sae.steps * sae.batch_size
    plan = Plan(shape, list(extract.layers), extract.store_dtype, stored, per_layer, per_layer * len(extract.layers),
                layer_gib, stored.audio_tokens * shape.d_model * 2 <= sae.in_memory_max_gb * GB,
                sae.in_memory_max_gb, saes, tokens, catalog_gb(shape, saes, score, stored.n), tput, disk_gb)
    sae_hours = sum(s.train_flops for s in saes) / (tput.sae_tflops * 1e12) / 3600
    extract_hours = stored.n * forward_flops(shape, stored.audio_tokens / max(stored.n, 1)) / (
        tput.forward_tflops * 1e12) / 3600
    biggest = max(saes, key=lambda s: s.state_gib + s.work_gib)
    store_gpu = biggest.state_gib + biggest.work_gib + (layer_gib if plan.in_memory else 0.0)
    plan.options.append(Option("store", plan.store_gb, stored, tokens / max(stored.audio_tokens, 1), store_gpu,
                               extract_hours + sae_hours, None if disk_gb is None else plan.store_gb <= disk_gb))
    # stream: one forward stream feeds every SAE at once; the store still holds [extract].splits for score
    per_clip = streamed.audio_tokens / max(streamed.n, 1)
    stream_fwd = tokens / max(per_clip, 1) * forward_flops(shape, per_clip) / (tput.forward_tflops * 1e12) / 3600
    # the model, every SAE's state at once, one step's working memory (SAEs step in turn), a forward batch;
    # the shuffle buffers live in host memory
    stream_gpu = (shape.params * 2 / GIB + sum(s.state_gib for s in saes) + max(s.work_gib for s in saes)
                  + STREAM_FORWARD_GIB * sae.stream_batch_clips / 8 * shape.d_model * shape.n_layers / (4096 * 32))
    plan.options.append(Option("stream", plan.store_gb, streamed, tokens / max(streamed.audio_tokens, 1), stream_gpu,
                               extract_hours + stream_fwd + sae_hours,
                               None if disk_gb is None else plan.store_gb <= disk_gb))
    return plan


def recommendation(plan: Plan, sae: SaeSection) -> str:
    store, stream = plan.option("store"), plan.option("stream")
    if plan.disk_gb is None:
        return f"configured: [sae].source = '{sae.source}'; give --disk-gb to check the store against your disk"
    if store.fits:
        more = stream.gpu_hours - store.gpu_hours
        return (f"the store fits in {plan.disk_gb:g} GB: keep [sae].source = 'store' (stream would cost "
                f"{more:.1f} more GPU hours of forward passes)")
    return (f"the store ({plan.store_gb:,.0f} GB) does not fit in {plan.disk_gb:g} GB. Score and the app read the "
            "store of [extract].splits in both modes: narrow [extract].splits to the probing clips, and train with "
            f"--set sae.source=stream on [sae].stream_splits {sae.stream_splits} ({stream.data.n:,} clips)")


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies under it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def format_plan(plan: Plan, run: RunConfig) -> str:
    s, t = plan.shape, plan.throughput
    sae = run.section("sae", SaeSection)
    lines = [
        f"model   {s.name}: {s.params:,} parameters ({s.params * 2 / GIB:.2f} GiB in bf16), {s.n_layers} decoder "
        f"layers of width {s.d_model}; config {_shown(s.config_dir)}",
        f"        audio window {s.window_s:g} s -> at most {s.max_audio_tokens} audio tokens per clip "
        f"(25 per second); audio token id {s.audio_token_id}",
        f"clips   {plan.stored.n:,} ({plan.stored.source}), {plan.stored.audio_tokens:,} audio tokens per layer "
        f"({plan.stored.audio_tokens / max(plan.stored.n, 1):.0f} per clip)",
        f"store   {plan.store_gb_per_layer:,.1f} GB per layer x {len(plan.layers)} layers {plan.layers} = "
        f"{plan.store_gb:,.1f} GB ({plan.store_dtype}; {s.max_audio_tokens * s.d_model * (2 if plan.store_dtype == 'float16' else 4) / 2**20:.1f}"
        f" MiB per {s.window_s:g} s clip and layer)",
        f"        a layer in memory takes {plan.layer_gib_in_memory:,.1f} GiB (float16): "
        + ("held in memory" if plan.in_memory else "streamed from disk")
        + f" under [sae].in_memory_max_gb = {plan.in_memory_max_gb:g}",
        f"SAEs    {len(plan.saes)}: {plan.tokens_per_sae:,} tokens each ({sae.steps:,} steps x {sae.batch_size:,}), K = {sae.k}",
    ]
    for f in plan.saes:
        lines.append(f"        l{f.layer} e{f.expansion}: d_sae {f.d_sae:,}, {f.params:,} parameters, "
                     f"{f.state_gib:.1f} GiB weights+grads+Adam + {f.work_gib:.1f} GiB per step, "
                     f"{f.train_flops / 1e15:,.0f} PFLOP")
    lines.append(f"catalog ~{plan.catalog_gb:.2f} GB (rows of {len(plan.saes)} SAEs, C = "
                 f"{run.section('score', ScoreConfig).top_c}, p = {run.section('score', ScoreConfig).p})")
    lines.append(f"GPU     throughput {t.forward_tflops:.0f} TFLOP/s forward, {t.sae_tflops:.0f} TFLOP/s SAE ({t.source})")
    for o in plan.options:
        fit = "" if o.fits is None else ("  fits" if o.fits else "  does NOT fit")
        lines.append(f"{'[sae].source = ' + repr(o.source):<26} disk {o.disk_gb:,.1f} GB{fit}; {o.passes:.2f} passes over "
                     f"{o.data.audio_tokens:,} tokens ({o.data.source}); ~{o.gpu_hours:,.1f} GPU hours; "
                     f"~{o.gpu_gib:.0f} GiB per GPU")
    lines.append("        (stream: the model on the GPU with every SAE of the grid at once, the shuffle buffers in host "
                 f"memory, {2 * sae.buffer_tokens * s.d_model * len(sae.layers) / GIB:.1f} GiB; the store of "
                 "[extract].splits is still written for score and the app)")
    lines.append(recommendation(plan, sae))
    return "\n".join(lines)
