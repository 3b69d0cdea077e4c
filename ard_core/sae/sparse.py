"""Sparse forward/backward kernels of the TopK SAE (the fast path of :mod:`ard_core.sae.model`).

With K of d_sae latents active per token, only the encoder's forward GEMM needs the
dense (n, d_sae) pre-activations. Everything else touches n*K latents:

* decoder forward: ``F.embedding_bag`` over the K decoder rows of each token;
* decoder backward: d(acts) is a sampled dense-dense product (SDDMM) at the K
  positions, d(W_dec) a sparse (d_sae, n) x dense (n, d_in) product;
* encoder backward: d(W_enc) is the same sparse product with the gradient of the
  kept pre-activations, d(b_enc) a scatter-add, d(b_dec) one GEMV.

The dense reference instead scatters the K values into an (n, d_sae) matrix and lets
autograd run three more dense GEMMs. Both paths give the same values and
gradients up to float summation order (``tests/test_sae.py`` checks this).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def _csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # "CSR support is in beta" is printed once per process otherwise
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


class TopKPattern:
    """Which latents each token keeps: ``indices`` (n, K), sorted within each row.

    The latent-major order (a CSR of shape (d_sae, n)) needs one sort of the n*K
    indices; it is computed on first use and shared by the encoder and decoder
    backward passes of the same step.
    """

    def __init__(self, indices: Tensor, d_sae: int) -> None:
        self.indices = indices  # (n, K) int64, ascending within each row
        self.d_sae = d_sae
        self._latent_major: tuple[Tensor, Tensor, Tensor] | None = None

    @property
    def n(self) -> int:
        return self.indices.shape[0]

    @property
    def k(self) -> int:
        return self.indices.shape[1]

    def token_major(self, values: Tensor) -> Tensor:
        """(n, d_sae) CSR holding ``values`` (n, K) at the kept positions."""
        crow = torch.arange(0, self.n * self.k + 1, self.k, device=self.indices.device)
        return _csr(crow, self.indices.reshape(-1), values.reshape(-1), (self.n, self.d_sae))

    def latent_major(self, values: Tensor) -> Tensor:
        """(d_sae, n) CSR, the transpose of :meth:`token_major`."""
        if self._latent_major is None:
            flat = self.indices.reshape(-1)
            order = torch.argsort(flat, stable=True)
            counts = torch.bincount(flat, minlength=self.d_sae)
            crow = torch.zeros(self.d_sae + 1, dtype=torch.int64, device=flat.device)
            crow[1:] = torch.cumsum(counts, 0)
            token = torch.div(order, self.k, rounding_mode="floor")
            self._latent_major = (crow, token, order)
        crow, token, order = self._latent_major
        return _csr(crow, token, values.reshape(-1)[order], (self.d_sae, self.n))


class GatherPreacts(torch.autograd.Function):
    """Kept pre-activations ``pre.gather(1, indices)`` with a sparse backward.

    ``pre`` = (x - b_dec) @ W_enc.T + b_enc was computed without autograd; this
    function only picks the kept entries and routes their gradient to W_enc,
    b_enc, b_dec (and x if it requires grad) without any dense (n, d_sae) tensor.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor, pre: Tensor, pattern: TopKPattern) -> Tensor:
        ctx.save_for_backward(x, W_enc, b_dec)
        ctx.pattern = pattern
        return pre.gather(1, pattern.indices)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, W_enc, b_dec = ctx.saved_tensors
        pattern: TopKPattern = ctx.pattern
        g = grad.to(W_enc.dtype)  # (n, K); bf16 under autocast, parameters are fp32
        x_c = x.to(W_enc.dtype) - b_dec
        grad_W = grad_b_enc = grad_b_dec = grad_x = None
        if ctx.needs_input_grad[1]:
            grad_W = pattern.latent_major(g) @ x_c  # (d_sae, d_in)
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            grad_b_enc = torch.zeros(pattern.d_sae, dtype=g.dtype, device=g.device)
            grad_b_enc.index_add_(0, pattern.indices.reshape(-1), g.reshape(-1))
            if ctx.needs_input_grad[3]:
                # pre_j = W_enc[j] . (x - b_dec) + b_enc[j]  =>  d pre_j / d b_dec = -W_enc[j]
                grad_b_dec = -(grad_b_enc @ W_enc)
        if ctx.needs_input_grad[0]:
            grad_x = F.embedding_bag(pattern.indices, W_enc, per_sample_weights=g, mode="sum").to(x.dtype)
        return grad_x, grad_W, grad_b_enc if ctx.needs_input_grad[2] else None, grad_b_dec, None, None


class SparseDecode(torch.autograd.Function):
    """``acts`` (n, K) at ``pattern`` times W_dec (d_sae, d_in) -> (n, d_in), no bias."""

    @staticmethod
    def forward(ctx: Any, acts: Tensor, pattern: TopKPattern, W_dec: Tensor) -> Tensor:
        a = acts.to(W_dec.dtype)
        ctx.save_for_backward(a, W_dec)
        ctx.pattern = pattern
        ctx.acts_dtype = acts.dtype
        return F.embedding_bag(pattern.indices, W_dec, per_sample_weights=a, mode="sum")

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        a, W_dec = ctx.saved_tensors
        pattern: TopKPattern = ctx.pattern
        g = grad.to(W_dec.dtype).contiguous()  # (n, d_in)
        grad_acts = grad_W = None
        if ctx.needs_input_grad[0]:
            # SDDMM: (g @ W_dec.T) only at the kept positions
            sampled = torch.sparse.sampled_addmm(pattern.token_major(a), g, W_dec.T, beta=0.0)
            grad_acts = sampled.values().view(pattern.n, pattern.k).to(ctx.acts_dtype)
        if ctx.needs_input_grad[2]:
            grad_W = pattern.latent_major(a) @ g  # (d_sae, d_in)
        return grad_acts, None, grad_W


def gather_preacts(x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor, pre: Tensor, pattern: TopKPattern) -> Tensor:
    return GatherPreacts.apply(x, W_enc, b_enc, b_dec, pre, pattern)  # type: ignore[no-any-return]


def sparse_decode(acts: Tensor, pattern: TopKPattern, W_dec: Tensor) -> Tensor:
    return SparseDecode.apply(acts, pattern, W_dec)  # type: ignore[no-any-return]
