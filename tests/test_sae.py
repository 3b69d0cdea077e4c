"""The TopK SAE model: the sparse fast path against the dense-scatter reference,
the inference API against the training forward, save/load, decoder constraints, AuxK."""

from __future__ import annotations

import json

import pytest
import torch
from torch.testing import assert_close

from ard_core.sae import SaeConfig, TopKSAE
from ard_core.sae.recipe import DeadTracker, make_optimizer, train_step


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads, and lose a lot when other jobs share the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _pair(d_in: int, d_sae: int, k: int, seed: int = 0) -> tuple[TopKSAE, TopKSAE]:
    """Two SAEs with identical, non-trivial weights: one sparse path, one dense."""
    torch.manual_seed(seed)
    fast = TopKSAE(SaeConfig(d_in=d_in, d_sae=d_sae, k=k))
    with torch.no_grad():
        fast.W_enc.add_(0.3 * torch.randn_like(fast.W_enc))  # encoder no longer the exact transpose
        fast.b_enc.normal_(0, 0.5)
        fast.b_dec.normal_()
    ref = TopKSAE(fast.cfg)
    ref.load_state_dict(fast.state_dict())
    fast.impl, ref.impl = "sparse", "dense"
    return fast, ref


@pytest.mark.parametrize("d_in,d_sae,k", [(16, 64, 5), (8, 128, 1), (12, 24, 24), (32, 256, 40)])
@pytest.mark.parametrize("with_auxk", [False, True])
def test_sparse_path_matches_dense_reference(d_in: int, d_sae: int, k: int, with_auxk: bool) -> None:
    fast, ref = _pair(d_in, d_sae, k)
    x = 3 * torch.randn(50, d_in) + 1
    dead = None
    if with_auxk:
        dead = torch.zeros(d_sae, dtype=torch.bool)
        dead[::3] = True
    out_f, out_r = fast(x, dead), ref(x, dead)
    assert torch.equal(out_f.indices, out_r.indices)
    assert_close(out_f.acts, out_r.acts)
    assert_close(out_f.x_hat, out_r.x_hat)
    assert_close(out_f.mse, out_r.mse)
    assert_close(out_f.auxk, out_r.auxk)
    if with_auxk:
        assert out_r.auxk > 0
    (out_f.mse + out_f.auxk).backward()
    (out_r.mse + out_r.auxk).backward()
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        g_f, g_r = getattr(fast, name).grad, getattr(ref, name).grad
        assert g_r.abs().max() > 0, name
        assert_close(g_f, g_r, rtol=1e-4, atol=1e-6, msg=name)


def test_sparse_path_input_gradient_matches() -> None:
    # Not used in training (tokens are data) but the fast path supports it, e.g. for attribution.
    fast, ref = _pair(10, 40, 4)
    x = torch.randn(20, 10)
    xf, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    fast(xf).mse.backward()
    ref(xr).mse.backward()
    assert_close(xf.grad, xr.grad)


def test_at_most_k_nonnegative_latents_and_inference_matches_training_forward() -> None:
    fast, _ = _pair(16, 64, 6)
    fast.cfg.input_scale = 0.25
    x = 10 * torch.randn(30, 16)
    acts, idx = fast.encode(x)
    assert acts.shape == idx.shape == (30, 6) and (acts >= 0).all()
    assert (idx[:, 1:] > idx[:, :-1]).all()  # sorted, distinct
    z = fast.encode_dense(x)
    assert ((z != 0).sum(1) <= 6).all()
    with torch.no_grad():
        train_out = fast(x * 0.25)
    assert_close(fast.decode(acts, idx), train_out.x_hat / 0.25)
    assert_close(fast.decode_dense(z), fast.decode(acts, idx))
    # z is the paper's TopK: the K largest pre-activations, ReLU'd
    pre = fast.pre_acts(x)
    top = pre.topk(6, dim=1).values.relu()
    assert_close(z.sort(dim=1, descending=True).values[:, :6], top)


