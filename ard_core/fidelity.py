"""Spliced-in fidelity: what the model still does when a layer's output is an SAE's reconstruction.

A :class:`Splice` replaces the residual stream after decoder layer l (what the SAE reads) at the
chosen positions, 'audio' (the audio tokens, where the SAEs are trained) or 'all' (every
non-padding position), by

- the SAE's reconstruction x_hat (``sae`` given, ``keep_error`` False): the SAE *spliced in*;
- zero (``sae`` None): zero-ablation of the hook point, SAELens/SAEBench's H0 for the CE-loss score
  (the residual stream itself is zeroed at those positions, not only layer l's own contribution);
- x_hat plus the SAE's error x - x_hat (``keep_error``), computed as steering's keep_error is, x + (x_hat -
  x_hat), so that it gives x back bit for bit: the check that the machinery below changes nothing by itself.

:class:`PromptBatch` runs a batch of prompts through the unspliced model once, keeping the output of
every layer that will be spliced, and then runs each splice from layer l + 1 on (the *tail* forward of
:mod:`ard_core.steer_batch`: the audio encoder and layers 0..l never run again). The logits are read
only where asked (``read``, a (B, S) mask): the answer position of a P3 prompt, or the positions
that predict a teacher-forced caption's tokens. Where the tail forward does not reproduce the
full one (a decoder doing more than its layers), the batch warns and splices with a forward hook
in full forwards instead.

The figures (:func:`answer_stats`, :func:`caption_ce`, :func:`ce_score`): P3 answer accuracy (the
label whose first token has the highest logit, as steer-eval judges), KL(p_unspliced || p_spliced)
of the full next-token distribution at the answer position, and the CE-loss score
(H* - H0) / (H_orig - H0) over the caption tokens: 1 when the splice changes nothing, 0 when it is
as bad as zero-ablation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from ard_core.models.base import AudioLLM
from ard_core.steer_batch import decoder_of, tail_layers

log = logging.getLogger(__name__)

POSITION_SETS = ("audio", "all")
"""Where a splice replaces the residual stream: the audio tokens, or every non-padding position."""


@dataclass
class Splice:
    """What replaces layer ``layer``'s output, and where (module docstring)."""

    layer: int
    """0-based decoder layer whose output (the residual stream the SAE reads) is replaced."""
    sae: nn.Module | None
    """A TopKSAE whose reconstruction is spliced in; None zero-ablates."""
    positions: str = "audio"
    """'audio' or 'all' (every non-padding position)."""
    keep_error: bool = False
    """Add the SAE's error x - x_hat back (the output is then x itself)."""

    def __post_init__(self) -> None:
        if self.positions not in POSITION_SETS:
            raise ValueError(f"splice positions {self.positions!r}: use one of {list(POSITION_SETS)}")
        if self.keep_error and self.sae is None:
            raise ValueError("keep_error needs an SAE (zero-ablation has no reconstruction error)")


def spliced_vectors(x: torch.Tensor, splice: Splice) -> torch.Tensor:
    """(n, d) residual vectors -> what the splice puts in their place (n, d), in x's dtype."""
    if splice.sae is None:
        return torch.zeros_like(x)
    x_hat = splice.sae.reconstruct(x)
    if splice.keep_error:
        return (x.to(x_hat.dtype) + (x_hat - x_hat)).to(x.dtype)
    return x_hat.to(x.dtype)


def splice_mask(llm: AudioLLM, inputs: dict, positions: str) -> torch.Tensor:
    """(B, S) bool: the positions a splice of ``positions`` replaces."""
    if positions == "audio":
        return llm.audio_positions(inputs["input_ids"])
    return inputs["attention_mask"].bool()


def _replace_output(h: torch.Tensor):  # noqa: ANN202 - a forward hook
    """A forward hook making its layer output ``h`` (the fallback when the tail forward is not exact)."""
    def hook(_m: nn.Module, _in: object, out: object):  # noqa: ANN202
        return (h,) + tuple(out[1:]) if isinstance(out, tuple) else h

    return hook


