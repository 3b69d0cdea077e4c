"""Similar features: a feature's nearest neighbours within its SAE and in the SAEs of other layers.

- **Within the SAE**, by the cosine of decoder rows: two latents that write the same direction
  into the residual stream (Neuronpedia's and SAEDashboard's "similar features").
- **Across layers**, where decoder directions live in different bases, by how the features'
  activations co-vary: the Pearson correlation, over the probing clips, of each clip's mean
  activation mu (:mod:`ard_core.retrieval`'s clip statistics). A feature that never fires on the
  probing clips has no correlation, and is never anyone's neighbour.

Both work in chunks of source features, so an SAE of 32k latents never needs a 32k x 32k matrix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from ard_core.retrieval import iter_clip_stats

if TYPE_CHECKING:  # pragma: no cover
    from ard_core.sae import TopKSAE
    from ard_core.store import ActivationStore


class Neighbours(NamedTuple):
    """Per source feature its k nearest targets, best first; index -1 (value NaN) where it has fewer."""

    index: torch.Tensor  # (F_source, k) int64
    value: torch.Tensor  # (F_source, k) float32 similarity


def _top(sim: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row of ``sim`` (-inf marks 'not a candidate'), ties to the lower index."""
    k = min(k, sim.shape[1])
    # a stable descending sort keeps equal similarities in index order, whatever topk would do
    value, index = torch.sort(sim, dim=1, descending=True, stable=True)
    value, index = value[:, :k], index[:, :k]
    missing = torch.isinf(value)
    return index.masked_fill(missing, -1), value.masked_fill(missing, float("nan"))


def decoder_neighbours(W_dec: torch.Tensor, k: int, candidates: torch.Tensor | None = None,
                       chunk: int = 2048) -> Neighbours:
    """Each feature's ``k`` nearest other features of the same SAE by decoder-row cosine.

    ``W_dec`` (F, d); ``candidates`` (F,) bool: which features may be neighbours (default all).
    """
    unit = torch.nn.functional.normalize(W_dec.detach().float(), dim=1)
    allowed = torch.ones(unit.shape[0], dtype=torch.bool) if candidates is None else candidates.bool()
    idx, val = [], []
    for start in range(0, unit.shape[0], chunk):
        sim = unit[start:start + chunk] @ unit.T  # (chunk, F)
        sim[:, ~allowed] = -torch.inf
        rows = torch.arange(start, min(start + chunk, unit.shape[0]))
        sim[rows - start, rows] = -torch.inf  # a feature is not its own neighbour
        i, v = _top(sim, k)
        idx.append(i)
        val.append(v)
    return Neighbours(torch.cat(idx), torch.cat(val))


def _standardize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns of ``x`` (clips, F) centred and scaled to unit norm, and which columns vary at all."""
    x = x.double()
    x = x - x.mean(0, keepdim=True)
    norm = x.norm(dim=0)
    varies = norm > 1e-12
    return (x / norm.clamp_min(1e-12)).float(), varies


def correlation_neighbours(source: torch.Tensor, target: torch.Tensor, k: int, chunk: int = 2048) -> Neighbours:
    """Each source feature's ``k`` target features with the largest Pearson correlation over clips.

    ``source`` (clips, F_s) and ``target`` (clips, F_t) hold the same clips in the same order
    (e.g. mean activations). A constant column (a feature silent on every clip) correlates with
    nothing: as a source its row is all missing, as a target it is never chosen.
    """
    if source.shape[0] != target.shape[0]:
        raise ValueError(f"source has {source.shape[0]} clips, target {target.shape[0]}; give the same clips")
    zs, s_ok = _standardize(source)
    zt, t_ok = _standardize(target)
    idx, val = [], []
    for start in range(0, zs.shape[1], chunk):
        sim = zs[:, start:start + chunk].T @ zt  # (chunk, F_t): correlations
        sim[:, ~t_ok] = -torch.inf
        sim[~s_ok[start:start + chunk]] = -torch.inf
        i, v = _top(sim, k)
        idx.append(i)
        val.append(v)
    return Neighbours(torch.cat(idx), torch.cat(val))


def clip_means(store: "ActivationStore", layer: int, clip_ids: set[str], sae: "TopKSAE", *, batch_clips: int,
               encode_tokens: int, desc: str = "") -> dict[str, torch.Tensor]:
    """clip id -> (F,) mean activation mu of every feature of ``sae`` on that clip (clips with tokens only)."""
    out: dict[str, torch.Tensor] = {}
    for batch in iter_clip_stats(store, layer, clip_ids, sae.cfg.d_sae, sae, batch_clips=batch_clips,
                                 encode_tokens=encode_tokens, desc=desc):
        out.update(zip(batch.clip_ids, batch.stats.mean_act))
    return out
