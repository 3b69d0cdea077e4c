"""The ``[sae]`` table: the grid of SAEs to train and how (:mod:`ard_core.sae.train`, :mod:`ard_core.sae.stream`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ard_core.config import ConfigError
from ard_core.datasets.manifest import SPLITS


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
    source: str = "store"
    """'store': train on the activation store extract wrote; 'stream': the model's forward passes feed
    every SAE of the grid at once through a shuffling buffer, nothing stored (ard_core/sae/stream.py)."""
    stream_splits: list[str] = field(default_factory=lambda: ["train"])
    """source = 'stream': manifest splits whose clips feed the SAEs."""
    stream_batch_clips: int = 8
    """source = 'stream': clips per forward pass of the model."""
    random_controls: list[list[int]] = field(default_factory=list)
    """[layer, expansion] pairs of the grid that get a frozen random-SAE control (ard_core/sae/random.py)."""

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
        if self.source not in ("store", "stream"):
            raise bad("source", "use 'store' (the activation store, the default) or 'stream' (the model's "
                                "forward passes, no store)")
        if not self.stream_splits or any(s not in SPLITS for s in self.stream_splits):
            raise bad("stream_splits", f"list manifest splits from {list(SPLITS)}")
        if self.stream_batch_clips < 1:
            raise bad("stream_batch_clips", "must be a positive integer")
        grid = {(l, e) for l in self.layers for e in self.expansions}
        if any(len(pair) != 2 or tuple(pair) not in grid for pair in self.random_controls):
            raise bad("random_controls", "list [layer, expansion] pairs of the grid (layers x expansions), "
                                         "e.g. [[6, 8]]")

    def dead_threshold(self, n_tokens: int) -> int:
        return max(1, min(self.dead_tokens, int(self.dead_data_frac * n_tokens)))
