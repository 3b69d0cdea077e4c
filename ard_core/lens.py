"""AudioLens: the logit lens over layers and token positions (sections IV-VI).

Layer numbering follows the paper and HF's ``hidden_states``: lens layer
``ell = 1..L`` is the output of decoder layer ``ell - 1`` (so the SAE/store layer
``l`` is lens layer ``l + 1``); the embeddings would be ``ell = 0`` and are not
lensed. Every layer is read from ONE forward pass with hooks that keep only the
requested positions, then ``p = softmax(W_U norm(h))`` (eq. 1). The hooks see the
pre-norm stream at every layer, so the final norm is applied exactly once
everywhere (HF's last hidden state is already normed; it is not used here).

Since eq. 2 only needs the argmax over the label tokens, the unembedding is
restricted to the label rows by default (the argmax over labels of the full
softmax equals the argmax of the label logits). ``full_softmax=True`` also
returns the label probabilities under the full-vocabulary softmax.

Label tokens follow :func:`ard_core.prompts.label_token_ids`: a label maps to its
first sub-token, preferring the leading-space variant.

Positions are counted from the end (-1 = last token "is", -2 = the token before
it, e.g. "gender"); adapters pad on the left so -1 is real in every row.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch

from ard_core.activations import _hidden
from ard_core.models.base import AudioLLM

DEFAULT_ALPHA = 0.2


class LensOutput(NamedTuple):
    label_logits: torch.Tensor  # (B, L, P, Y) logits of the label tokens, layer ell = index + 1
    label_probs: torch.Tensor | None  # (B, L, P, Y) full-vocabulary softmax probabilities, when asked


def unembed_labels(llm: AudioLLM, h: torch.Tensor, label_ids: torch.Tensor) -> torch.Tensor:
    """norm then W_U restricted to ``label_ids``: (..., d) -> (..., Y)."""
    normed = llm.final_norm(h)
    w = llm.lm_head.weight[label_ids]  # (Y, d)
    out = normed @ w.T
    bias = getattr(llm.lm_head, "bias", None)
    return out + bias[label_ids] if bias is not None else out


@torch.inference_mode()
def logit_lens(
    llm: AudioLLM,
    inputs: dict,
    label_ids: Sequence[int],
    positions: Sequence[int] = (-1,),
    full_softmax: bool = False,
) -> LensOutput:
    """Lens of every layer at ``positions`` from a single forward pass."""
    pos = torch.tensor(list(positions), device=llm.device)
    captured: list[torch.Tensor | None] = [None] * llm.n_layers
    handles = []
    for i, layer in enumerate(llm.layers):
        def hook(_m: torch.nn.Module, _in: object, out: object, i: int = i) -> None:
            captured[i] = _hidden(out)[:, pos].detach()  # (B, P, d): only what the lens needs

        handles.append(layer.register_forward_hook(hook))
    try:
        llm.model(**inputs, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    hs = torch.stack(captured, dim=1)  # (B, L, P, d)
    ids = torch.as_tensor(list(label_ids), device=hs.device)
    logits = unembed_labels(llm, hs, ids).float()
    probs = None
    if full_softmax:
        probs = torch.softmax(llm.lm_head(llm.final_norm(hs)).float(), dim=-1)[..., ids]
    return LensOutput(logits, probs)


def audio_masked_attention(llm: AudioLLM, inputs: dict) -> dict:
    """Inputs whose 4D attention mask hides the audio positions from the LAST query only.

    Other positions attend as usual (the paper masks at the last token only). The
    mask is additive float (0 = attend, dtype min = blocked), which the eager and
    SDPA attention implementations accept; flash-attention-2 takes no custom 4D
    masks, so load the model with ``attn_implementation="sdpa"`` or ``"eager"``.
    """
    ids = inputs["input_ids"]
    B, S = ids.shape
    dtype = next(llm.model.parameters()).dtype
    allowed = torch.ones(S, S, dtype=torch.bool, device=ids.device).tril()  # causal
    allowed = allowed.unsqueeze(0) & inputs["attention_mask"].bool()[:, None, :]  # key padding
    allowed = allowed.clone()
    allowed[:, -1, :] &= ~llm.audio_positions(ids)
    # A fully padded query row would be all-blocked (NaN softmax); let it see itself.
    eye = torch.eye(S, dtype=torch.bool, device=ids.device).unsqueeze(0)
    allowed |= eye & ~allowed.any(-1, keepdim=True)
    mask = torch.zeros(B, 1, S, S, dtype=dtype, device=ids.device)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    out = dict(inputs)
    out["attention_mask"] = mask
    return out


@contextmanager
def enrichment(
    llm: AudioLLM, source: int | torch.Tensor, gap: int, lam: float | torch.Tensor
) -> Iterator[None]:
    """Eq. 5: h^{source+gap}_{-1} += lam * h^{source}_{-1} (lens layers, 1-based).

    ``source`` and ``lam`` are scalars or (B,) tensors (a layer / scale per row,
    as in the random-layer baseline). Only the last position of each row's
    target layer is edited. Hooks registered later on the same layers see the
    edited output.
    """
    L = llm.n_layers
    src = torch.as_tensor(source).reshape(-1)
    if (src < 1).any() or (src + gap > L).any():
        raise ValueError(f"enrichment needs 1 <= source and source + gap <= {L}; got source={source}, gap={gap}")
    saved: dict[int, torch.Tensor] = {}  # lens layer -> (B, d) last-position state

    def rows_src(batch: int) -> torch.Tensor:
        return src.expand(batch) if src.numel() == 1 else src

    def keep(ell: int):  # noqa: ANN202
        def hook(_m: torch.nn.Module, _in: object, out: object) -> None:
            saved[ell] = _hidden(out)[:, -1].detach().clone()
        return hook

    def add(target: int):  # noqa: ANN202
        def hook(_m: torch.nn.Module, _in: object, out: object):  # noqa: ANN202
            h = _hidden(out).clone()
            per_row = rows_src(h.shape[0])
            scale = torch.as_tensor(lam, dtype=h.dtype, device=h.device).reshape(-1).expand(h.shape[0])
            for b in torch.nonzero(per_row + gap == target).flatten().tolist():
                h[b, -1] += scale[b] * saved[int(per_row[b])][b]
            return (h,) + tuple(out[1:]) if isinstance(out, tuple) else h
        return hook

    handles = [llm.layers[s - 1].register_forward_hook(keep(s)) for s in sorted(set(src.tolist()))]
    handles += [llm.layers[t - 1].register_forward_hook(add(t)) for t in sorted(set((src + gap).tolist()))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# -- statistics ---------------------------------------------------------------------------
def information_scores(pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Eq. 2: pred (N, L) argmax label index per sample and layer, gold (N,) -> I (L,)."""
    pred = np.asarray(pred)
    if pred.shape[0] == 0:
        return np.full(pred.shape[1:], np.nan)
    return (pred == np.asarray(gold)[:, None]).mean(axis=0)


