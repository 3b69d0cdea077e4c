"""Training TopK SAEs on the activation store: one (layer, expansion) per call.

A run reads the way EleutherAI sparsify's Trainer does: :func:`init_or_resume` builds a
:class:`TrainState` (a fresh SAE initialised from the data, or the last checkpoint's
weights, optimizer, schedule and dead counter), :func:`fit` takes the optimizer steps,
logging and checkpointing on the way, and :func:`finish` measures the SAE and saves it;
:func:`train_sae` calls the three in order. A resumed run takes bit for bit the steps an
uninterrupted one takes. The recipe's pieces (scaling, init, schedule, optimizer, the
dead-latent counter, one step) are in :mod:`ard_core.sae.recipe`; the run's files in
:mod:`ard_core.sae.checkpoint`.

Single process or ``torchrun`` DDP (each rank a disjoint part of every global
batch; gradients averaged; rank 0 writes). The loss is the mean squared error per
element plus ``auxk_alpha`` x AuxK, both means over tokens, so a DDP run with W
ranks of batch_size/W tokens takes the same steps as one process with batch_size.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TextIO

import torch
import torch.distributed as dist
from torch import Tensor

from ard_core.config import ConfigError, to_dict
from ard_core.durable import crash_point
from ard_core.sae.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    open_log,
    remove_checkpoint,
    save_checkpoint,
    write_train_json,
)
from ard_core.sae.data import Dist, Tokens, TokenSource
from ard_core.sae.model import Impl, SaeConfig, TopKSAE
from ard_core.sae.section import SaeSection
from ard_core.sae.recipe import (
    DeadTracker,
    choose_impl,
    evaluate,
    geometric_median,
    lr_factor,
    make_optimizer,
    power_of_two_scale,
    train_step,
)
from ard_core.store import ActivationStore

log = logging.getLogger(__name__)


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


# -- one SAE: init-or-resume, fit, finish ----------------------------------------------------------
@dataclass
class TrainState:
    """One SAE's training in progress: built by :func:`init_or_resume`, advanced by :func:`fit`,
    measured and saved by :func:`finish`."""

    section: SaeSection
    sae_dir: Path
    layer: int
    expansion: int
    seed: int
    device: torch.device
    dist: Dist
    src: Tokens
    sae: TopKSAE
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    dead: DeadTracker
    step: int
    """Optimizer steps taken so far (the checkpoint's step on resume)."""
    impl: Impl
    """Forward path of this run; a resumed run keeps its checkpoint's (the other path rounds differently)."""
    tokens_per_s: float = 0.0
    """Throughput of this process's fit() (a resumed run counts only the steps it took)."""

    @property
    def autocast(self) -> bool:
        """bf16 autocast on CUDA when asked for; CPU always trains in fp32."""
        return self.device.type == "cuda" and self.section.bf16


def init_or_resume(section: SaeSection, store: ActivationStore, layer: int, expansion: int, sae_dir: Path, *,
                   model_name: str, device: torch.device, seed: int = 0) -> TrainState:
    """The state saved at the last checkpoint in ``sae_dir``, or a fresh SAE initialised from the data."""
    src = TokenSource(store, layer, section.batch_size, seed, device, section.in_memory_max_gb,
                      section.buffer_tokens, Dist.current())
    return state_for(section, src, store.d_model, layer, expansion, sae_dir, model_name=model_name, device=device,
                     seed=seed)


def state_for(section: SaeSection, src: Tokens, d_in: int, layer: int, expansion: int, sae_dir: Path, *,
              model_name: str, device: torch.device, seed: int = 0) -> TrainState:
    """:func:`init_or_resume` on any token source (the store's :class:`TokenSource`, or a layer of
    :class:`ard_core.sae.stream.ActivationStream`)."""
    d = Dist.current()
    sae_dir = Path(sae_dir)
    d_sae = expansion * d_in
    if section.k > d_sae:
        raise ConfigError(f"[sae].k = {section.k} exceeds d_sae = {d_sae} (layer {layer}, expansion {expansion}); "
                          "lower k or the smallest expansion")
    threshold = section.dead_threshold(src.n_tokens)
    ckpt = load_checkpoint(sae_dir, device)
    if ckpt is not None:
        sae = _sae_from_checkpoint(ckpt, sae_dir, d_in, d_sae, section.k, device)
    else:
        sae = _init_from_data(section, src, d_in, layer, expansion, model_name, seed, device)
    if d.world > 1:  # every rank must hold rank 0's init (its sample may differ when streaming)
        for p in sae.parameters():
            dist.broadcast(p.data, 0)
        sae.cfg.input_scale = _broadcast_float(sae.cfg.input_scale, device)

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
    state = TrainState(section, sae_dir, layer, expansion, seed, device, d, src, sae, opt, sched, dead, step,
                       impl=section.impl)  # type: ignore[arg-type]  # 'auto' is resolved next
    state.impl = sae.impl = _pick_impl(state, None if ckpt is None else ckpt.get("impl"))
    return state


def _sae_from_checkpoint(ckpt: dict, sae_dir: Path, d_in: int, d_sae: int, k: int, device: torch.device) -> TopKSAE:
    cfg = SaeConfig(**ckpt["cfg"])
    if (cfg.d_in, cfg.d_sae, cfg.k) != (d_in, d_sae, k):
        path = checkpoint_path(sae_dir)
        raise ConfigError(f"checkpoint {path} has d_in/d_sae/k = {(cfg.d_in, cfg.d_sae, cfg.k)}, the config "
                          f"asks for {(d_in, d_sae, k)}; delete {path.parent} to start over")
    sae = TopKSAE(cfg, device=device)
    sae.load_state_dict(ckpt["model"])
    return sae


def _init_from_data(section: SaeSection, src: Tokens, d_in: int, layer: int, expansion: int, model_name: str,
                    seed: int, device: torch.device) -> TopKSAE:
    """A new SAE: input_scale from a sample of the layer's tokens, seeded unit-norm decoder rows
    (encoder = their transpose), b_dec at the scaled sample's geometric median (or mean)."""
    sample = src.sample(section.init_sample_tokens, seed=seed * 100_003 + 7_919)
    cfg = SaeConfig(d_in=d_in, d_sae=expansion * d_in, k=section.k, input_scale=power_of_two_scale(sample),
                    dead_tokens_threshold=section.dead_threshold(src.n_tokens), model=model_name, layer=layer)
    sae = TopKSAE(cfg, device=device)
    sae.reset_parameters(torch.Generator().manual_seed(seed * 1_000_003 + layer * 1009 + expansion))
    with torch.no_grad():
        xs = sample * cfg.input_scale
        sae.b_dec.copy_(geometric_median(xs) if section.b_dec_init == "geometric_median" else xs.mean(0))
    return sae


def _pick_impl(state: TrainState, checkpoint_impl: str | None) -> Impl:
    """[sae].impl, or for 'auto' the checkpoint's path on resume, else the faster path timed now."""
    section, d = state.section, state.dist
    if section.impl != "auto":
        return section.impl  # type: ignore[return-value]
    if checkpoint_impl in ("sparse", "dense"):
        # the timed choice may differ this time; the other path's float sums would break bit-exact resume
        return checkpoint_impl  # type: ignore[return-value]
    x = state.src.sample(state.src.global_batch, seed=state.seed * 100_003 + 3) * state.sae.cfg.input_scale
    impl, timings = choose_impl(state.sae, x, autocast=state.autocast)
    if d.world > 1:
        impl = "sparse" if _broadcast_float(float(impl == "sparse"), state.device) else "dense"
    if d.main:
        log.info("%s: impl=%s (fwd+bwd sparse %.4fs, dense %.4fs)", state.sae_dir.name, impl, timings["sparse"],
                 timings["dense"])
    return impl


class StepLoop:
    """One SAE's optimizer steps, one batch at a time, with its progress bar, log rows and checkpoints.

    :func:`fit` drives it from the SAE's own token source; :mod:`ard_core.sae.stream` drives the
    loops of every SAE of the grid from one stream of forward passes.
    """

    def __init__(self, state: TrainState, progress: bool = True) -> None:
        self.state = state
        d, sae = state.dist, state.sae
        self.model: torch.nn.Module = sae
        if d.world > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                sae, device_ids=[state.device.index] if state.device.type == "cuda" else None)
        self.bar = _progress(state.section.steps, state.step, state.sae_dir.name, enabled=progress and d.main)
        self.log_f = open_log(state.sae_dir, state.step) if d.main else None
        self.window: list[Tensor] = []
        self.t_start, self.tokens_done = time.perf_counter(), 0
        self.t_log, self.tokens_log = self.t_start, 0

    def step(self, x: Tensor) -> None:
        """One optimizer step on this rank's (batch, d) tokens; logs every log_every, checkpoints every checkpoint_every."""
        state, section, sae = self.state, self.state.section, self.state.sae
        x = x * sae.cfg.input_scale
        out = train_step(self.model, sae, state.opt, state.sched, x,
                         state.dead.mask if section.auxk_alpha > 0 else None, section.auxk_alpha, state.autocast)
        state.dead.update(out, state.src.global_batch)
        with torch.no_grad():
            self.window.append(torch.stack([out.fvu.float(), (out.acts > 0).sum(1).float().mean(), out.auxk.float()]))
        state.step += 1
        self.tokens_done += state.src.global_batch
        self.tokens_log += state.src.global_batch
        self.bar.update(1)
        if state.step % section.log_every == 0 or state.step == section.steps:
            now = time.perf_counter()
            _log_window(state, self.window, self.tokens_log / max(now - self.t_log, 1e-9), self.bar, self.log_f)
            self.window, self.t_log, self.tokens_log = [], now, 0
        if state.step % section.checkpoint_every == 0 and state.step < section.steps and state.dist.main:
            save_checkpoint(state.sae_dir, sae, state.opt, state.sched, state.dead.since_fired, state.step, state.impl)
            crash_point("checkpoint")

    def close(self) -> None:
        self.bar.close()
        if self.log_f:
            self.log_f.close()
        self.state.tokens_per_s = self.tokens_done / max(time.perf_counter() - self.t_start, 1e-9)


