"""Gao et al.'s TopK SAE training recipe, piece by piece (the model-side practices are in
:mod:`ard_core.sae.model`; :mod:`ard_core.sae.train` runs them in order):

* inputs are multiplied by ``input_scale`` so that their mean norm is about
  sqrt(d_in); the factor is rounded to a power of two so that folding it into the
  weights on export (:mod:`ard_core.sae.formats`) is exact in every float format,
  which leaves the mean norm within a factor sqrt(2) of the target;
* b_dec starts at the geometric median (or mean) of a sample of scaled tokens;
* a latent is dead after ``dead_tokens_threshold`` tokens without firing, the
  threshold being capped at a fraction of the layer's tokens so that AuxK fires
  on small data too;
* Adam (fused kernel) with eps 6.25e-10, linear warm-up and a linear decay to 0
  over the last ``lr_decay_frac`` of the steps; bf16 autocast on CUDA, fp32 on CPU.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor

from ard_core.sae.model import ForwardOutput, Impl, TopKSAE

if TYPE_CHECKING:  # train.py imports this module; the section is only a type here
    from ard_core.sae.train import SaeSection


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
