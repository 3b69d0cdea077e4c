"""Interop with the real tools: SAEs exported by this project load in SAELens and sparsify and give the same
latents, and SAEs those tools save import here with the same latents; one of them trained by this project.

Marked ``interop``: they need the ``interop`` extra (``pip install -e ".[interop]"``, pinned versions) and are
skipped without it; ``make test-interop`` (which CI runs) installs it and runs them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from test_sae_formats import trained_looking_sae
from test_sae_train import planted_store, small_section

from ard_core.sae import TopKSAE
from ard_core.sae.formats import export_saelens, export_sparsify, import_saelens, import_sparsify
from ard_core.sae.train import train_sae
from ard_core.store import ActivationStore

pytestmark = pytest.mark.interop
sae_lens = pytest.importorskip("sae_lens", reason="the interop extra is not installed (pip install -e '.[interop]')")
sparsify = pytest.importorskip("sparsify", reason="the interop extra is not installed (pip install -e '.[interop]')")

SPARSIFY_TOL = 4e-6
"""sparsify's encoder subtracts b_dec before its matmul, ours folds it into the bias: float32 rounding differs."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TopKSAE:
    """An SAE this project trained (the train-sae stage's code) on a planted dictionary."""
    tmp = tmp_path_factory.mktemp("trained")
    planted_store(tmp / "acts", n_tokens=10_000)
    section = small_section(steps=120, batch_size=256, warmup_steps=10, log_every=40)
    train_sae(section, ActivationStore(tmp / "acts"), 0, 4, tmp / "sae", model_name="planted",
              device=torch.device("cpu"), progress=False)
    return TopKSAE.load(tmp / "sae")


def _ours(sae: TopKSAE, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return sae.encode_dense(x)


def _sparsify_dense(coder, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    with torch.no_grad():
        out = coder.encode(x)
    return torch.zeros(x.shape[0], coder.num_latents).scatter(1, out.top_indices, out.top_acts)


def _sae_and_inputs(which: str, trained: TopKSAE) -> tuple[TopKSAE, torch.Tensor]:
    if which == "trained":
        torch.manual_seed(1)
        return trained, 5 * torch.randn(256, trained.cfg.d_in) + 2.0
    return trained_looking_sae(scale=0.25), 40 * torch.randn(256, 8)


@pytest.mark.parametrize("which", ["trained", "scaled"])
def test_our_export_loads_in_saelens_with_identical_latents(which: str, trained: TopKSAE, tmp_path: Path) -> None:
    sae, x = _sae_and_inputs(which, trained)
    folder = export_saelens(sae, tmp_path / "saelens")
    theirs = sae_lens.SAE.load_from_disk(str(folder), device="cpu")
    with torch.no_grad():
        got = theirs.encode(x)
    assert torch.equal(got, _ours(sae, x))
    assert_close(theirs.decode(got), sae.reconstruct(x), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("which", ["trained", "scaled"])
def test_our_export_loads_in_sparsify_with_the_same_latents(which: str, trained: TopKSAE, tmp_path: Path) -> None:
    sae, x = _sae_and_inputs(which, trained)
    folder = export_sparsify(sae, tmp_path / "layers.0")
    coder = sparsify.SparseCoder.load_from_disk(folder, device="cpu")
    got, want = _sparsify_dense(coder, x), _ours(sae, x)
    assert torch.equal(got > 0, want > 0)  # the same features fire on every token
    assert (got - want).abs().max() <= SPARSIFY_TOL * max(1.0, want.abs().max().item())


def test_an_saelens_sae_imports_with_identical_latents(tmp_path: Path) -> None:
    from sae_lens.saes.topk_sae import TopKSAE as LensTopK
    from sae_lens.saes.topk_sae import TopKSAEConfig

    torch.manual_seed(0)
    theirs = LensTopK(TopKSAEConfig(d_in=16, d_sae=64, k=5, dtype="float32", device="cpu"))
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.3)
    theirs.save_model(str(tmp_path / "sae"))
    ours = import_saelens(tmp_path / "sae")
    x = 3 * torch.randn(128, 16)
    with torch.no_grad():
        assert torch.equal(_ours(ours, x), theirs.encode(x))


def test_a_sparsify_sae_imports_with_the_same_latents(tmp_path: Path) -> None:
    torch.manual_seed(0)
    coder = sparsify.SparseCoder(16, sparsify.SparseCoderConfig(num_latents=64, k=5), device="cpu")
    with torch.no_grad():
        coder.b_dec.normal_(0, 0.5)
        coder.encoder.bias.normal_(0, 0.2)
    coder.save_to_disk(tmp_path / "layers.2")
    ours = import_sparsify(tmp_path / "layers.2")
    assert (ours.cfg.layer, ours.cfg.k, ours.cfg.d_sae) == (2, 5, 64)
    x = 3 * torch.randn(128, 16)
    got, want = _ours(ours, x), _sparsify_dense(coder, x)
    assert torch.equal(got > 0, want > 0)
    assert (got - want).abs().max() <= SPARSIFY_TOL * max(1.0, want.abs().max().item())
