"""Settings of the tiny AudioLLM's training: the ``[tiny_audiollm]`` table of ``configs/forge.toml``.

A copy is saved as ``training_config.json`` next to the model, and the model
card reads its training settings from that copy, not from the current config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ard_core.config import ConfigError, from_dict
from ard_core.datasets import TRACKS
from forge.tiny_audiollm.recipe import TinyArch


@dataclass
class TinyAudioLLMConfig:
    """The ``[tiny_audiollm]`` table of configs/forge.toml (architecture in ``[tiny_audiollm.arch]``)."""

    manifest: Path = Path("assets/corpus/manifest.csv")
    """Corpus manifest; the train split trains, the probe split monitors, the test split is reported."""
    out_dir: Path = Path("assets/models/tiny-audiollm")
    """Folder that receives the model, processor, card and logs."""
    steps_encoder: int = 800
    """Phase 1 steps: audio encoder + per-track heads only."""
    steps: int = 2000
    """Phase 2 steps: the whole model on attribute questions and captions (+ heads)."""
    max_minutes: float = 55.0
    """Wall-clock budget of both phases; past it training stops (and says so). The learning-rate
    schedules follow whichever of step count or budget is further along, so they always anneal."""
    encoder_share: float = 0.3
    """Share of ``max_minutes`` that phase 1 may use."""
    batch_size: int = 16
    """Phase-2 examples per step (one clip and one task each)."""
    encoder_batch_size: int = 32
    """Phase-1 clips per step."""
    lr: float = 1e-3
    """Peak AdamW learning rate of phase 2."""
    encoder_lr: float = 2e-3
    """Peak AdamW learning rate of phase 1."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 100
    """Linear warm-up steps of each phase (then cosine decay to 10%)."""
    caption_fraction: float = 0.2
    """Fraction of phase-2 examples that are captioning tasks."""
    aux_weight: float = 0.5
    """Weight of the auxiliary head loss in phase 2."""
    token_aux: bool = True
    """Heads also classify every audio token (not only the pooled clip), so that each token the
    decoder attends to carries the labels."""
    track_weights: dict[str, float] = field(default_factory=lambda: {"language": 3.0, "emotion": 1.5})
    """Relative frequency of each track's questions in phase 2 (tracks not listed: 1.0)."""
    spec_augment: bool = True
    """Random time and frequency masks on the training features."""
    mel_shift_bins: int = 0
    """With spec_augment: shift each training clip's mel axis by a random -N..N bins (vocal-tract-length
    perturbation), so that voices unheard in training are less foreign; 0 = off."""
    eval_every: int = 500
    """Monitor probe-split P3 accuracy every N phase-2 steps."""
    monitor_clips: int = 48
    """Probe clips per track used by that monitor."""
    eval_batch_size: int = 32
    """Clips per forward pass when evaluating."""
    arch: TinyArch = field(default_factory=TinyArch)
    """Architecture (``[tiny_audiollm.arch]``)."""

    def __post_init__(self) -> None:
        self.manifest = Path(self.manifest)
        self.out_dir = Path(self.out_dir)
        if isinstance(self.arch, dict):
            self.arch = from_dict(TinyArch, self.arch, where="tiny_audiollm.arch")
        for key in ("steps_encoder", "steps", "warmup_steps", "mel_shift_bins"):
            if getattr(self, key) < 0:
                raise ConfigError(f"[tiny_audiollm].{key} must be >= 0")
        for key in ("batch_size", "encoder_batch_size", "eval_every", "eval_batch_size", "monitor_clips"):
            if getattr(self, key) < 1:
                raise ConfigError(f"[tiny_audiollm].{key} must be >= 1")
        if self.max_minutes <= 0:
            raise ConfigError("[tiny_audiollm].max_minutes must be > 0")
        if not 0.0 < self.encoder_share < 1.0:
            raise ConfigError("[tiny_audiollm].encoder_share must be in (0, 1)")
        if not 0.0 <= self.caption_fraction < 1.0:
            raise ConfigError("[tiny_audiollm].caption_fraction must be in [0, 1)")
        if self.lr <= 0 or self.encoder_lr <= 0:
            raise ConfigError("[tiny_audiollm].lr and encoder_lr must be > 0")
        self.track_weights = dict(self.track_weights)
        bad = {k: v for k, v in self.track_weights.items() if k not in TRACKS or not v > 0}
        if bad:
            raise ConfigError(f"[tiny_audiollm].track_weights {bad}: keys must be tracks {TRACKS}, values > 0")
