"""Capturing the residual stream of an AudioLLM's decoder layers with forward hooks.

The hook on decoder layer ``l`` sees its output, the residual stream after layer
``l``, which equals HF's ``hidden_states[l + 1]`` for every layer but the last:
HF's last hidden state is already passed through the final norm, while the hook
gives the pre-norm stream (what an SAE or a lens of layer ``l`` should read).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch

from ard_core.models.base import AudioLLM


def _hidden(output: object) -> torch.Tensor:
    # transformers 5 decoder layers return the tensor; 4.5x return a tuple.
    return output[0] if isinstance(output, tuple) else output  # type: ignore[index]


@contextmanager
def capture_layers(llm: AudioLLM, layers: Sequence[int], detach: bool = True) -> Iterator[dict[int, torch.Tensor]]:
    """Inside the block, every forward fills ``{layer: (batch, seq, d_model)}``.

    During generation the dict holds the most recent step's states.
    """
    n = llm.n_layers
    for layer in layers:
        if not 0 <= layer < n:
            raise ValueError(f"layer {layer} out of range: the model has layers 0..{n - 1}")
    captured: dict[int, torch.Tensor] = {}
    handles = []
    for layer in layers:
        def hook(_module: torch.nn.Module, _inp: object, out: object, layer: int = layer) -> None:
            h = _hidden(out)
            captured[layer] = h.detach() if detach else h

        handles.append(llm.layers[layer].register_forward_hook(hook))
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


@torch.inference_mode()
def run_and_capture(llm: AudioLLM, inputs: dict, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """One forward pass; returns the residual stream after each of ``layers``.

    Layers after the deepest requested one still run (HF has no early exit), so
    callers that need many layers should ask for them in one call.
    """
    with capture_layers(llm, layers) as captured:
        llm.model(**inputs, use_cache=False)
    return dict(captured)


@torch.inference_mode()
def clip_states(llm: AudioLLM, audios: Sequence[np.ndarray], prompt: str, layers: Sequence[int],
                positions: str) -> list[dict[int, torch.Tensor]]:
    """One forward pass over ``audios`` (each with ``prompt``); for each clip, ``{layer: (T, d)}``
    the residual stream after each layer at the clip's kept positions, on the model's device.

    ``positions``: 'audio' keeps the audio-token positions (the paper), 'all' every non-padding one.
    The extract stage stores these; ``ard_core.sae.stream`` feeds them to SAEs without storing.
    """
    inputs = llm.prepare(list(audios), [prompt] * len(audios))
    hidden = run_and_capture(llm, inputs, layers)
    if positions == "audio":
        mask = llm.audio_positions(inputs["input_ids"])
    else:
        mask = inputs["attention_mask"].bool()
    return [{l: hidden[l][b, mask[b]] for l in layers} for b in range(len(audios))]