class PromptBatch:
    """Prompts through the unspliced model once, then spliced from the layers' cached outputs (module docstring)."""

    def __init__(self, llm: AudioLLM, inputs: dict, layers: Sequence[int], read: torch.Tensor,
                 tail_ok: bool | None = None) -> None:
        self.llm, self.inputs = llm, inputs
        self.read = read.to(inputs["input_ids"].device)  # (B, S) bool: the logits kept
        self.decoder = decoder_of(llm)
        self.outputs: dict[int, torch.Tensor] = {}  # layer -> (B, S, d) its unspliced output
        self.base = self._capture(sorted(set(layers)))  # (N, V) float32 at the read positions
        # None: check it on this batch; a caller with many batches of one model checks the first only
        self.tail_ok = self._check() if tail_ok is None else tail_ok

    def _forward(self, hooks: dict[nn.Module, object]) -> torch.Tensor:
        """One full forward with ``hooks`` (module -> forward hook); the logits at the read positions, from
        the final norm's output as the tail computes them (the LM head on all positions rounds differently)."""
        normed: list[torch.Tensor] = []
        handles = [m.register_forward_hook(h) for m, h in hooks.items()]
        handles.append(self.llm.final_norm.register_forward_hook(lambda _m, _i, out: normed.append(out)))
        try:
            self.llm.model(**self.inputs, use_cache=False)
        finally:
            for h in handles:
                h.remove()
        return self.llm.lm_head(normed[-1][self.read]).float()

    @torch.inference_mode()
    def _capture(self, layers: Sequence[int]) -> torch.Tensor:
        def keep(layer: int):  # noqa: ANN202
            def hook(_m: nn.Module, _in: object, out: object) -> None:
                self.outputs[layer] = (out[0] if isinstance(out, tuple) else out).detach()
            return hook

        return self._forward({self.llm.layers[l]: keep(l) for l in layers})

    @torch.inference_mode()
    def _tail(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        with tail_layers(self.decoder, layer + 1):
            out = self.decoder(inputs_embeds=h, attention_mask=self.inputs["attention_mask"], use_cache=False)
        last = out[0] if isinstance(out, tuple) else out.last_hidden_state
        return self.llm.lm_head(last[self.read]).float()

    @torch.inference_mode()
    def _full(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        return self._forward({self.llm.layers[layer]: _replace_output(h)})

    def _check(self) -> bool:
        """The tail forward from after every cached layer reproduces the unspliced logits."""
        tol = 1e-4 if self.base.dtype == torch.float32 and self.outputs and \
            next(iter(self.outputs.values())).dtype == torch.float32 else 5e-2
        for layer, out in self.outputs.items():
            got = self._tail(out, layer)
            if not torch.allclose(got, self.base, atol=tol, rtol=tol):
                log.warning("the tail forward after layer %d disagrees with the full forward (max |d logit| = %.2g); "
                            "splicing runs full forwards (slower)", layer, float((got - self.base).abs().max()))
                return False
        return True

    @torch.inference_mode()
    def logits(self, splice: Splice) -> torch.Tensor:
        """(N, V) float32 logits at the read positions with ``splice`` applied."""
        if splice.layer not in self.outputs:
            raise ValueError(f"layer {splice.layer} was not cached; this batch holds layers {sorted(self.outputs)}")
        h = self.outputs[splice.layer].clone()
        where = splice_mask(self.llm, self.inputs, splice.positions)
        if where.any():
            h[where] = spliced_vectors(h[where], splice)
        return self._tail(h, splice.layer) if self.tail_ok else self._full(h, splice.layer)


# -- the prompts ---------------------------------------------------------------------------------
def answer_read(inputs: dict) -> torch.Tensor:
    """(B, S) bool: the last position of every row (left padding keeps it real), where a P3 answer is read."""
    read = torch.zeros_like(inputs["input_ids"], dtype=torch.bool)
    read[:, -1] = True
    return read


class TeacherForced(NamedTuple):
    """Captions appended to the caption prompt, and where their tokens are predicted."""

    inputs: dict
    read: torch.Tensor
    """(B, S) bool: the positions whose next token is a caption token."""
    targets: torch.Tensor
    """(N,) those caption tokens, in the row-major order of ``read``."""
    rows: torch.Tensor
    """(N,) the batch row of each."""


def teacher_forced(llm: AudioLLM, audios: Sequence[np.ndarray], captions: Sequence[str],
                   question: str) -> TeacherForced:
    """The chat prompt asking ``question`` with each caption as the assistant's answer (no end of turn)."""
    tok = llm.tokenizer
    head = llm.build_prompt(question)
    prompts = [llm.build_prompt(question, c) for c in captions]
    head_ids = tok.encode(head, add_special_tokens=False)
    counts = []
    for p, c in zip(prompts, captions):
        ids = tok.encode(p, add_special_tokens=False)
        if not c or ids[: len(head_ids)] != head_ids or len(ids) == len(head_ids):
            raise ValueError(f"caption {c!r} does not tokenize as tokens appended to the prompt; give a non-empty "
                             "caption that does not merge with the assistant header")
        counts.append((len(ids) - len(head_ids), ids[len(head_ids):]))
    inputs = llm.prepare(list(audios), prompts)
    ids = inputs["input_ids"]
    read = torch.zeros_like(ids, dtype=torch.bool)
    S = ids.shape[1]
    for i, (n, want) in enumerate(counts):
        if ids[i, S - n :].tolist() != want:
            raise ValueError(f"the processor tokenized caption {captions[i]!r} differently from the tokenizer")
        read[i, S - n - 1 : S - 1] = True
    return TeacherForced(inputs, read, ids[:, 1:][read[:, :-1]], read.nonzero()[:, 0])


# -- what the logits say ------------------------------------------------------------------------
class AnswerStats(NamedTuple):
    """One P3 prompt per row: was the answer right, and how far the spliced distribution moved."""

    correct: np.ndarray
    """(N,) bool: the label with the highest logit is one of the row's labels."""
    kl: np.ndarray
    """(N,) KL(p_reference || p) of the full next-token distributions, nats (0 for the reference itself)."""


def answer_stats(logits: torch.Tensor, reference: torch.Tensor, label_ids: Sequence[Sequence[int]],
                 truth: Sequence[set[int]]) -> AnswerStats:
    """``logits``/``reference`` (N, V) at the answer positions; row i chooses among the tokens
    ``label_ids[i]`` and is right when its choice's index is in ``truth[i]``."""
    logp = torch.log_softmax(logits.double(), -1)
    ref = torch.log_softmax(reference.double(), -1)
    kl = (ref.exp() * (ref - logp)).sum(-1).clamp_min(0.0)
    correct = [int(torch.argmax(logits[i, list(ids)])) in truth[i] for i, ids in enumerate(label_ids)]
    return AnswerStats(np.array(correct, dtype=bool), kl.cpu().numpy())


def caption_ce(logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, n_rows: int) -> np.ndarray:
    """(n_rows,) summed cross-entropy (nats) of each row's caption tokens: ``logits`` (N, V) at the
    positions predicting ``targets`` (N,), which belong to batch rows ``rows`` (N,)."""
    ce = torch.nn.functional.cross_entropy(logits.double(), targets.to(logits.device), reduction="none")
    return torch.zeros(n_rows, dtype=torch.float64).index_add_(0, rows.cpu(), ce.cpu()).numpy()


def ce_score(h_spliced: float, h_orig: float, h_zero: float) -> float | None:
    """(H* - H0) / (H_orig - H0): 1 for a splice that changes nothing, 0 for one as bad as zero-ablation;
    None when zero-ablation does not raise the loss (nothing to recover: the score would be noise or
    flip its sign, as at audio positions of layers the answer no longer reads)."""
    denom = h_orig - h_zero
    if not denom < -1e-12:
        return None
    return (h_spliced - h_zero) / denom
