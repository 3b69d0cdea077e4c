"""Training TopK SAEs on the activation store: one (layer, expansion) per call.

Single process or ``torchrun`` DDP (each rank a disjoint part of every global
batch; gradients averaged; rank 0 writes). The loss is the mean squared error per
element plus ``auxk_alpha`` x AuxK, both means over tokens, so a DDP run with W
ranks of batch_size/W tokens takes the same steps as one process with batch_size.

Practices of Gao et al. kept here (the rest are in :mod:`ard_core.sae`):

* inputs are multiplied by ``input_scale`` so that their mean norm is about
  sqrt(d_in); the factor is rounded to a power of two so that folding it into the
  weights on export (:mod:`ard_core.sae_formats`) is exact in every float format,
  which leaves the mean norm within a factor sqrt(2) of the target;
* b_dec starts at the geometric median (or mean) of a sample of scaled tokens;
* a latent is dead after ``dead_tokens_threshold`` tokens without firing, the
  threshold being capped at a fraction of the layer's tokens so that AuxK fires
  on small data too;
* Adam (fused kernel) with eps 6.25e-10, linear warm-up and a linear decay to 0
  over the last ``lr_decay_frac`` of the steps; bf16 autocast on CUDA, fp32 on CPU.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

from ard_core.config import ConfigError, to_dict
from ard_core.durable import atomic_path, crash_point, write_text
from ard_core.sae import ForwardOutput, Impl, SaeConfig, TopKSAE
from ard_core.sae_data import Dist, TokenSource
from ard_core.store import ActivationStore

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
TRAIN_FILE = "train.json"
LOG_FILE = "train_log.jsonl"


@dataclass
class SaeSection:
    """The ``[sae]`` table: the grid of SAEs to train and how to train them."""

    layers: list[int] = field(default_factory=lambda: [5, 16, 26])
    """0-based decoder layers (as in the activation store) to train SAEs on."""
    expansions: list[int] = field(default_factory=lambda: [4, 8, 16])
    """Expansion factors e: every layer gets one SAE with d_sae = e x d_model per factor."""
    k: int = 250
    """Latents kept per token by TopK (the paper's K)."""
    batch_size: int = 4096
    """Tokens per optimizer step, over all ranks together."""
    steps: int = 100_000
    """Optimizer steps per SAE."""
    lr: float = 1e-5
    """Adam learning rate after warm-up."""
    warmup_steps: int = 1000
    """Steps of linear learning-rate warm-up from 0."""
    lr_decay_frac: float = 0.2
    """Fraction of the steps at the end over which the learning rate decays linearly to 0."""
    auxk_alpha: float = 1 / 32
    """Weight of the AuxK loss on dead latents (Gao et al.)."""
    dead_tokens: int = 10_000_000
    """A latent unfired for this many training tokens is dead (feeds AuxK and dead_frac) ..."""
    dead_data_frac: float = 0.25
    """... capped at this fraction of the layer's stored tokens, so small data sees dead latents."""
    b_dec_init: str = "geometric_median"
    """'geometric_median' or 'mean' of a sample of (scaled) tokens."""
    init_sample_tokens: int = 65_536
    """Tokens sampled to set input_scale and b_dec."""
    impl: str = "auto"
    """'sparse' (K-latent decode, sparse backward), 'dense' (scatter reference) or 'auto' (timed)."""
    eval_tokens: int = 65_536
    """Tokens on which the final FVU and L0 are measured."""
    checkpoint_every: int = 1000
    """Steps between checkpoints (the last step always writes the finished SAE)."""
    log_every: int = 50
    """Steps between progress-bar and train_log.jsonl updates."""
    in_memory_max_gb: float = 8.0
    """Hold a layer's tokens in (GPU) memory when they take at most this much (float16), else stream."""
    buffer_tokens: int = 262_144
    """Shuffle-buffer size when streaming from disk."""
    bf16: bool = True
    """bf16 autocast on CUDA (CPU always trains in fp32)."""
    threads: int | None = None
    """CPU threads for torch while training; None keeps torch's default (all cores)."""

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"[sae].{key} = {getattr(self, key)!r}: {why}")

        if not self.layers or any(l < 0 for l in self.layers):
            raise bad("layers", "list the 0-based layers to train on, e.g. [1, 4, 6]")
        if not self.expansions or any(e < 1 for e in self.expansions):
            raise bad("expansions", "list positive expansion factors, e.g. [4, 8, 16]")
        for key in ("k", "batch_size", "steps", "dead_tokens", "init_sample_tokens", "eval_tokens",
                    "checkpoint_every", "log_every", "buffer_tokens"):
            if getattr(self, key) <= 0:
                raise bad(key, "must be a positive integer")
        if not self.lr > 0:
            raise bad("lr", "must be > 0 (the paper uses 1e-5)")
        if not 0 <= self.warmup_steps < self.steps:
            raise bad("warmup_steps", f"must be in 0..steps-1 (steps = {self.steps})")
        if not 0 <= self.lr_decay_frac < 1:
            raise bad("lr_decay_frac", "must be in [0, 1)")
        if self.auxk_alpha < 0:
            raise bad("auxk_alpha", "must be >= 0 (0 turns AuxK off)")
        if not 0 < self.dead_data_frac <= 1:
            raise bad("dead_data_frac", "must be in (0, 1]")
        if self.b_dec_init not in ("geometric_median", "mean"):
            raise bad("b_dec_init", "use 'geometric_median' or 'mean'")
        if self.impl not in ("auto", "sparse", "dense"):
            raise bad("impl", "use 'auto', 'sparse' or 'dense'")
        if self.threads is not None and self.threads < 1:
            raise bad("threads", "must be >= 1, or left out for torch's default")
        if self.in_memory_max_gb < 0:
            raise bad("in_memory_max_gb", "must be >= 0 (0 always streams)")

    def dead_threshold(self, n_tokens: int) -> int:
        return max(1, min(self.dead_tokens, int(self.dead_data_frac * n_tokens)))