def test_save_load_is_exact_and_ignores_unknown_keys(tmp_path) -> None:
    fast, _ = _pair(16, 64, 5)
    fast.cfg.input_scale = 0.5
    fast.cfg.model, fast.cfg.layer, fast.cfg.dead_tokens_threshold = "tiny-audiollm", 4, 1234
    fast.save(tmp_path / "sae")
    raw = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    raw["added_by_a_newer_version"] = 1
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(raw))
    back = TopKSAE.load(tmp_path / "sae")
    assert back.cfg == fast.cfg
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(back, name), getattr(fast, name)), name
    x = torch.randn(8, 16)
    assert torch.equal(back.reconstruct(x), fast.reconstruct(x))


def test_load_refuses_foreign_folder_with_a_hint(tmp_path) -> None:
    folder = tmp_path / "layers.3"
    folder.mkdir()
    (folder / "cfg.json").write_text(json.dumps({"k": 4, "d_in": 8, "expansion_factor": 4}))
    with pytest.raises(ValueError, match="import_sparsify"):
        TopKSAE.load(folder)
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        TopKSAE.load(tmp_path / "missing")


def test_decoder_constraints() -> None:
    sae = TopKSAE(SaeConfig(d_in=8, d_sae=32, k=3))
    assert_close(sae.W_dec.norm(dim=1), torch.ones(32))
    assert torch.equal(sae.W_enc, sae.W_dec)  # encoder starts as the decoder's transpose
    sae(torch.randn(40, 8)).mse.backward()
    assert (sae.W_dec.grad * sae.W_dec).sum(1).abs().max() > 1e-4
    sae.remove_parallel_decoder_grad()
    assert_close((sae.W_dec.grad * sae.W_dec).sum(1), torch.zeros(32), atol=1e-6, rtol=0)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(32, 1) + 0.5)
    sae.normalize_decoder()
    assert_close(sae.W_dec.norm(dim=1), torch.ones(32))


@pytest.mark.parametrize("impl", ["sparse", "dense"])
def test_auxk_revives_dead_latents(impl: str) -> None:
    """Constructed case: latents 4-7 see their atoms too weakly to ever win the TopK
    (K=1) and decode to a direction the data never uses. Without AuxK they get no
    gradient and stay dead; with it they learn the residual and start firing."""
    d, half = 16, 4
    eye = torch.eye(d)

    def run(alpha: float) -> tuple[int, float]:
        g = torch.Generator().manual_seed(0)
        sae = TopKSAE(SaeConfig(d_in=d, d_sae=2 * half, k=1))
        sae.impl = impl  # type: ignore[assignment]
        with torch.no_grad():
            sae.W_enc[:half] = eye[:half]
            sae.W_dec[:half] = eye[:half]
            sae.W_enc[half:] = 0.2 * eye[half : 2 * half]
            sae.W_dec[half:] = eye[2 * half : 3 * half]
        opt = make_optimizer(sae, 1e-2)
        dead = DeadTracker(2 * half, threshold=512, device=torch.device("cpu"))
        fired = torch.zeros(2 * half, dtype=torch.bool)
        for step in range(200):
            i = torch.randint(0, half, (256,), generator=g)
            j = torch.randint(half, 2 * half, (256,), generator=g)
            c = torch.rand(256, 2, generator=g) * 3 + 1  # live atom always outweighs 0.2 x dead atom
            out = train_step(sae, sae, opt, None, c[:, :1] * eye[i] + c[:, 1:] * eye[j], dead.mask, alpha)
            dead.update(out, 256)
            if step >= 150:
                fired[out.indices[out.acts > 0]] = True
        return int(fired[half:].sum()), float(out.fvu)

    revived_without, fvu_without = run(0.0)
    revived_with, fvu_with = run(1 / 32)
    assert revived_without == 0
    assert revived_with == half
    assert fvu_with < fvu_without - 0.1
