"""Settings of the tiny CLAP's recipe and training: the ``[tiny_clap]`` table of ``configs/forge.toml``.

A copy is saved as ``training_config.json`` next to the model, and the model
card reads its settings from that copy, not from the current config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ard_core.config import ConfigError


@dataclass
class TinyClapConfig:
    """The ``[tiny_clap]`` table of configs/forge.toml."""

    manifest: Path = Path("assets/corpus/manifest.csv")
    """Corpus manifest; train split trains, test split is reported."""
    out_dir: Path = Path("assets/models/tiny-clap")
    """Folder that receives model, processor, card and logs."""
    audio_steps: int = 300
    """Phase 1 steps: the audio encoder alone with per-track classification heads."""
    steps: int = 600
    """Phase 2 steps: contrastive training of both encoders (heads kept on the audio side)."""
    batch_size: int = 32
    """Clips per step (captions within a batch are distinct)."""
    lr: float = 1e-3
    """Peak AdamW learning rate (linear warm-up, cosine decay to 10%)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 50
    """Linear warm-up steps."""
    max_minutes: float = 15.0
    """Wall-clock budget of both phases; past it training stops (and says so). The schedules follow
    whichever of step count or budget is further along, so they always anneal."""
    audio_share: float = 0.35
    """Share of ``max_minutes`` that phase 1 may use."""
    spec_augment: bool = True
    """Random time and frequency masks on the training features."""
    aux_weight: float = 1.0
    """Weight of the per-track classification heads on the pooled audio encoder (0 = contrastive only)."""
    text_weight: float = 1.0
    """Weight of the text-text supervised contrastive loss over the labels' phrases (both phases)."""
    text_temperature: float = 0.2
    """Temperature of that loss and of the caption -> phrases loss (cosines / temperature)."""
    caption_weight: float = 1.0
    """Weight of the caption -> phrases loss (phase 2): a caption's positives are its labels' phrases."""
    phrases_per_label: int = 2
    """Phrases of every label drawn per step (reference phrase or training paraphrases)."""
    vocab_size: int = 1024
    """Target BPE vocabulary size."""
    chunk_length_s: int = 3
    """Audio window in seconds (shorter clips are repeated to fill it, longer ones cropped)."""
    n_mels: int = 32
    """Mel bins; the Swin input is (4 * n_mels) x (4 * n_mels) after HTSAT's reshape."""
    audio_width: int = 32
    """Channels of the first Swin stage (doubles at each of the 4 stages)."""
    audio_depths: tuple[int, ...] = (1, 1, 2, 1)
    """Swin blocks per stage (4 stages)."""
    text_hidden: int = 128
    """Width of the RoBERTa text encoder."""
    text_layers: int = 2
    """Layers of the text encoder."""
    text_heads: int = 4
    """Attention heads of the text encoder."""
    max_text_tokens: int = 64
    """Longest caption in tokens."""
    projection_dim: int = 128
    """Width D of the shared embedding space."""

    def __post_init__(self) -> None:
        self.manifest = Path(self.manifest)
        self.out_dir = Path(self.out_dir)
        self.audio_depths = tuple(self.audio_depths)
        for key in ("steps", "batch_size", "vocab_size", "chunk_length_s", "n_mels", "audio_width",
                    "text_hidden", "text_layers", "text_heads", "max_text_tokens", "projection_dim"):
            if getattr(self, key) < 1:
                raise ConfigError(f"[tiny_clap].{key} must be >= 1")
        if self.batch_size < 2:
            raise ConfigError("[tiny_clap].batch_size must be >= 2 (contrastive loss needs negatives)")
        if len(self.audio_depths) != 4 or min(self.audio_depths) < 1:
            raise ConfigError("[tiny_clap].audio_depths must list 4 positive block counts")
        if self.n_mels % 4:
            raise ConfigError("[tiny_clap].n_mels must be divisible by 4 (HTSAT's frequency ratio)")
        if 100 * self.chunk_length_s + 1 > 16 * self.n_mels:
            raise ConfigError(f"[tiny_clap]: {self.chunk_length_s} s gives {100 * self.chunk_length_s + 1} "
                              f"frames, more than the {16 * self.n_mels} the Swin input holds; raise n_mels")
        if self.text_hidden % self.text_heads:
            raise ConfigError("[tiny_clap].text_hidden must be divisible by text_heads")
        if self.max_minutes <= 0 or self.lr <= 0:
            raise ConfigError("[tiny_clap].max_minutes and lr must be > 0")
        if min(self.aux_weight, self.text_weight, self.caption_weight) < 0:
            raise ConfigError("[tiny_clap].aux_weight, text_weight and caption_weight must be >= 0")
        if not 0.0 < self.text_temperature <= 1.0:
            raise ConfigError("[tiny_clap].text_temperature must be in (0, 1]")
        if self.phrases_per_label < 2:
            raise ConfigError("[tiny_clap].phrases_per_label must be >= 2 (a phrase needs a positive)")
        if self.audio_steps < 0:
            raise ConfigError("[tiny_clap].audio_steps must be >= 0")
        if not 0.0 < self.audio_share < 1.0:
            raise ConfigError("[tiny_clap].audio_share must be in (0, 1)")