class Metrics(NamedTuple):
    fvu: float
    l0: float
    dead_frac: float


class TrainResult(NamedTuple):
    sae_dir: Path
    cfg: SaeConfig
    metrics: Metrics
    steps: int
    tokens: int
    tokens_per_s: float
    impl: str


# -- initialisation ---------------------------------------------------------------------------
def power_of_two_scale(x: Tensor) -> float:
    """2**round(log2(sqrt(d) / mean ||x||)): brings the mean norm near sqrt(d), exactly foldable."""
    mean_norm = float(x.norm(dim=1).mean())
    if not mean_norm > 0:
        raise ValueError("cannot scale activations whose mean norm is 0 (is the store empty or all zeros?)")
    return float(2.0 ** round(math.log2(math.sqrt(x.shape[1]) / mean_norm)))


def geometric_median(x: Tensor, iters: int = 100, tol: float = 1e-6) -> Tensor:
    """Weiszfeld's algorithm: the point minimising the summed distance to the rows of x."""
    x = x.double()
    y = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - y).norm(dim=1).clamp_min(1e-12)
        y_new = (w[:, None] * x).sum(0) / w.sum()
        if (y_new - y).norm() <= tol * y.norm().clamp_min(1e-12):
            y = y_new
            break
        y = y_new
    return y.float()


def lr_factor(step: int, s: SaeSection) -> float:
    """Multiplier of s.lr at ``step``: linear warm-up, constant, linear decay to 0."""
    if step < s.warmup_steps:
        return (step + 1) / s.warmup_steps
    decay_steps = int(s.lr_decay_frac * s.steps)
    if decay_steps and step >= s.steps - decay_steps:
        return max(0.0, (s.steps - step) / decay_steps)
    return 1.0


def make_optimizer(sae: TopKSAE, lr: float) -> torch.optim.Adam:
    """Adam with Gao et al.'s eps; the fused kernel (CUDA, and CPU since torch 2.4: ~4x faster there)."""
    try:
        return torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999), eps=6.25e-10, fused=True)
    except RuntimeError:  # a device/dtype without a fused kernel
        return torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999), eps=6.25e-10, foreach=True)


