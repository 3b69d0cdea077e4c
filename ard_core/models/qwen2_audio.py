"""Adapter for Qwen2-Audio checkpoints (Qwen/Qwen2-Audio-7B-Instruct and the tiny
embedded model, which is built from the very same transformers classes).

transformers 4.5x and 5.x keep the text decoder at different module paths:

- 5.x: ``model.model.language_model.layers``, ``model.model.language_model.norm``,
  ``model.lm_head``
- 4.5x: ``model.language_model.model.layers``, ``model.language_model.model.norm``,
  ``model.language_model.lm_head``

:func:`resolve_text_modules` finds them in either layout.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from ard_core.models.base import check_clip_length

log = logging.getLogger(__name__)


class TextModules(NamedTuple):
    layers: nn.ModuleList
    final_norm: nn.Module
    lm_head: nn.Module


def resolve_text_modules(model: nn.Module) -> TextModules:
    """Decoder layers, final norm and LM head of a Qwen2-Audio model, any layout."""
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "language_model") and hasattr(inner.language_model, "layers"):
        lm = inner.language_model  # transformers 5.x: a bare decoder
        return TextModules(lm.layers, lm.norm, model.lm_head)
    lm = getattr(model, "language_model", None)
    if lm is not None and hasattr(lm, "model") and hasattr(lm.model, "layers"):
        return TextModules(lm.model.layers, lm.model.norm, lm.lm_head)  # transformers 4.5x
    raise TypeError(
        f"cannot find the text decoder in {type(model).__name__}: expected "
        "model.model.language_model.layers (transformers 5) or "
        "model.language_model.model.layers (transformers 4.5x)"
    )


def audio_token_id_of(config: object) -> int:
    """5.x names it ``audio_token_id``; 4.5x ``audio_token_index``."""
    for key in ("audio_token_id", "audio_token_index"):
        value = getattr(config, key, None)
        if value is not None:
            return int(value)
    raise TypeError("config has neither audio_token_id nor audio_token_index")


def _short_name(name_or_path: str) -> str:
    return Path(str(name_or_path).rstrip("/")).name.lower()


def _torch_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        # bf16 halves memory on GPU; CPU matmuls are fastest (and exact) in fp32.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ValueError(f"dtype {dtype!r} unknown; use one of {sorted(table)} or 'auto'")
    return table[dtype]


def audio_token_count(samples: float, hop_length: int) -> int:
    """Audio positions of a clip of ``samples`` samples: its mel frames, halved by the encoder's stride-2
    convolution and again by its pooling (Qwen2AudioProcessor's count)."""
    frames = math.ceil(samples / hop_length)
    if frames <= 0:
        return 0
    return (((frames - 1) // 2 + 1) - 2) // 2 + 1


MIN_AUDIO_TOKENS = 2
"""Fewest audio positions a clip may give. transformers' Qwen2-Audio reads a prompt whose audio
tokens are never two in a row as an old-style unexpanded prompt and takes another code path,
which fails in generate() ("'NoneType' object is not subscriptable") and is not the model's
reading of the clip in a forward pass."""


class Qwen2AudioAdapter:
    """Wraps a loaded ``Qwen2AudioForConditionalGeneration`` and its processor."""

    def __init__(self, model: nn.Module, processor: object, name: str) -> None:
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        # Left padding keeps position -1 real for every row: the lens and the
        # steering read the last token, and generate() needs it anyway.
        self.tokenizer.padding_side = "left"
        self.name = name
        self.sampling_rate = int(processor.feature_extractor.sampling_rate)
        self._text = resolve_text_modules(model)
        self.audio_token_id = audio_token_id_of(model.config)

    # -- loading -----------------------------------------------------------------
    @classmethod
    def load(cls, name_or_path: str, device: str = "cpu", dtype: str = "auto") -> "Qwen2AudioAdapter":
        from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

        torch_dtype = _torch_dtype(dtype, device)
        kwargs: dict = {"dtype": torch_dtype}
        if device == "cuda":
            kwargs["device_map"] = "auto"  # spreads a 7B model over the visible GPUs
        try:
            model = Qwen2AudioForConditionalGeneration.from_pretrained(str(name_or_path), **kwargs)
            processor = AutoProcessor.from_pretrained(str(name_or_path))
        except OSError as exc:
            raise OSError(
                f"could not load Qwen2-Audio model {str(name_or_path)!r}: {exc}. Give a local folder "
                "made by save_pretrained, or a hub id with network access (or a warm HF cache)."
            ) from exc
        if "device_map" not in kwargs:
            model = model.to(device)
        return cls(model, processor, _short_name(name_or_path))

    # -- structure -----------------------------------------------------------------
    @property
    def layers(self) -> nn.ModuleList:
        return self._text.layers

    @property
    def final_norm(self) -> nn.Module:
        return self._text.final_norm

    @property
    def lm_head(self) -> nn.Module:
        return self._text.lm_head

    @property
    def n_layers(self) -> int:
        return len(self._text.layers)

    @property
    def d_model(self) -> int:
        return int(self._text.lm_head.in_features)

    @property
    def device(self) -> torch.device:
        return self._text.lm_head.weight.device

    @property
    def min_audio_samples(self) -> int:
        """Fewest samples a clip needs to give MIN_AUDIO_TOKENS audio positions (961 at 16 kHz: 61 ms)."""
        hop = int(self.processor.feature_extractor.hop_length)
        n = hop
        while audio_token_count(n, hop) < MIN_AUDIO_TOKENS:  # up a frame at a time, then down to the sample
            n += hop
        while audio_token_count(n - 1, hop) >= MIN_AUDIO_TOKENS:
            n -= 1
        return n

    # -- prompts and inputs --------------------------------------------------------
    def build_prompt(self, question: str, assistant_prefix: str | None = None) -> str:
        messages = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": question}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if assistant_prefix:
            # The generation prompt ends with "<|im_start|>assistant\n"; appending the
            # prefix (and no <|im_end|>) makes the next token the answer.
            text = text + assistant_prefix
        return text

    def prepare(self, audios: Sequence[np.ndarray], prompts: Sequence[str]) -> dict:
        if len(audios) != len(prompts):
            raise ValueError(f"{len(audios)} audios but {len(prompts)} prompts")
        for i, a in enumerate(audios):
            check_clip_length(self, len(a), f"clip {i} of the batch")
        batch = self.processor(
            text=list(prompts),
            audio=[np.asarray(a, dtype=np.float32) for a in audios],
            sampling_rate=self.sampling_rate,
            return_tensors="pt",
            padding=True,
        )
        dtype = next(self.model.parameters()).dtype
        out = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(dtype)
            out[key] = value
        return out

    def audio_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        return input_ids == self.audio_token_id
