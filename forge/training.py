"""Training pieces both tiny models share (``forge tiny-audiollm``, ``forge tiny-clap``).

- :func:`corpus_label_sets`: the label set of every track a corpus has, in P3 order;
- :class:`TrackHeads`: per-track linear classifiers on an audio encoder's pooled (and
  per-token) output, the signal that lets a from-scratch encoder learn the harder
  tracks in minutes; they are training aids and never saved;
- schedule: :func:`cosine_lr` driven by the larger of step and wall-clock progress
  (:class:`Budget`), so a busy CPU gives fewer steps, not an unfinished schedule;
  :func:`set_lr` and :func:`optimizer_step` (clipped) are the step both loops take.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ard_core.datasets import LABEL_VOCAB, TRACKS, ClipRecord
from ard_core.prompts import p3_options
from forge.measure import single_label


def corpus_label_sets(records: Sequence[ClipRecord]) -> dict[str, tuple[str, ...]]:
    """Track -> label set in P3 order: closed vocabularies whole, open tracks as found."""
    out: dict[str, tuple[str, ...]] = {}
    for track in TRACKS:
        present = {lab for r in records if (lab := single_label(r, track))}
        if not present:
            continue
        out[track] = p3_options(track, LABEL_VOCAB.get(track, ()) or sorted(present))
    return out


class TrackHeads(nn.Module):
    """One linear classifier per track on the mean-pooled audio-encoder output (training only)."""

    def __init__(self, d_audio: int, label_sets: dict[str, tuple[str, ...]]) -> None:
        super().__init__()
        self.label_sets = label_sets
        self.heads = nn.ModuleDict({t: nn.Linear(d_audio, len(labs)) for t, labs in label_sets.items()})

    def targets(self, records: Sequence[ClipRecord]) -> dict[str, torch.Tensor]:
        out = {}
        for t, labs in self.label_sets.items():
            index = {lab: k for k, lab in enumerate(labs)}
            out[t] = torch.tensor([index.get(single_label(r, t) or "", -100) for r in records])
        return out

    def loss(self, pooled: torch.Tensor, targets: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean over tracks present in the batch of the per-track cross-entropy; also accuracies."""
        losses, accs = [], {}
        for t, head in self.heads.items():
            y = targets[t].to(pooled.device)
            keep = y >= 0
            if keep.any():
                logits = head(pooled[keep])
                losses.append(F.cross_entropy(logits, y[keep]))
                accs[t] = float((logits.argmax(-1) == y[keep]).float().mean())
        total = torch.stack(losses).mean() if losses else pooled.sum() * 0.0
        return total, accs

    def token_loss(self, states: torch.Tensor, lengths: torch.Tensor, targets: dict[str, torch.Tensor],
                   where: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The same classifiers applied to every valid audio token (batch, T, d) of each clip, or,
        per track, only to the tokens ``where[track]`` (batch, T) marks: where that label sounds,
        so a bark inside speech does not teach the speech tokens 'dog'."""
        valid = torch.arange(states.shape[1])[None, :] < lengths[:, None]  # (batch, T)
        losses = []
        for t, head in self.heads.items():
            y = targets[t].to(states.device)[:, None].expand(-1, states.shape[1])
            keep = valid & (y >= 0)
            if where is not None and t in where:
                keep = keep & where[t].to(states.device)
            if keep.any():
                losses.append(F.cross_entropy(head(states[keep]), y[keep]))
        return torch.stack(losses).mean() if losses else states.sum() * 0.0


def cosine_lr(step: int, total: int, warmup: int, peak: float, time_progress: float = 0.0) -> float:
    """Linear warm-up, then cosine to 10% of ``peak``, driven by the larger of step and time progress."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = max((step - warmup) / max(1, total - warmup), time_progress)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's rate for this step, on every parameter group."""
    for g in opt.param_groups:
        g["lr"] = lr


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params: list[nn.Parameter]) -> None:
    """Backward, clip the gradient norm at 1.0, step: the update of every phase of both models."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


class Budget:
    """Wall-clock budget of one phase: ``progress()`` in [0, 1], ``over()`` once spent."""

    def __init__(self, seconds: float) -> None:
        self.start, self.seconds = time.time(), max(1e-6, seconds)

    def progress(self) -> float:
        return min(1.0, (time.time() - self.start) / self.seconds)

    def over(self) -> bool:
        return time.time() - self.start >= self.seconds
