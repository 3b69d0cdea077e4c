"""Steering by clamping SAE features (AR&D Fig. 2), live and in batch.

At the SAE's layer, for the chosen positions: x -> pre-TopK latents; feature k's
pre-activation is set to (or increased by) the steering value; TopK; decode to
x_hat'. With ``keep_error`` (default) the layer output becomes
``x + (x_hat' - x_hat)``, i.e. x_hat' plus the SAE's reconstruction error
x - x_hat, written so that an unchanged latent vector gives x back bit for bit.
Without it (the paper's variant) the output is x_hat'.

When the steered feature was already among the K active latents, the output
moves only along its decoder row. When it was not, TopK makes room by dropping
the weakest latent, as Fig. 2 does, and that latent's direction moves too.

Positions: ``audio`` (audio tokens), ``prompt`` (every prompt token), and
``generated`` (each token produced during generation; with a KV cache those
forwards see one new position at a time). The ``poly`` baseline clamps raw
neuron i of x instead of an SAE feature.

:class:`RowSteer` / :func:`steering_rows` set a different (feature, value) in each batch
row, so that one forward judges many steered variants of a clip pool
(:mod:`ard_core.steer_batch`); row by row it equals :func:`steer_vectors`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from ard_core.activations import _hidden
from ard_core.models.base import AudioLLM

if TYPE_CHECKING:  # pragma: no cover
    from ard_core.catalog import Catalog

POSITION_KINDS = ("audio", "prompt", "generated")


@dataclass
class SteerSpec:
    """One SAE (or raw-neuron basis) and the features to steer on it."""

    layer: int
    """0-based decoder layer the SAE reads (its output is edited)."""
    values: dict[int, float]
    """feature (or neuron, for poly) -> steering value."""
    sae: torch.nn.Module | None = None
    """A TopKSAE; None steers raw neurons of x (the 'poly' baseline)."""
    mode: str = "set"
    """'set' the pre-activation to the value, or 'add' the value to it."""
    keep_error: bool = True
    """Keep the SAE's reconstruction error (x - x_hat), so only the steered concept moves."""

    def __post_init__(self) -> None:
        if self.mode not in ("set", "add"):
            raise ValueError(f"steering mode {self.mode!r}: use 'set' or 'add'")
        for k, v in self.values.items():
            if not np.isfinite(v):
                raise ValueError(f"steering value for feature {k} is {v}; it must be a finite number")
        n = self.sae.cfg.d_sae if self.sae is not None else None
        for k in self.values:
            if k < 0 or (n is not None and k >= n):
                raise ValueError(f"feature {k} does not exist (the SAE has {n} features)")


def _edit(values: torch.Tensor, spec: SteerSpec) -> torch.Tensor:
    """Apply set/add of spec.values to the last dim of ``values`` (n, F)."""
    out = values.clone()
    idx = torch.tensor(list(spec.values), device=values.device)
    vals = torch.tensor(list(spec.values.values()), dtype=values.dtype, device=values.device)
    out[:, idx] = vals if spec.mode == "set" else out[:, idx] + vals
    return out


def steer_vectors(x: torch.Tensor, spec: SteerSpec) -> torch.Tensor:
    """(n, d) residual vectors -> steered (n, d)."""
    if spec.sae is None:
        return _edit(x, spec)  # poly: raw neurons
    sae = spec.sae
    pre = sae.pre_acts(x)
    base = sae.decode(*sae.topk(pre))
    steered = sae.decode(*sae.topk(_edit(pre, spec)))
    if spec.keep_error:
        return (x.to(steered.dtype) + (steered - base)).to(x.dtype)
    return steered.to(x.dtype)


@dataclass
class RowSteer:
    """A different (feature, value) per batch row on one SAE (or raw-neuron basis): many steered
    variants of a clip pool in one forward (ard_core.steer_batch), 'set' mode."""

    layer: int
    """0-based decoder layer the SAE reads (its output is edited)."""
    features: torch.Tensor
    """(B,) int64: the feature (or neuron) set in each batch row; -1 leaves the row unsteered."""
    values: torch.Tensor
    """(B,) float: the value each row's feature is set to."""
    sae: torch.nn.Module | None = None
    """A TopKSAE; None sets raw neurons of x (the 'poly' baseline)."""
    keep_error: bool = True
    """Keep the SAE's reconstruction error (x - x_hat), as SteerSpec does."""

    def __post_init__(self) -> None:
        if self.features.shape != self.values.shape or self.features.ndim != 1:
            raise ValueError(f"RowSteer needs one feature and one value per row; got shapes "
                             f"{tuple(self.features.shape)} and {tuple(self.values.shape)}")
        if not torch.isfinite(self.values).all():
            raise ValueError("every RowSteer value must be a finite number")
        n = self.sae.cfg.d_sae if self.sae is not None else None
        if n is not None and self.features.numel() and int(self.features.max()) >= n:
            raise ValueError(f"feature {int(self.features.max())} does not exist (the SAE has {n} features)")