def critical_layer(scores: Sequence[float], n_labels: int, alpha: float = DEFAULT_ALPHA) -> float:
    """Eqs. 3-4 over lens layers ell = 1..L; NaN when no layer clears (1 + alpha) / |Y|."""
    I = np.asarray(scores, dtype=np.float64)
    s = np.maximum(0.0, I - (1 + alpha) / n_labels)
    if s.sum() == 0:
        return float("nan")
    ell = np.arange(1, len(I) + 1)
    return float((s * ell).sum() / s.sum())


def pearson(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Pearson r and two-sided p-value (Table III); NaN pairs dropped."""
    from scipy.stats import pearsonr

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = ~(np.isnan(x) | np.isnan(y))
    if ok.sum() < 3:
        return float("nan"), float("nan")
    r, p = pearsonr(x[ok], y[ok])
    return float(r), float(p)


def enrich_source_layer(scores_incorrect: Sequence[float], n_layers: int, gap: int) -> int:
    """l-bar: the lens layer of highest information among incorrect probe samples,
    among the layers that leave room for ``gap`` more (ties: the earliest)."""
    I = np.asarray(scores_incorrect, dtype=np.float64)[: n_layers - gap]
    if I.size == 0:
        raise ValueError(f"gap {gap} leaves no source layer in a {n_layers}-layer model")
    return int(np.nanargmax(I)) + 1
