"""sparsify and SAELens export/import, against fixtures in their on-disk layouts and
against each tool's forward pass written out by hand (neither tool is installed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.testing import assert_close

from ard_core.sae import SaeConfig, TopKSAE
from ard_core.sae.formats import export_saelens, export_sparsify, import_saelens, import_sparsify, load_any

FIXTURES = Path(__file__).parent / "data" / "sae_formats"
SPARSIFY_DIR = FIXTURES / "sparsify" / "layers.3"
SAELENS_DIR = FIXTURES / "saelens" / "blocks.3.hook_resid_post"


def sparsify_forward(folder: Path, x: torch.Tensor) -> torch.Tensor:
    """sparsify's SparseCoder.forward: ReLU(encoder(x - b_dec)) -> topk -> W_dec rows + b_dec."""
    cfg = json.loads((folder / "cfg.json").read_text())
    w = load_file(str(folder / "sae.safetensors"))
    pre = torch.relu(torch.nn.functional.linear(x - w["b_dec"], w["encoder.weight"], w["encoder.bias"]))
    acts, idx = pre.topk(cfg["k"], dim=-1, sorted=False)
    return torch.nn.functional.embedding_bag(idx, w["W_dec"], per_sample_weights=acts, mode="sum") + w["b_dec"]


def saelens_forward(folder: Path, x: torch.Tensor, norm_factor: float = 1.0) -> torch.Tensor:
    """SAELens TopKSAE.forward (v6), including the options the importer folds away."""
    cfg = json.loads((folder / "cfg.json").read_text())
    w = load_file(str(folder / "sae_weights.safetensors"))
    x_in = x * norm_factor if cfg["normalize_activations"] == "expected_average_only_in" else x
    hidden_pre = (x_in - w["b_dec"] * cfg["apply_b_dec_to_input"]) @ w["W_enc"] + w["b_enc"]
    if cfg["rescale_acts_by_decoder_norm"]:
        hidden_pre = hidden_pre * w["W_dec"].norm(dim=-1)
    vals, idx = hidden_pre.topk(cfg["k"], dim=-1, sorted=False)
    acts = torch.zeros_like(hidden_pre).scatter(-1, idx, vals.relu())
    if cfg["rescale_acts_by_decoder_norm"]:
        acts = acts / w["W_dec"].norm(dim=-1)
    out = acts @ w["W_dec"] + w["b_dec"]
    return out / norm_factor if cfg["normalize_activations"] == "expected_average_only_in" else out


def trained_looking_sae(scale: float = 0.25) -> TopKSAE:
    torch.manual_seed(3)
    sae = TopKSAE(SaeConfig(d_in=8, d_sae=32, k=4, input_scale=scale, model="tiny-audiollm", layer=4,
                            dead_tokens_threshold=5000))
    with torch.no_grad():
        sae.W_enc.add_(0.2 * torch.randn_like(sae.W_enc))
        sae.b_enc.normal_(0, 0.3)
        sae.b_dec.normal_(0, 2)
    return sae


def test_sparsify_fixture_imports_with_its_forward() -> None:
    sae = import_sparsify(SPARSIFY_DIR)
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k, sae.cfg.layer, sae.cfg.input_scale) == (8, 32, 4, 3, 1.0)
    x = 2 * torch.randn(64, 8)
    assert_close(sae.reconstruct(x), sparsify_forward(SPARSIFY_DIR, x))


def test_saelens_fixture_imports_with_its_forward() -> None:
    sae = import_saelens(SAELENS_DIR)
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k, sae.cfg.layer, sae.cfg.model) == (8, 32, 4, 3, "tiny-audiollm")
    x = 2 * torch.randn(64, 8)
    assert_close(sae.reconstruct(x), saelens_forward(SAELENS_DIR, x))