def steer_rows(x: torch.Tensor, rows: torch.Tensor, spec: RowSteer) -> torch.Tensor:
    """(n, d) residual vectors, each from batch row ``rows[i]`` -> steered (n, d): vector i gets
    row rows[i]'s feature set to its value. Equals :func:`steer_vectors` row by row."""
    feat = spec.features.to(x.device)[rows]
    val = spec.values.to(x.device)[rows]
    on = feat >= 0
    idx = torch.arange(x.shape[0], device=x.device)[on]
    if spec.sae is None:
        out = x.clone()
        out[idx, feat[on]] = val[on].to(x.dtype)
        return out
    sae = spec.sae
    pre = sae.pre_acts(x)
    base = sae.decode(*sae.topk(pre))
    edited = pre.clone()
    edited[idx, feat[on]] = val[on].to(pre.dtype)
    steered = sae.decode(*sae.topk(edited))
    if spec.keep_error:
        return (x.to(steered.dtype) + (steered - base)).to(x.dtype)
    return steered.to(x.dtype)


def set_delta(sae: torch.nn.Module, top_vals: torch.Tensor, top_idx: torch.Tensor, features: torch.Tensor,
              values: torch.Tensor) -> torch.Tensor:
    """(n, d) change that setting ``features[i]`` to ``values[i]`` makes to token i's SAE output, from its
    top-(K+1) pre-activations (``top_vals`` sorted high to low, ``top_idx`` their latents): steer_rows's
    ``steered - base`` without encoding the token again. Feature -1 changes nothing.

    With S the top K, kth its last and next the (K+1)-th: a feature in S set at least to next keeps S
    (only its own activation moves); set below next it leaves and next enters. A feature outside S set
    above kth enters and kth leaves; otherwise nothing changes.
    """
    k = sae.cfg.k
    feats = features.clamp(min=0)
    val = values.to(top_vals.dtype)
    in_set = top_idx[:, :k] == feats[:, None]
    has = in_set.any(1)
    old = torch.where(in_set, top_vals[:, :k], torch.zeros_like(top_vals[:, :k])).sum(1)
    kth_v, kth_i, nxt_v, nxt_i = top_vals[:, k - 1], top_idx[:, k - 1], top_vals[:, k], top_idx[:, k]
    stays = has & (val >= nxt_v)
    leaves = has & ~stays
    enters = ~has & (val > kth_v)
    a = torch.where(stays, val.relu() - old.relu(), torch.where(leaves, -old.relu(),
                                                                torch.where(enters, val.relu(), 0.0)))
    b = torch.where(leaves, nxt_v.relu(), torch.where(enters, -kth_v.relu(), 0.0))
    other = torch.where(leaves, nxt_i, kth_i)
    off = features < 0
    a, b = a.masked_fill(off, 0.0), b.masked_fill(off, 0.0)
    w = sae.W_dec.detach()
    return (a[:, None] * w[feats] + b[:, None] * w[other]) / sae.cfg.input_scale


def position_mask(llm: AudioLLM, positions: Sequence[str], input_ids: torch.Tensor,
                  attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, S) bool: the prefill positions steered for ``positions`` ('audio', 'prompt')."""
    bad = [p for p in positions if p not in POSITION_KINDS]
    if bad:
        raise ValueError(f"steering positions {bad} unknown; use {list(POSITION_KINDS)}")
    real = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    if "prompt" in positions:
        mask |= real
    if "audio" in positions:
        mask |= llm.audio_positions(input_ids)
    return mask


Edit = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(n, d) selected vectors, (n,) their batch rows -> the edited (n, d)."""


def _hook(layer: torch.nn.Module, edit: Edit, mask: torch.Tensor, generated: bool) -> torch.utils.hooks.RemovableHandle:
    """A forward hook on ``layer`` that edits the prefill at ``mask`` (and every later one-token
    forward when ``generated``)."""
    prefill_len = mask.shape[1]

    def hook(_m: torch.nn.Module, _in: object, out: object):  # noqa: ANN202
        h = _hidden(out)
        if h.shape[1] == prefill_len:
            sel = mask.to(h.device)
        elif generated:
            sel = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
        else:
            return None
        if not sel.any():
            return None
        h = h.clone()
        rows = sel.nonzero()[:, 0]
        h[sel] = edit(h[sel], rows)
        return (h,) + tuple(out[1:]) if isinstance(out, tuple) else h

    return layer.register_forward_hook(hook)


@contextmanager
def _hooked(llm: AudioLLM, edits: Sequence[tuple[int, Edit]], mask: torch.Tensor, generated: bool) -> Iterator[None]:
    handles = []
    for layer, edit in edits:
        if not 0 <= layer < llm.n_layers:
            raise ValueError(f"steering layer {layer} out of range 0..{llm.n_layers - 1}")
        handles.append(_hook(llm.layers[layer], edit, mask, generated))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def steering(llm: AudioLLM, specs: Sequence[SteerSpec], positions: Sequence[str], input_ids: torch.Tensor,
             attention_mask: torch.Tensor | None = None) -> Iterator[None]:
    """Hooks that steer ``specs`` at ``positions`` for every forward inside the block.

    The prefill forward (the whole prompt) is steered at the audio and/or prompt
    positions of ``input_ids``; later one-token forwards (generation with a KV
    cache) are steered when 'generated' is among ``positions``.
    """
    mask = position_mask(llm, positions, input_ids, attention_mask)
    edits = [(spec.layer, lambda v, _rows, spec=spec: steer_vectors(v, spec)) for spec in specs]
    with _hooked(llm, edits, mask, "generated" in positions):
        yield


