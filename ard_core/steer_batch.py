"""Judging many steered variants of a few clips by next-token label probabilities, in batches.

A :class:`ClipPool` holds clips asked one prompt (a track's P3 question, whose assistant
prefix ends right before the answer). It prepares them once, runs the unsteered model once,
and keeps each clip's hidden state entering every layer that will be steered. A steered
variant (clip, feature, value) is one batch row (:class:`ard_core.steering.RowSteer`); rows
are judged ``batch_rows`` at a time, one forward each and no generation: a row's answer is
the label whose first token has the highest next-token logit (steer-eval's label judge), and
its label probabilities are the full-vocabulary softmax at those tokens (as ``steer`` shows).

Steering at layer l leaves layers 0..l-1 as they were, so a steered forward starts at layer
l from the cached hidden state (the *tail* forward): at layer 6 of 8 it costs a quarter of a
full forward, and the audio encoder never runs again. Layer l's own output is cached too, with
each SAE's top-(K+1) pre-activations of it, so the change a row's steering makes there is known
before the forward (:func:`ard_core.steering.set_delta`; a raw neuron's is its new value minus
its old): no token is encoded by the SAE again. The tail forward hands the decoder a
list of its last layers for the length of one call. That assumes the decoder does nothing
between its input embeddings and its first layer but the layers (true of Qwen2 and Llama
decoders), so each pool checks it once, unsteered, against the full forward; where they
disagree the pool warns and runs full forwards.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from ard_core.models.base import AudioLLM
from ard_core.steering import RowSteer, position_mask, set_delta, steering_delta, steering_rows

log = logging.getLogger(__name__)


class Judged(NamedTuple):
    """Label probabilities and answers of a batch of rows."""

    probs: np.ndarray
    """(R, Y) next-token probability of each label's first token (full-vocabulary softmax)."""
    answer: np.ndarray
    """(R,) index of the label with the highest logit."""


def decoder_of(llm: AudioLLM) -> nn.Module:
    """The module whose ``layers`` are ``llm.layers`` (the text decoder: embeddings in, normed states out)."""
    for module in llm.model.modules():
        if getattr(module, "layers", None) is llm.layers:
            return module
    raise TypeError(f"cannot find the module holding the decoder layers of {llm.name!r}")


@contextmanager
def tail_layers(decoder: nn.Module, start: int) -> Iterator[None]:
    """The decoder runs only its layers start.. for the length of the block."""
    full = decoder.layers
    decoder.layers = nn.ModuleList(list(full)[start:])
    try:
        yield
    finally:
        decoder.layers = full


def _judge(logits: torch.Tensor, label_ids: torch.Tensor) -> Judged:
    """(R, V) last-position logits -> label probabilities and answers."""
    logits = logits.float()
    at = logits[:, label_ids.to(logits.device)]
    probs = torch.softmax(logits, -1)[:, label_ids.to(logits.device)]
    return Judged(probs.cpu().numpy(), at.argmax(-1).cpu().numpy())