@pytest.mark.parametrize("fmt", ["sparsify", "saelens"])
def test_fixture_round_trip_writes_the_same_tensors(fmt: str, tmp_path: Path) -> None:
    src, imp, exp, weights = {
        "sparsify": (SPARSIFY_DIR, import_sparsify, export_sparsify, "sae.safetensors"),
        "saelens": (SAELENS_DIR, import_saelens, export_saelens, "sae_weights.safetensors"),
    }[fmt]
    exp(imp(src), tmp_path / "out")
    before, after = load_file(str(src / weights)), load_file(str(tmp_path / "out" / weights))
    assert set(before) == set(after)
    for name in before:
        assert torch.equal(before[name], after[name]), name
    cfg_before = json.loads((src / "cfg.json").read_text())
    cfg_after = json.loads((tmp_path / "out" / "cfg.json").read_text())
    for key in ("k", "d_in") + (("d_sae", "architecture", "apply_b_dec_to_input", "normalize_activations") if fmt == "saelens" else ()):
        assert cfg_after[key] == cfg_before[key], key
    if fmt == "saelens":
        assert cfg_after["metadata"]["hook_name"] == cfg_before["metadata"]["hook_name"]


@pytest.mark.parametrize("fmt", ["sparsify", "saelens"])
def test_our_sae_round_trips_bit_for_bit(fmt: str, tmp_path: Path) -> None:
    sae = trained_looking_sae(scale=0.25)
    exp, imp, forward = {
        "sparsify": (export_sparsify, import_sparsify, sparsify_forward),
        "saelens": (export_saelens, import_saelens, saelens_forward),
    }[fmt]
    folder = exp(sae, tmp_path / "layers.4")
    x = 40 * torch.randn(64, 8)
    # the exported files alone, read the way the tool reads them, reconstruct raw activations
    assert_close(forward(folder, x), sae.reconstruct(x), rtol=1e-5, atol=1e-4)
    back = imp(folder)
    assert back.cfg == sae.cfg
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(back, name), getattr(sae, name)), name
    assert load_any(folder).cfg == sae.cfg


def test_saelens_options_are_folded(tmp_path: Path) -> None:
    folder = tmp_path / "sae"
    shutil.copytree(SAELENS_DIR, folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg.update(apply_b_dec_to_input=False, rescale_acts_by_decoder_norm=True, normalize_activations="expected_average_only_in")
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="norm_scaling_factor"):
        import_saelens(folder)
    sae = import_saelens(folder, norm_scaling_factor=0.125)
    x = 30 * torch.randn(64, 8)
    assert_close(sae.reconstruct(x), saelens_forward(folder, x, norm_factor=0.125), rtol=1e-5, atol=1e-4)


def test_load_any_detects_each_layout(tmp_path: Path) -> None:
    ours = trained_looking_sae()
    ours.save(tmp_path / "ours")
    assert torch.equal(load_any(tmp_path / "ours").W_enc, ours.W_enc)
    assert load_any(SPARSIFY_DIR).cfg.k == 4
    assert load_any(SAELENS_DIR).cfg.model == "tiny-audiollm"
    with pytest.raises(ValueError, match="own format"):
        import_sparsify(tmp_path / "ours")


@pytest.mark.parametrize("edit,match", [
    ({"activation": "groupmax"}, "activation"),
    ({"transcode": True}, "transcode"),
])
def test_unsupported_sparsify_variants_are_refused(edit: dict, match: str, tmp_path: Path) -> None:
    folder = tmp_path / "layers.3"
    shutil.copytree(SPARSIFY_DIR, folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg.update(edit)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=match):
        import_sparsify(folder)


def test_sparsify_skip_connection_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "layers.3"
    shutil.copytree(SPARSIFY_DIR, folder)
    w = load_file(str(folder / "sae.safetensors"))
    w["W_skip"] = torch.zeros(8, 8)
    save_file(w, str(folder / "sae.safetensors"))
    with pytest.raises(ValueError, match="W_skip"):
        import_sparsify(folder)