@contextmanager
def steering_delta(llm: AudioLLM, layer: int, delta: torch.Tensor, mask: torch.Tensor) -> Iterator[None]:
    """The prefill output of ``layer`` gets ``delta`` (B, S, d) added at ``mask`` (B, S): a steering whose
    change is known beforehand (:meth:`ard_core.steer_batch.ClipPool.steered`)."""
    add = delta[mask]
    with _hooked(llm, [(layer, lambda v, _rows: v + add.to(v.device, v.dtype))], mask, False):
        yield


@contextmanager
def steering_rows(llm: AudioLLM, spec: RowSteer, positions: Sequence[str], input_ids: torch.Tensor,
                  attention_mask: torch.Tensor | None = None) -> Iterator[None]:
    """Like :func:`steering`, for one :class:`RowSteer`: each batch row steered its own way (prefill only)."""
    mask = position_mask(llm, [p for p in positions if p != "generated"], input_ids, attention_mask)
    with _hooked(llm, [(spec.layer, lambda v, rows: steer_rows(v, rows, spec))], mask, False):
        yield


class RunOutput(NamedTuple):
    text: str
    label_probs: dict[str, float] | None  # next-token probability of each label at the last prompt position
    lens: np.ndarray | None  # (L, Y) per-layer label probabilities (full softmax) at the last position


class SteerResult(NamedTuple):
    original: RunOutput
    steered: RunOutput


@torch.inference_mode()
def _run(llm: AudioLLM, inputs: dict, max_new_tokens: int, labels: Sequence[str] | None,
         label_ids: Sequence[int] | None, with_lens: bool) -> RunOutput:
    probs = lens_arr = None
    if label_ids is not None:
        if with_lens:
            from ard_core.lens import logit_lens

            out = logit_lens(llm, inputs, label_ids, positions=(-1,), full_softmax=True)
            lens_arr = out.label_probs[0, :, 0].cpu().numpy()
            last = lens_arr[-1]
        else:
            logits = llm.model(**inputs, use_cache=False).logits[0, -1].float()
            last = torch.softmax(logits, -1)[torch.as_tensor(list(label_ids))].cpu().numpy()
        probs = {l: float(p) for l, p in zip(labels or [], last)}
    gen = llm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=llm.tokenizer.pad_token_id)
    text = llm.tokenizer.decode(gen[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return RunOutput(text.strip(), probs, lens_arr)


def steer(
    llm: AudioLLM,
    audio: np.ndarray,
    prompt: str,
    specs: Sequence[SteerSpec],
    positions: Sequence[str] = ("audio", "prompt", "generated"),
    max_new_tokens: int = 32,
    labels: Sequence[str] | None = None,
    with_lens: bool = False,
) -> SteerResult:
    """Original and steered generations (greedy) for one clip and a built prompt.

    ``labels`` (e.g. ['male', 'female']) adds their next-token probabilities at the
    last prompt position for both runs, and ``with_lens`` the per-layer lens of them.
    """
    inputs = llm.prepare([audio], [prompt])
    label_ids = None
    if labels:
        from ard_core.prompts import label_token_ids

        label_ids = label_token_ids(llm.tokenizer, labels)
    original = _run(llm, inputs, max_new_tokens, labels, label_ids, with_lens)
    with steering(llm, specs, positions, inputs["input_ids"], inputs.get("attention_mask")):
        steered = _run(llm, inputs, max_new_tokens, labels, label_ids, with_lens)
    return SteerResult(original, steered)


def specs_for_features(cat: "Catalog", values: Mapping[str, float], mode: str = "set", keep_error: bool = True,
                       device: str = "cpu", cache: dict | None = None) -> list[SteerSpec]:
    """{"SAE_ID/K": value} -> one SteerSpec per SAE, loading each SAE once (``cache`` keeps them)."""
    from ard_core.catalog import SaeRow, parse_feature_ref
    from ard_core.sae import TopKSAE

    cache = {} if cache is None else cache
    grouped: dict[str, dict[int, float]] = {}
    for ref, value in values.items():
        fr = parse_feature_ref(ref)
        grouped.setdefault(fr.sae_id, {})[fr.feature] = float(value)
    specs = []
    for sae_id, vals in grouped.items():
        rows = cat.rows(SaeRow, "sae_id = ?", [sae_id])
        if not rows:
            raise ValueError(f"SAE {sae_id!r} is not in the catalog; see the saes table for the available ids")
        if sae_id not in cache:
            cache[sae_id] = TopKSAE.load(rows[0].path, device=device).eval()
        specs.append(SteerSpec(layer=rows[0].layer, values=vals, sae=cache[sae_id], mode=mode, keep_error=keep_error))
    return specs
