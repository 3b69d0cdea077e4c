"""The AudioLLM adapter protocol.

Everything downstream (activation extraction, logit lens, steering, captioning)
talks to an AudioLLM only through this protocol, so adding a model family
(Qwen-Audio-Chat, DeSTA2, SALMONN, ...) means writing one adapter file that
implements it and registering it in ``ard_core.models.ADAPTERS``. See
``docs/adapters.md`` for the contract in prose.
"""

from __future__ import annotations

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