def choose_impl(sae: TopKSAE, x: Tensor, repeats: int = 2, autocast: bool = False) -> tuple[Impl, dict[str, float]]:
    """Time forward+backward of both paths on one batch; the faster one wins.

    The sparse path wins when d_sae/K is large; at small d_sae/K the dense GEMMs
    beat its gathers and sparse products.
    """
    timings: dict[str, float] = {}
    saved = sae.impl
    for impl in ("sparse", "dense"):
        sae.impl = impl  # type: ignore[assignment]
        best = math.inf
        for _ in range(repeats + 1):  # the first run warms up
            _sync(x.device)
            t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                out = sae(x)
            out.mse.backward()
            _sync(x.device)
            best = min(best, time.perf_counter() - t0)
        timings[impl] = best
    sae.impl = saved
    sae.zero_grad(set_to_none=True)
    return ("sparse" if timings["sparse"] <= timings["dense"] else "dense"), timings


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- evaluation ------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(sae: TopKSAE, x: Tensor, chunk: int = 4096) -> tuple[float, float]:
    """(FVU, L0) of raw tokens x (n, d): residual energy over the variance around x's mean."""
    mean = x.double().mean(0)
    resid = var = 0.0
    l0 = 0.0
    for i in range(0, len(x), chunk):
        xb = x[i : i + chunk]
        acts, idx = sae.encode(xb)
        x_hat = sae.decode(acts, idx)
        resid += float((xb.double() - x_hat.double()).pow(2).sum())
        var += float((xb.double() - mean).pow(2).sum())
        l0 += float((acts > 0).sum())
    return resid / max(var, 1e-30), l0 / len(x)


# -- training ----------------------------------------------------------------------------------
class DeadTracker:
    """Tokens since each latent last fired (act > 0), summed over ranks; dead = >= threshold."""

    def __init__(self, d_sae: int, threshold: int, device: torch.device) -> None:
        self.threshold = threshold
        self.since_fired = torch.zeros(d_sae, dtype=torch.int64, device=device)
        self.mask = self.since_fired >= threshold  # (d_sae,) bool

    @torch.no_grad()
    def update(self, out: ForwardOutput, global_tokens: int) -> None:
        fired = torch.zeros_like(self.since_fired, dtype=torch.int32)
        fired[out.indices[out.acts > 0]] = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(fired, op=dist.ReduceOp.MAX)
        self.since_fired += global_tokens
        self.since_fired[fired.bool()] = 0
        self.mask = self.since_fired >= self.threshold

    def fraction(self) -> float:
        return float(self.mask.float().mean())


