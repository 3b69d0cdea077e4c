"""Export and import TopK SAEs in EleutherAI sparsify's and SAELens's on-disk layouts.

sparsify (``SparseCoder.save_to_disk``): ``cfg.json`` = its ``SparseCoderConfig`` plus
``d_in``; ``sae.safetensors`` = the module state: ``encoder.weight`` (d_sae, d_in),
``encoder.bias`` (d_sae,), ``W_dec`` (d_sae, d_in), ``b_dec`` (d_in,). Its encoder
is ReLU-then-TopK, which keeps the same values as our TopK-then-ReLU.

SAELens v6 (``SAE.save_model``, architecture ``topk``): ``cfg.json`` with ``d_in``,
``d_sae``, ``k``, ``apply_b_dec_to_input``, ``normalize_activations``,
``rescale_acts_by_decoder_norm``, ``metadata`` {...}; ``sae_weights.safetensors`` =
``W_enc`` (d_in, d_sae), ``b_enc``, ``W_dec`` (d_sae, d_in), ``b_dec``.

Neither tool scales inputs, so export folds ``input_scale`` s into the weights
(W_enc*s, W_dec/s, b_dec/s): the exported SAE reads raw activations. s is a power of
two (see :mod:`ard_core.sae.train`), which makes the fold exact. Our own config
travels along under the key ``ard`` (sparsify drops unknown keys; SAELens keeps
``metadata`` free-form), so importing our export restores the SAE bit for bit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ard_core.config import from_dict, to_dict
from ard_core.sae.model import CFG_FILE, SAE_FORMAT, WEIGHTS_FILE, SaeConfig, TopKSAE

SPARSIFY_WEIGHTS = WEIGHTS_FILE  # "sae.safetensors", the same name as ours
SAELENS_WEIGHTS = "sae_weights.safetensors"
# SAELens reads a cfg.json whose metadata.sae_lens_version is < 6 as the older flat
# layout; this marks the layout written here, not a SAELens install.
SAELENS_SCHEMA_VERSION = "6.0.0"


def _fold(sae: TopKSAE) -> dict[str, Tensor]:
    s = sae.cfg.input_scale
    t = sae.state_tensors()
    return {"W_enc": t["W_enc"] * s, "b_enc": t["b_enc"], "W_dec": t["W_dec"] / s, "b_dec": t["b_dec"] / s}


def _unfold(tensors: dict[str, Tensor], s: float) -> dict[str, Tensor]:
    return {"W_enc": tensors["W_enc"] / s, "b_enc": tensors["b_enc"], "W_dec": tensors["W_dec"] * s, "b_dec": tensors["b_dec"] * s}


def _ard_cfg(stored: dict[str, Any] | None, d_in: int, d_sae: int, k: int, layer: int | None, model: str) -> SaeConfig:
    """Our config back from an export (scale, provenance), or a fresh one for a foreign SAE."""
    if stored:
        cfg = from_dict(SaeConfig, stored, strict=False, where="ard")
        if (cfg.d_in, cfg.d_sae) != (d_in, d_sae):
            raise ValueError(f"the 'ard' block says d_in/d_sae = {(cfg.d_in, cfg.d_sae)}, the weights {(d_in, d_sae)}")
        cfg.k = k  # the tool's own k wins if someone edited it
        return cfg
    return SaeConfig(d_in=d_in, d_sae=d_sae, k=k, input_scale=1.0, model=model, layer=layer)


def _write(folder: Path, weights_name: str, tensors: dict[str, Tensor], cfg: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / weights_name), metadata={"format": "pt"})
    (folder / CFG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")
    return folder


def _layer_from(name: str) -> int | None:
    m = re.search(r"(?:layers[._]|blocks\.)(\d+)", name)
    return int(m.group(1)) if m else None


# -- sparsify ---------------------------------------------------------------------------
def export_sparsify(sae: TopKSAE, folder: str | Path) -> Path:
    """Write ``folder/{cfg.json, sae.safetensors}`` as sparsify saves a TopK SAE.

    sparsify's loaders find an SAE per hookpoint folder (``layers.N``); name
    ``folder`` that way to load it with ``SparseCoder.load_many``.
    """
    c = sae.cfg
    t = _fold(sae)
    cfg = {
        "activation": "topk",
        "expansion_factor": c.d_sae // c.d_in,
        "normalize_decoder": c.input_scale == 1.0,  # decoder rows have norm 1/s after the fold
        "num_latents": c.d_sae,
        "k": c.k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": c.d_in,
        "ard": to_dict(c),
    }
    tensors = {"encoder.weight": t["W_enc"], "encoder.bias": t["b_enc"], "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    return _write(Path(folder), SPARSIFY_WEIGHTS, tensors, cfg)


def import_sparsify(folder: str | Path, device: str = "cpu") -> TopKSAE:
    folder = Path(folder)
    raw = json.loads((folder / CFG_FILE).read_text())
    if raw.get("format") == SAE_FORMAT:
        raise ValueError(f"{folder} holds this project's own format; load it with TopKSAE.load")
    for key, ok in (("activation", "topk"), ("transcode", False), ("skip_connection", False), ("signed", False)):
        if raw.get(key, ok) != ok:
            raise ValueError(f"sparsify SAE {folder}: {key}={raw[key]!r} is not supported (only plain TopK SAEs)")
    w = load_file(str(folder / SPARSIFY_WEIGHTS))
    if "W_skip" in w:
        raise ValueError(f"sparsify SAE {folder} has a skip connection (W_skip); not supported")
    tensors = {"W_enc": w["encoder.weight"], "b_enc": w["encoder.bias"], "W_dec": w["W_dec"], "b_dec": w["b_dec"]}
    d_sae, d_in = tensors["W_enc"].shape
    if raw.get("d_in", d_in) != d_in:
        raise ValueError(f"sparsify SAE {folder}: cfg d_in={raw['d_in']} but encoder.weight is {tuple(tensors['W_enc'].shape)}")
    cfg = _ard_cfg(raw.get("ard"), d_in, d_sae, int(raw["k"]), _layer_from(folder.name), model="")
    return TopKSAE.from_tensors(cfg, _unfold(tensors, cfg.input_scale), device=device, where=str(folder))


# -- SAELens ---------------------------------------------------------------------------------
def export_saelens(sae: TopKSAE, folder: str | Path, hook_name: str | None = None) -> Path:
    """Write ``folder/{cfg.json, sae_weights.safetensors}`` as SAELens v6 saves a ``topk`` SAE."""
    c = sae.cfg
    t = _fold(sae)
    if hook_name is None:
        hook_name = f"blocks.{c.layer}.hook_resid_post" if c.layer is not None else "hook_resid_post"
    cfg = {
        "architecture": "topk",
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": str(t["W_enc"].dtype).removeprefix("torch."),
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "k": c.k,
        "rescale_acts_by_decoder_norm": False,
        "metadata": {
            "sae_lens_version": SAELENS_SCHEMA_VERSION,
            "sae_lens_training_version": None,
            "model_name": c.model,
            "hook_name": hook_name,
            "hook_head_index": None,
            "ard": to_dict(c),
        },
    }
    tensors = {"W_enc": t["W_enc"].T, "b_enc": t["b_enc"], "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    return _write(Path(folder), SAELENS_WEIGHTS, tensors, cfg)


def import_saelens(folder: str | Path, norm_scaling_factor: float | None = None, device: str = "cpu") -> TopKSAE:
    """Read a SAELens TopK SAE (v6 layout, or the older flat one with activation_fn 'topk').

    ``norm_scaling_factor``: for SAEs saved with normalize_activations =
    'expected_average_only_in', whose factor SAELens keeps outside the folder.
    """
    folder = Path(folder)
    raw = json.loads((folder / CFG_FILE).read_text())
    meta = raw.get("metadata") or {}
    k = raw.get("k") or (raw.get("activation_fn_kwargs") or {}).get("k")
    topk = raw.get("architecture") == "topk" or raw.get("activation_fn_str", raw.get("activation_fn")) == "topk"
    if not topk or k is None:
        raise ValueError(f"SAELens SAE {folder} is not a TopK SAE (architecture={raw.get('architecture')!r}); not supported")
    if raw.get("reshape_activations", "none") != "none" or raw.get("hook_head_index") is not None:
        raise ValueError(f"SAELens SAE {folder} reshapes attention heads (hook_z); not supported")
    if raw.get("finetuning_scaling_factor"):
        raise ValueError(f"SAELens SAE {folder} uses finetuning_scaling_factor; not supported")
    w = load_file(str(folder / SAELENS_WEIGHTS))
    W_enc = w["W_enc"].T  # (d_sae, d_in)
    b_enc = w.get("b_enc", torch.zeros(W_enc.shape[0], dtype=W_enc.dtype))
    W_dec, b_dec = w["W_dec"], w["b_dec"]
    if raw.get("rescale_acts_by_decoder_norm", False):
        # TopK ran on pre * ||W_dec row||: fold the norms into the encoder (function kept, to rounding).
        norm = W_dec.norm(dim=1).clamp_min(1e-8)
        W_enc, b_enc, W_dec = W_enc * norm[:, None], b_enc * norm, W_dec / norm[:, None]
    if not raw.get("apply_b_dec_to_input", True):
        b_enc = b_enc + W_enc @ b_dec  # pre = W_enc x + b_enc = W_enc (x - b_dec) + (b_enc + W_enc b_dec)
    norm_mode = raw.get("normalize_activations", "none")
    d_sae, d_in = W_enc.shape
    cfg = _ard_cfg(meta.get("ard"), d_in, d_sae, int(k), _layer_from(meta.get("hook_name") or raw.get("hook_name") or ""),
                   model=meta.get("model_name") or raw.get("model_name") or "")
    tensors = _unfold({"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}, cfg.input_scale)
    if norm_mode == "expected_average_only_in":
        if norm_scaling_factor is None:
            raise ValueError(f"SAELens SAE {folder} expects inputs scaled by a norm factor it does not store; "
                             "pass norm_scaling_factor= (SAELens keeps it in its pretrained_saes.yaml)")
        cfg.input_scale = float(norm_scaling_factor)
    elif norm_mode != "none":
        raise ValueError(f"SAELens SAE {folder}: normalize_activations={norm_mode!r} is not supported")
    return TopKSAE.from_tensors(cfg, tensors, device=device, where=str(folder))


def load_any(folder: str | Path, device: str = "cpu") -> TopKSAE:
    """Load an SAE folder in this project's, sparsify's or SAELens's layout."""
    folder = Path(folder)
    if (folder / SAELENS_WEIGHTS).is_file():
        return import_saelens(folder, device=device)
    raw = json.loads((folder / CFG_FILE).read_text())
    if raw.get("format") == SAE_FORMAT:
        return TopKSAE.load(folder, device=device)
    return import_sparsify(folder, device=device)
