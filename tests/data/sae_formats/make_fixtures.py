"""Write the small SAE fixtures in sparsify's and SAELens's on-disk layouts.

Run from the repository root: ``python tests/data/sae_formats/make_fixtures.py``.
The files mirror what ``sparsify.SparseCoder.save_to_disk`` (sparsify, 2025) and
``sae_lens.SAE.save_model`` (SAELens v6, ``topk`` architecture) write: the same
file names, tensor names, shapes and cfg.json keys. Neither tool is installed
here, so the weights are random tensors laid out as each tool's module holds them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).parent
D_IN, D_SAE, K, LAYER = 8, 32, 4, 3


def sparsify() -> None:
    g = torch.Generator().manual_seed(1)
    folder = HERE / "sparsify" / f"layers.{LAYER}"  # one folder per hookpoint, as sparsify trains
    folder.mkdir(parents=True, exist_ok=True)
    enc_w = torch.randn(D_SAE, D_IN, generator=g) / D_IN**0.5  # nn.Linear(d_in, num_latents).weight
    W_dec = enc_w / enc_w.norm(dim=1, keepdim=True)  # decoder = encoder, unit rows
    state = {
        "encoder.weight": enc_w,
        "encoder.bias": 0.1 * torch.randn(D_SAE, generator=g),
        "W_dec": W_dec + 0.05 * torch.randn(D_SAE, D_IN, generator=g),  # "trained" a little
        "b_dec": torch.randn(D_IN, generator=g),
    }
    save_file(state, str(folder / "sae.safetensors"), metadata={"format": "pt"})  # safetensors.torch.save_model
    cfg = {"activation": "topk", "expansion_factor": D_SAE // D_IN, "normalize_decoder": True, "num_latents": 0,
           "k": K, "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": D_IN}
    (folder / "cfg.json").write_text(json.dumps(cfg))  # json.dump({**cfg.to_dict(), "d_in": d_in}, f)


def saelens() -> None:
    g = torch.Generator().manual_seed(2)
    folder = HERE / "saelens" / f"blocks.{LAYER}.hook_resid_post"
    folder.mkdir(parents=True, exist_ok=True)
    W_dec = torch.randn(D_SAE, D_IN, generator=g)
    W_dec = 0.5 * W_dec / W_dec.norm(dim=1, keepdim=True)  # inference export: norms need not be 1
    state = {
        "b_dec": torch.randn(D_IN, generator=g),
        "W_dec": W_dec,
        "W_enc": (W_dec.T + 0.05 * torch.randn(D_IN, D_SAE, generator=g)).contiguous(),
        "b_enc": 0.1 * torch.randn(D_SAE, generator=g),
    }
    save_file(state, str(folder / "sae_weights.safetensors"))
    cfg = {
        "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
        "normalize_activations": "none", "reshape_activations": "none",
        "metadata": {"sae_lens_version": "6.12.1", "sae_lens_training_version": "6.12.1",
                     "model_name": "tiny-audiollm", "hook_name": f"blocks.{LAYER}.hook_resid_post",
                     "model_class_name": "HookedTransformer", "hook_head_index": None, "context_size": 128,
                     "seqpos_slice": [None], "model_from_pretrained_kwargs": {}, "prepend_bos": True,
                     "exclude_special_tokens": False, "dataset_path": "local", "neuronpedia_id": None},
        "k": K, "rescale_acts_by_decoder_norm": False, "architecture": "topk",
    }
    (folder / "cfg.json").write_text(json.dumps(cfg))


if __name__ == "__main__":
    sparsify()
    saelens()