class ClipPool:
    """Clips asked one prompt; answered unsteered once, then steered row by row (module docstring)."""

    def __init__(self, llm: AudioLLM, audios: Sequence[np.ndarray], prompt: str, label_ids: Sequence[int],
                 start_layers: Sequence[int], batch_rows: int = 32, check: bool = True) -> None:
        if not audios:
            raise ValueError("a clip pool needs at least one clip")
        self.llm = llm
        self.label_ids = torch.as_tensor(list(label_ids))
        self.batch_rows = int(batch_rows)
        self.inputs = llm.prepare(list(audios), [prompt] * len(audios))  # one call: one padded length
        self.hidden: dict[int, torch.Tensor] = {}  # layer -> (P, S, d) hidden state entering it
        self.output: dict[int, torch.Tensor] = {}  # layer -> (P, S, d) its output, unsteered
        self._tops: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # (layer, id(sae)) -> top K+1
        self.decoder = decoder_of(llm)
        logits = self._full_capture(sorted(set(start_layers)))
        self.base = _judge(logits, self.label_ids)
        self.tail_ok = self._check(logits) if check else True

    def __len__(self) -> int:
        return int(self.inputs["input_ids"].shape[0])

    def _rows(self, idx: torch.Tensor) -> dict:
        return {k: v[idx] for k, v in self.inputs.items() if isinstance(v, torch.Tensor)}

    @torch.inference_mode()
    def _full(self, idx: torch.Tensor) -> torch.Tensor:
        return self.llm.model(**self._rows(idx), use_cache=False).logits[:, -1]

    @torch.inference_mode()
    def _full_capture(self, layers: Sequence[int]) -> torch.Tensor:
        """Unsteered last-position logits (P, V), caching the hidden state entering and leaving each of ``layers``."""
        ins: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
        outs: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
        handles = []
        for l in layers:
            def pre(_m: nn.Module, args: tuple, kwargs: dict, l: int = l) -> None:
                ins[l].append((args[0] if args else kwargs["hidden_states"]).detach())

            def post(_m: nn.Module, _args: tuple, out: object, l: int = l) -> None:
                outs[l].append((out[0] if isinstance(out, tuple) else out).detach())
            handles.append(self.llm.layers[l].register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(self.llm.layers[l].register_forward_hook(post))
        try:
            logits = [self._full(torch.arange(i, min(i + self.batch_rows, len(self))))
                      for i in range(0, len(self), self.batch_rows)]
        finally:
            for h in handles:
                h.remove()
        self.hidden = {l: torch.cat(p) for l, p in ins.items()}
        self.output = {l: torch.cat(p) for l, p in outs.items()}
        return torch.cat(logits)

    @torch.inference_mode()
    def _top(self, layer: int, sae: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, S, K+1) top pre-activations of ``sae`` on layer ``layer``'s output, high to low, and their latents."""
        key = (layer, id(sae))
        if key not in self._tops:
            vals, idx = [], []
            for x in self.output[layer]:  # one clip at a time: (S, d_sae) pre-activations stay small
                v, i = sae.pre_acts(x).topk(sae.cfg.k + 1, dim=-1)
                vals.append(v)
                idx.append(i)
            self._tops[key] = (torch.stack(vals), torch.stack(idx))
        return self._tops[key]

    def _delta(self, spec: RowSteer, idx: torch.Tensor) -> torch.Tensor:
        """(B, S, d) change each row's steering makes to layer ``spec.layer``'s output (module docstring)."""
        out = self.output[spec.layer][idx]
        B, S, d = out.shape
        feats = spec.features.to(out.device)
        vals = spec.values.to(out.device, torch.float32)
        if spec.sae is None:
            delta = torch.zeros(B, S, d, dtype=torch.float32, device=out.device)
            on = torch.nonzero(feats >= 0).flatten()
            delta[on, :, feats[on]] = vals[on, None] - out[on, :, feats[on]].float()
            return delta
        top_v, top_i = self._top(spec.layer, spec.sae)
        flat = set_delta(spec.sae, top_v[idx].reshape(B * S, -1), top_i[idx].reshape(B * S, -1),
                         feats.repeat_interleave(S), vals.repeat_interleave(S))
        return flat.reshape(B, S, d)

    @torch.inference_mode()
    def _tail_logits(self, idx: torch.Tensor, start: int) -> torch.Tensor:
        with tail_layers(self.decoder, start):
            out = self.decoder(inputs_embeds=self.hidden[start][idx], attention_mask=self.inputs["attention_mask"][idx],
                               use_cache=False)
        last = out[0] if isinstance(out, tuple) else out.last_hidden_state
        return self.llm.lm_head(last[:, -1])

    def _check(self, full: torch.Tensor) -> bool:
        """The tail forward from every cached layer reproduces the full forward's label log-probabilities."""
        idx = torch.arange(min(len(self), self.batch_rows))

        def logp(logits: torch.Tensor) -> np.ndarray:
            return torch.log_softmax(logits.float(), -1)[:, self.label_ids.to(logits.device)].cpu().numpy()

        want = logp(full[idx])
        tol = 1e-3 if full.dtype == torch.float32 else 5e-2
        for start in self.hidden:
            got = logp(self._tail_logits(idx, start))
            if not np.allclose(got, want, atol=tol):
                log.warning("the tail forward from layer %d disagrees with the full forward (max |d log p| = %.2g); "
                            "this model's steered variants run full forwards (slower)", start,
                            float(np.abs(got - want).max()))
                return False
        return True

    def steered(self, spec: RowSteer, clips: np.ndarray, positions: Sequence[str]) -> Judged:
        """Rows (clip ``clips[i]`` steered by row i of ``spec``), judged ``batch_rows`` at a time."""
        clips = np.asarray(clips, dtype=np.int64)
        if len(clips) != len(spec.features):
            raise ValueError(f"{len(clips)} clips but {len(spec.features)} steering rows")
        if spec.layer not in self.hidden:
            raise ValueError(f"layer {spec.layer} was not among the pool's start layers {sorted(self.hidden)}")
        probs, answers = [], []
        for i in range(0, len(clips), self.batch_rows):
            idx = torch.as_tensor(clips[i : i + self.batch_rows])
            part = RowSteer(spec.layer, spec.features[i : i + self.batch_rows], spec.values[i : i + self.batch_rows],
                            spec.sae, spec.keep_error)
            ids, mask = self.inputs["input_ids"][idx], self.inputs["attention_mask"][idx]
            if self.tail_ok and spec.keep_error:
                where = position_mask(self.llm, [p for p in positions if p != "generated"], ids, mask)
                with torch.inference_mode(), steering_delta(self.llm, spec.layer, self._delta(part, idx), where):
                    logits = self._tail_logits(idx, spec.layer)
            else:
                with steering_rows(self.llm, part, positions, ids, mask):
                    logits = self._tail_logits(idx, spec.layer) if self.tail_ok else self._full(idx)
            j = _judge(logits, self.label_ids)
            probs.append(j.probs)
            answers.append(j.answer)
        if not probs:
            return Judged(np.zeros((0, len(self.label_ids))), np.zeros(0, np.int64))
        return Judged(np.concatenate(probs), np.concatenate(answers))