def fit(state: TrainState, progress: bool = True) -> None:
    """Optimizer steps from ``state.step`` to [sae].steps on the SAE's own token source."""
    batches = state.src.batches(state.step)
    loop = StepLoop(state, progress)
    try:
        while state.step < state.section.steps:
            loop.step(next(batches))
    finally:
        loop.close()


def _log_window(state: TrainState, window: list[Tensor], tokens_per_s: float, bar, log_f: TextIO | None) -> None:  # noqa: ANN001
    """Mean FVU, L0 and AuxK of the steps since the last row (over all ranks) into the bar and the log."""
    stats = torch.stack(window).mean(0)
    if state.dist.world > 1:
        dist.all_reduce(stats)
        stats /= state.dist.world
    fvu, l0, auxk = (float(v) for v in stats)
    row = {"step": state.step, "fvu": fvu, "l0": l0, "auxk": auxk, "dead_frac": state.dead.fraction(),
           "lr": state.sched.get_last_lr()[0], "tokens_per_s": tokens_per_s}
    bar.set_postfix(fvu=f"{fvu:.3f}", l0=f"{l0:.1f}", dead=f"{row['dead_frac']:.3f}", tok_s=f"{tokens_per_s:.0f}")
    if log_f:
        log_f.write(json.dumps(row) + "\n")
        log_f.flush()


