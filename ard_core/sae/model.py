"""TopK sparse autoencoder (AR&D stage 1; Gao et al., "Scaling and evaluating sparse autoencoders").

    z     = ReLU(TopK(W_enc (s x - b_dec) + b_enc))      (at most K non-zero latents)
    x_hat = (W_dec^T z + b_dec) / s

``s`` is the stored ``input_scale`` that brings the training data to a fixed mean
norm; training and the loss live in the scaled space, every public method here
takes and returns raw residual-stream activations.

The model keeps Gao et al.'s practices that need the weights themselves: the
decoder starts as the encoder's transpose, its rows stay at unit norm
(:meth:`TopKSAE.normalize_decoder`) and their gradient loses the component
parallel to each row (:meth:`TopKSAE.remove_parallel_decoder_grad`); the AuxK
loss on dead latents is part of :meth:`TopKSAE.forward`. The rest of training
(data scaling, b_dec from the data, the dead-latent counter) is in
:mod:`ard_core.sae.train`; conversion to sparsify/SAELens in :mod:`ard_core.sae.formats`.

On disk an SAE is a folder with ``cfg.json`` (:class:`SaeConfig`) and
``sae.safetensors`` (``W_enc`` (d_sae, d_in), ``b_enc``, ``W_dec`` (d_sae, d_in), ``b_dec``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ard_core.config import load_json, save_json
from ard_core.durable import atomic_path
from ard_core.sae.sparse import TopKPattern, gather_preacts, sparse_decode

SAE_FORMAT = "ard-topk-sae"
CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"
PARAM_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")

Impl = Literal["sparse", "dense"]


@dataclass
class SaeConfig:
    """Everything needed to rebuild and interpret an SAE; saved as ``cfg.json``."""

    d_in: int
    """Width of the activations it reads (the model's d_model)."""
    d_sae: int
    """Number of latents, expansion x d_in."""
    k: int
    """Latents kept per token by TopK."""
    input_scale: float = 1.0
    """Raw activations are multiplied by this before encoding (a power of two, see ard_core.sae.train)."""
    activation: str = "topk_relu"
    """TopK over the pre-activations, then ReLU on the kept values (as sparsify and SAELens)."""
    dead_tokens_threshold: int | None = None
    """A latent unfired for this many training tokens counted as dead; None if not trained here."""
    model: str = ""
    """Model whose activations it was trained on."""
    layer: int | None = None
    """Decoder layer (0-based) whose output (residual stream) it reads."""
    format: str = SAE_FORMAT
    """Marks this project's layout (sparsify also writes cfg.json + sae.safetensors)."""

    def __post_init__(self) -> None:
        if not 0 < self.k <= self.d_sae:
            raise ValueError(f"SAE k={self.k} must be in 1..d_sae={self.d_sae}")
        if self.activation != "topk_relu":
            raise ValueError(f"SAE activation {self.activation!r} is not supported; only 'topk_relu'")
        if not self.input_scale > 0:
            raise ValueError(f"SAE input_scale={self.input_scale} must be > 0")

    @property
    def expansion(self) -> float:
        return self.d_sae / self.d_in


class Latents(NamedTuple):
    acts: Tensor  # (n, K) >= 0
    indices: Tensor  # (n, K) int64, ascending within each row


class ForwardOutput(NamedTuple):
    x_hat: Tensor  # (n, d_in) reconstruction, scaled space
    acts: Tensor  # (n, K)
    indices: Tensor  # (n, K)
    mse: Tensor  # mean squared error per element (the training loss)
    auxk: Tensor  # AuxK loss, already multiplied by its dead-fraction scale; 0 when nothing is dead
    fvu: Tensor  # fraction of variance unexplained in the batch (detached)


class TopKSAE(nn.Module):
    def __init__(self, cfg: SaeConfig, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.cfg = cfg
        # Which path forward() takes: a runtime speed choice (ard_core.sae.train.choose_impl), not saved.
        self.impl: Impl = "sparse"
        m, d = cfg.d_sae, cfg.d_in
        self.W_enc = nn.Parameter(torch.empty(m, d, device=device, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(m, device=device, dtype=dtype))
        self.W_dec = nn.Parameter(torch.empty(m, d, device=device, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(d, device=device, dtype=dtype))
        if self.W_enc.device.type != "meta":  # meta: from_tensors assigns the weights next
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Random unit-norm decoder rows, encoder = decoder transpose, zero biases."""
        w = torch.randn(self.W_dec.shape, generator=generator, dtype=torch.float32)
        w /= w.norm(dim=1, keepdim=True)
        self.W_dec.copy_(w)
        self.W_enc.copy_(w)
        self.b_enc.zero_()
        self.b_dec.zero_()

    # -- training (scaled space) -------------------------------------------------------
    def forward(self, x: Tensor, dead_mask: Tensor | None = None) -> ForwardOutput:
        """x: (n, d_in) already multiplied by ``input_scale``; dead_mask: (d_sae,) bool."""
        x = x.to(self.W_enc.dtype)
        k = self.cfg.k
        if self.impl == "dense":
            pre = F.linear(x - self.b_dec, self.W_enc, self.b_enc)  # (n, d_sae)
            with torch.no_grad():
                idx = pre.topk(k, dim=1, sorted=False).indices.sort(dim=1).values
            acts = pre.gather(1, idx).relu()
            x_hat = self._dense_decode(acts, idx) + self.b_dec
        else:
            with torch.no_grad():
                pre = F.linear(x - self.b_dec, self.W_enc, self.b_enc)
                idx = pre.topk(k, dim=1, sorted=False).indices.sort(dim=1).values
            pattern = TopKPattern(idx, self.cfg.d_sae)
            acts = gather_preacts(x, self.W_enc, self.b_enc, self.b_dec, pre, pattern).relu()
            x_hat = sparse_decode(acts, pattern, self.W_dec) + self.b_dec
        e = x - x_hat
        mse = e.pow(2).mean()
        with torch.no_grad():
            fvu = e.pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)
        auxk = self._auxk(x, pre, e, dead_mask)
        return ForwardOutput(x_hat, acts, idx, mse, auxk, fvu)

    def _dense_decode(self, acts: Tensor, idx: Tensor) -> Tensor:
        z = torch.zeros(acts.shape[0], self.cfg.d_sae, dtype=acts.dtype, device=acts.device)
        return z.scatter(1, idx, acts) @ self.W_dec.to(acts.dtype)

    def _auxk(self, x: Tensor, pre: Tensor, e: Tensor, dead_mask: Tensor | None) -> Tensor:
        """Gao et al.'s AuxK: the top k_aux dead latents reconstruct the residual e."""
        if dead_mask is None:
            return e.new_zeros(())
        n_dead = int(dead_mask.sum())
        if n_dead == 0:
            return e.new_zeros(())
        k_aux_full = max(1, self.cfg.d_in // 2)  # heuristic of Gao et al. (appendix B.1)
        k_aux = min(k_aux_full, n_dead)
        scale = min(n_dead / k_aux_full, 1.0)  # fewer dead latents, weaker push
        with torch.no_grad():
            masked = pre.detach().masked_fill(~dead_mask[None], float("-inf"))
            idx = masked.topk(k_aux, dim=1, sorted=False).indices.sort(dim=1).values
        if self.impl == "dense":
            e_hat = self._dense_decode(pre.gather(1, idx).relu(), idx)
        else:
            pattern = TopKPattern(idx, self.cfg.d_sae)
            acts = gather_preacts(x, self.W_enc, self.b_enc, self.b_dec, pre, pattern).relu()
            e_hat = sparse_decode(acts, pattern, self.W_dec)
        return scale * (e_hat - e.detach()).pow(2).mean()

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(torch.finfo(self.W_dec.dtype).eps))

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Drop the gradient component along each (unit) decoder row, so steps rotate rows."""
        if self.W_dec.grad is None:
            return
        parallel = torch.einsum("ij,ij->i", self.W_dec.grad, self.W_dec)  # no (d_sae, d_in) temporary
        self.W_dec.grad.addcmul_(parallel[:, None], self.W_dec, value=-1.0)

    # -- inference (raw activations) -----------------------------------------------------
    def pre_acts(self, x: Tensor) -> Tensor:
        """(n, d_in) raw -> (n, d_sae) pre-activations (before TopK)."""
        x = x.to(self.W_enc.dtype) * self.cfg.input_scale
        return F.linear(x - self.b_dec, self.W_enc, self.b_enc)

    def topk(self, pre: Tensor) -> Latents:
        """The TopK-then-ReLU activation applied to (n, d_sae) pre-activations."""
        vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
        idx, order = idx.sort(dim=-1)
        return Latents(vals.gather(-1, order).relu(), idx)

    def encode(self, x: Tensor) -> Latents:
        return self.topk(self.pre_acts(x))

    def encode_dense(self, x: Tensor) -> Tensor:
        """(n, d_in) raw -> (n, d_sae) latents z with at most K non-zeros per row."""
        acts, idx = self.encode(x)
        return torch.zeros(acts.shape[0], self.cfg.d_sae, dtype=acts.dtype, device=acts.device).scatter(1, idx, acts)

    def decode(self, acts: Tensor, indices: Tensor) -> Tensor:
        """(n, K) latents at ``indices`` -> (n, d_in) raw reconstruction."""
        y = F.embedding_bag(indices, self.W_dec, per_sample_weights=acts.to(self.W_dec.dtype), mode="sum")
        return (y + self.b_dec) / self.cfg.input_scale

    def decode_dense(self, z: Tensor) -> Tensor:
        """(n, d_sae) latents -> (n, d_in) raw reconstruction (any number of non-zeros)."""
        return (z.to(self.W_dec.dtype) @ self.W_dec + self.b_dec) / self.cfg.input_scale

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(*self.encode(x))

    # -- save / load -----------------------------------------------------------------------
    def state_tensors(self) -> dict[str, Tensor]:
        return {name: getattr(self, name).detach().contiguous().cpu() for name in PARAM_NAMES}

    def save(self, folder: str | Path) -> Path:
        """Write ``sae.safetensors`` then ``cfg.json``, each atomically; cfg.json last, so it marks a whole SAE."""
        folder = Path(folder)
        with atomic_path(folder / WEIGHTS_FILE) as tmp:
            save_file(self.state_tensors(), str(tmp), metadata={"format": SAE_FORMAT})
        save_json(self.cfg, folder / CFG_FILE)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str = "cpu") -> "TopKSAE":
        folder = Path(folder)
        cfg_path = folder / CFG_FILE
        if not cfg_path.is_file():
            raise FileNotFoundError(f"no SAE at {folder}: {CFG_FILE} is missing (training unfinished?)")
        raw = json.loads(cfg_path.read_text())
        if raw.get("format") != SAE_FORMAT:
            hint = "import_saelens" if (folder / "sae_weights.safetensors").exists() else "import_sparsify"
            raise ValueError(
                f"{cfg_path} is not an {SAE_FORMAT} config (no 'format' key); if it comes from another "
                f"tool, read it with ard_core.sae.formats.{hint}"
            )
        cfg = load_json(SaeConfig, cfg_path)
        return cls.from_tensors(cfg, load_file(str(folder / WEIGHTS_FILE)), device=device, where=str(folder))

    @classmethod
    def from_tensors(cls, cfg: SaeConfig, tensors: dict[str, Tensor], device: torch.device | str = "cpu", where: str = "") -> "TopKSAE":
        """Build an SAE holding exactly ``tensors`` (checked against ``cfg``'s shapes)."""
        expected = {"W_enc": (cfg.d_sae, cfg.d_in), "b_enc": (cfg.d_sae,), "W_dec": (cfg.d_sae, cfg.d_in), "b_dec": (cfg.d_in,)}
        for name, shape in expected.items():
            if name not in tensors:
                raise ValueError(f"SAE {where}: tensor {name!r} is missing (has {sorted(tensors)})")
            if tuple(tensors[name].shape) != shape:
                raise ValueError(f"SAE {where}: {name} has shape {tuple(tensors[name].shape)}, cfg says {shape}")
        dtype = tensors["W_enc"].dtype
        sae = cls(cfg, device="meta", dtype=dtype)
        sae.load_state_dict({n: tensors[n].to(device).contiguous() for n in PARAM_NAMES}, assign=True)
        return sae

    @property
    def device(self) -> torch.device:
        return self.W_enc.device
