"""The AudioLLM adapter protocol.

Everything downstream (activation extraction, logit lens, steering, captioning)
talks to an AudioLLM only through this protocol, so adding a model family
(Qwen-Audio-Chat, DeSTA2, SALMONN, ...) means writing one adapter file that
implements it and registering it in ``ard_core.models.ADAPTERS``. See
``docs/adapters.md`` for the contract in prose.
"""

from __future__ import annotations

import math
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torch import nn


@runtime_checkable
class AudioLLM(Protocol):
    """What an adapter must expose. Layer indices are 0-based into ``layers``."""

    name: str
    """Short model name used in SAE ids (e.g. 'qwen2-audio-7b-instruct')."""
    model: nn.Module
    """The wrapped transformers model (eval mode)."""
    tokenizer: object
    """Its tokenizer (left padding, so the last position of every row is real)."""
    sampling_rate: int
    """Audio sampling rate the processor expects (16 kHz for Qwen2-Audio)."""

    @property
    def layers(self) -> nn.ModuleList:
        """The text decoder's layers; hooks on layer l see the residual stream after it."""

    @property
    def final_norm(self) -> nn.Module:
        """The norm applied after the last decoder layer, before the LM head."""

    @property
    def lm_head(self) -> nn.Module:
        """The unembedding (hidden -> vocabulary logits)."""

    @property
    def n_layers(self) -> int: ...

    @property
    def d_model(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def build_prompt(self, question: str, assistant_prefix: str | None = None) -> str:
        """Chat-template text: one audio placeholder + ``question`` in the user turn.

        With ``assistant_prefix`` the text ends right after it (no end-of-turn
        token), so the next token the model predicts is the answer.
        """

    def prepare(self, audios: Sequence[np.ndarray], prompts: Sequence[str]) -> dict:
        """Padded model inputs (on the model's device) for 16 kHz mono waveforms."""

    def audio_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Bool mask (batch, seq) of the positions that hold audio embeddings."""

    @property
    def min_audio_samples(self) -> int:
        """Fewest samples (at ``sampling_rate``) of a clip the model can read; ``prepare`` refuses shorter ones."""


def check_clip_length(llm: AudioLLM, n_samples: int, name: str) -> None:
    """Raise :class:`ard_core.audio.AudioError` when clip ``name`` is too short for ``llm``, giving the minimum."""
    from ard_core.audio import AudioError

    need = llm.min_audio_samples
    if n_samples < need:
        sr = llm.sampling_rate
        have_ms, need_ms = math.floor(1000 * n_samples / sr), math.ceil(1000 * need / sr)
        raise AudioError(f"{name} is too short: {have_ms} ms of audio ({n_samples} samples); the model needs at "
                         f"least {need_ms} ms ({need} samples at {sr} Hz). "
                         "Upload or record a longer clip")