def finish(state: TrainState) -> TrainResult:
    """FVU and L0 on a held-out sample; rank 0 saves the SAE, then train.json, then drops the checkpoint."""
    section, d, src = state.section, state.dist, state.src
    dead_frac = state.dead.fraction()
    fvu, l0 = evaluate(state.sae, src.sample(section.eval_tokens, seed=state.seed * 100_003 + 104_729))
    metrics = Metrics(fvu=fvu, l0=l0, dead_frac=dead_frac)
    tokens = state.step * src.global_batch
    if d.main:
        state.sae.save(state.sae_dir)
        write_train_json(state.sae_dir, {
            "section": to_dict(section), "layer": state.layer, "expansion": state.expansion, "steps": state.step,
            "tokens": tokens, "tokens_per_s_last_run": state.tokens_per_s, "impl": state.impl,
            "world_size": d.world, "device": str(state.device), "data_in_memory": src.in_memory,
            "store_tokens": src.n_tokens, "metrics": metrics._asdict(), "torch": torch.__version__,
        })
        remove_checkpoint(state.sae_dir)
    if d.world > 1:
        dist.barrier()
    return TrainResult(state.sae_dir, state.sae.cfg, metrics, state.step, tokens, state.tokens_per_s, state.impl)


def train_sae(section: SaeSection, store: ActivationStore, layer: int, expansion: int, sae_dir: Path, *,
              model_name: str, device: torch.device, seed: int = 0, progress: bool = True) -> TrainResult:
    """Train (or resume) the SAE of (layer, expansion) and save it to ``sae_dir``."""
    state = init_or_resume(section, store, layer, expansion, sae_dir, model_name=model_name, device=device, seed=seed)
    fit(state, progress=progress)
    return finish(state)


def _broadcast_float(value: float, device: torch.device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return float(t.item())


def _progress(total: int, initial: int, desc: str, enabled: bool):  # noqa: ANN202 - tqdm or a no-op
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, mininterval=1.0)
