"""The files of one SAE's training run: checkpoint, progress log and ``train.json``.

``SAE_DIR/checkpoint/checkpoint.pt`` holds everything a resumed run needs to take the
same steps as an uninterrupted one (weights, optimizer and scheduler state, the dead
counter, the step and the forward path); ``train_log.jsonl`` gets one row per logging
window; ``train.json``, written last and atomically, marks the SAE finished. A
finished SAE has no checkpoint: :func:`remove_checkpoint` runs right after train.json.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import Tensor

from ard_core.config import to_dict
from ard_core.durable import atomic_path, write_text
from ard_core.sae.model import CFG_FILE, WEIGHTS_FILE, TopKSAE

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "checkpoint.pt"
TRAIN_FILE = "train.json"
LOG_FILE = "train_log.jsonl"


def checkpoint_path(sae_dir: Path) -> Path:
    return Path(sae_dir) / CHECKPOINT_DIR / CHECKPOINT_FILE


def save_checkpoint(sae_dir: Path, sae: TopKSAE, opt: torch.optim.Optimizer,
                    sched: torch.optim.lr_scheduler.LRScheduler, since_fired: Tensor, step: int, impl: str) -> None:
    with atomic_path(checkpoint_path(sae_dir)) as tmp:
        torch.save({"cfg": to_dict(sae.cfg), "model": sae.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "since_fired": since_fired, "step": step, "impl": impl}, tmp)


def load_checkpoint(sae_dir: Path, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint saved by :func:`save_checkpoint` in ``sae_dir``, or None when there is none."""
    path = checkpoint_path(sae_dir)
    return torch.load(path, map_location=device, weights_only=True) if path.exists() else None


def remove_checkpoint(sae_dir: Path) -> None:
    """Delete ``sae_dir/checkpoint/`` (its file and any ``.tmp`` a killed save left)."""
    folder = Path(sae_dir) / CHECKPOINT_DIR
    if folder.is_dir():
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()


def open_log(sae_dir: Path, step: int) -> TextIO:
    """``train_log.jsonl`` for appending from ``step`` on (a fresh file when step is 0)."""
    sae_dir.mkdir(parents=True, exist_ok=True)
    if step:
        _truncate_log(sae_dir / LOG_FILE, step)  # rows logged after the checkpoint are logged again
    return open(sae_dir / LOG_FILE, "a" if step else "w")


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


def write_train_json(sae_dir: Path, info: dict[str, Any]) -> Path:
    """train.json marks the SAE finished (:func:`finished_run`), so it is written last and atomically."""
    return write_text(Path(sae_dir) / TRAIN_FILE, json.dumps(info, indent=2) + "\n")


def finished_run(sae_dir: Path) -> dict | None:
    """The train.json of a finished SAE in ``sae_dir``, or None."""
    train, cfg = sae_dir / TRAIN_FILE, sae_dir / CFG_FILE
    if not (train.is_file() and cfg.is_file() and (sae_dir / WEIGHTS_FILE).is_file()):
        return None
    try:
        return json.loads(train.read_text())
    except json.JSONDecodeError:  # cut short by a kill before train.json was written atomically
        log.warning("%s is not valid JSON; treating %s as unfinished", train, sae_dir.name)
        return None