def train_step(model: torch.nn.Module, sae: TopKSAE, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler | None,
               x: Tensor, dead_mask: Tensor | None, auxk_alpha: float, autocast: bool = False) -> ForwardOutput:
    """One optimizer step on scaled tokens x; ``model`` is ``sae`` or its DDP wrapper."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        out: ForwardOutput = model(x, dead_mask)
    loss = out.mse + auxk_alpha * out.auxk if dead_mask is not None else out.mse
    opt.zero_grad(set_to_none=True)
    loss.backward()
    sae.remove_parallel_decoder_grad()
    opt.step()
    if sched is not None:
        sched.step()
    sae.normalize_decoder()
    return out


def train_sae(section: SaeSection, store: ActivationStore, layer: int, expansion: int, sae_dir: Path, *,
              model_name: str, device: torch.device, seed: int = 0, progress: bool = True) -> TrainResult:
    """Train (or resume) the SAE of (layer, expansion) and save it to ``sae_dir``."""
    d = Dist.current()
    sae_dir = Path(sae_dir)
    d_in = store.d_model
    d_sae = expansion * d_in
    if section.k > d_sae:
        raise ConfigError(f"[sae].k = {section.k} exceeds d_sae = {d_sae} (layer {layer}, expansion {expansion}); "
                          "lower k or the smallest expansion")
    src = TokenSource(store, layer, section.batch_size, seed, device, section.in_memory_max_gb,
                      section.buffer_tokens, d)
    threshold = section.dead_threshold(src.n_tokens)
    ckpt_path = sae_dir / "checkpoint" / CHECKPOINT_FILE
    ckpt = torch.load(ckpt_path, map_location=device, weights_only=True) if ckpt_path.exists() else None

    if ckpt is not None:
        cfg = SaeConfig(**ckpt["cfg"])
        if (cfg.d_in, cfg.d_sae, cfg.k) != (d_in, d_sae, section.k):
            raise ConfigError(f"checkpoint {ckpt_path} has d_in/d_sae/k = {(cfg.d_in, cfg.d_sae, cfg.k)}, the config "
                              f"asks for {(d_in, d_sae, section.k)}; delete {ckpt_path.parent} to start over")
        sae = TopKSAE(cfg, device=device)
        sae.load_state_dict(ckpt["model"])
    else:
        sample = src.sample(section.init_sample_tokens, seed=seed * 100_003 + 7_919)
        scale = power_of_two_scale(sample)
        cfg = SaeConfig(d_in=d_in, d_sae=d_sae, k=section.k, input_scale=scale, dead_tokens_threshold=threshold,
                        model=model_name, layer=layer)
        sae = TopKSAE(cfg, device=device)
        sae.reset_parameters(torch.Generator().manual_seed(seed * 1_000_003 + layer * 1009 + expansion))
        with torch.no_grad():
            xs = sample * scale
            sae.b_dec.copy_(geometric_median(xs) if section.b_dec_init == "geometric_median" else xs.mean(0))
    if d.world > 1:  # every rank must hold rank 0's init (its sample may differ when streaming)
        for p in sae.parameters():
            dist.broadcast(p.data, 0)
        cfg.input_scale = _broadcast_float(cfg.input_scale, device)

    opt = make_optimizer(sae, section.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, section))
    dead = DeadTracker(d_sae, threshold, device)
    step = 0
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        dead.since_fired.copy_(ckpt["since_fired"])
        dead.mask = dead.since_fired >= threshold
        step = int(ckpt["step"])
        if d.main:
            log.info("resuming %s from step %d", sae_dir.name, step)

    batches = src.batches(step)
    autocast = device.type == "cuda" and section.bf16
    impl: Impl = section.impl  # type: ignore[assignment]
    if section.impl == "auto" and ckpt is not None and ckpt.get("impl") in ("sparse", "dense"):
        # the timed choice may differ this time; the other path's float sums would break bit-exact resume
        impl = ckpt["impl"]
    elif section.impl == "auto":
        impl, timings = choose_impl(sae, next(src.batches(0)) * cfg.input_scale, autocast=autocast)
        if d.world > 1:
            impl = "sparse" if _broadcast_float(float(impl == "sparse"), device) else "dense"
        if d.main:
            log.info("%s: impl=%s (fwd+bwd sparse %.4fs, dense %.4fs)", sae_dir.name, impl, timings["sparse"], timings["dense"])
    sae.impl = impl
    model: torch.nn.Module = sae
    if d.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(sae, device_ids=[device.index] if device.type == "cuda" else None)
    bar = _progress(section.steps, step, sae_dir.name, enabled=progress and d.main)
    if d.main:
        sae_dir.mkdir(parents=True, exist_ok=True)
    if d.main and step:
        _truncate_log(sae_dir / LOG_FILE, step)  # rows logged after the checkpoint are logged again
    log_f = open(sae_dir / LOG_FILE, "a" if step else "w") if d.main else None
    window: list[Tensor] = []
    t_start, tokens_done = time.perf_counter(), 0
    t_log, tokens_log = t_start, 0
    try:
        while step < section.steps:
            x = next(batches) * cfg.input_scale
            out = train_step(model, sae, opt, sched, x, dead.mask if section.auxk_alpha > 0 else None,
                             section.auxk_alpha, autocast)
            dead.update(out, src.global_batch)
            with torch.no_grad():
                window.append(torch.stack([out.fvu.float(), (out.acts > 0).sum(1).float().mean(), out.auxk.float()]))
            step += 1
            tokens_done += src.global_batch
            tokens_log += src.global_batch
            bar.update(1)
            if step % section.log_every == 0 or step == section.steps:
                stats = torch.stack(window).mean(0)
                if d.world > 1:
                    dist.all_reduce(stats)
                    stats /= d.world
                now = time.perf_counter()
                fvu, l0, auxk = (float(v) for v in stats)
                row = {"step": step, "fvu": fvu, "l0": l0, "auxk": auxk, "dead_frac": dead.fraction(),
                       "lr": sched.get_last_lr()[0], "tokens_per_s": tokens_log / max(now - t_log, 1e-9)}
                bar.set_postfix(fvu=f"{fvu:.3f}", l0=f"{l0:.1f}", dead=f"{row['dead_frac']:.3f}",
                                tok_s=f"{row['tokens_per_s']:.0f}")
                if log_f:
                    log_f.write(json.dumps(row) + "\n")
                    log_f.flush()
                window, t_log, tokens_log = [], now, 0
            if step % section.checkpoint_every == 0 and step < section.steps and d.main:
                _save_checkpoint(ckpt_path, sae, opt, sched, dead.since_fired, step, impl)
                crash_point("checkpoint")
    finally:
        bar.close()
        if log_f:
            log_f.close()
    seconds = time.perf_counter() - t_start
    tokens_per_s = tokens_done / max(seconds, 1e-9)

    dead_frac = dead.fraction()
    fvu, l0 = evaluate(sae, src.sample(section.eval_tokens, seed=seed * 100_003 + 104_729))
    metrics = Metrics(fvu=fvu, l0=l0, dead_frac=dead_frac)
    if d.main:
        sae.save(sae_dir)
        # train.json marks the SAE finished (finished_run), so it is written last and atomically
        write_text(sae_dir / TRAIN_FILE, json.dumps({
            "section": to_dict(section), "layer": layer, "expansion": expansion, "steps": step,
            "tokens": step * src.global_batch, "tokens_per_s_last_run": tokens_per_s, "impl": impl,
            "world_size": d.world, "device": str(device), "data_in_memory": src.in_memory,
            "store_tokens": src.n_tokens, "metrics": metrics._asdict(), "torch": torch.__version__,
        }, indent=2) + "\n")
        remove_checkpoint(sae_dir)
    if d.world > 1:
        dist.barrier()
    return TrainResult(sae_dir, cfg, metrics, step, step * src.global_batch, tokens_per_s, impl)


def _save_checkpoint(path: Path, sae: TopKSAE, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
                     since_fired: Tensor, step: int, impl: str) -> None:
    with atomic_path(path) as tmp:
        torch.save({"cfg": to_dict(sae.cfg), "model": sae.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "since_fired": since_fired, "step": step, "impl": impl}, tmp)


def remove_checkpoint(sae_dir: Path) -> None:
    """Delete ``sae_dir/checkpoint/`` (its file and any ``.tmp`` a killed save left)."""
    folder = Path(sae_dir) / "checkpoint"
    if folder.is_dir():
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()


def _truncate_log(path: Path, step: int) -> None:
    """Keep the rows of ``path`` up to ``step`` (a killed run may have logged past its checkpoint,
    and may have died mid-line)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("step", step + 1) <= step:
            keep.append(line)
    write_text(path, "".join(l + "\n" for l in keep))


def _broadcast_float(value: float, device: torch.device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return float(t.item())


def _progress(total: int, initial: int, desc: str, enabled: bool):  # noqa: ANN202 - tqdm or a no-op
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, mininterval=1.0)


def finished_run(sae_dir: Path) -> dict | None:
    """The train.json of a finished SAE in ``sae_dir``, or None."""
    train, cfg = sae_dir / TRAIN_FILE, sae_dir / "cfg.json"
    if not (train.is_file() and cfg.is_file() and (sae_dir / "sae.safetensors").is_file()):
        return None
    try:
        return json.loads(train.read_text())
    except json.JSONDecodeError:  # cut short by a kill before train.json was written atomically
        log.warning("%s is not valid JSON; treating %s as unfinished", train, sae_dir.name)
        return None
