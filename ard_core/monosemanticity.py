"""Stage 3 of AR&D: the CLAP-based monosemanticity score (eqs. 3-4).

For each feature, H = embeddings of its p most representative clips and L of its
p least. Within a set G, E_G is the mean cosine similarity over the B = C(p, 2)
pairs i < j, and sigma_G the (population) standard deviation of those same
pairwise similarities. Then

    m = (E_H - E_L) / (sigma_pooled + eps),  sigma_pooled = sqrt((sigma_H^2 + sigma_L^2) / 2)

Large m: the top clips form a tight cluster while the bottom ones stay dispersed.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

DEFAULT_EPS = 1e-6


class SetCoherence(NamedTuple):
    mean: torch.Tensor  # (F,) E_G
    std: torch.Tensor  # (F,) sigma_G


def set_coherence(emb: torch.Tensor) -> SetCoherence:
    """emb: (F, p, D) embeddings of each feature's set -> mean/std of pairwise cosines."""
    F, p, _ = emb.shape
    if p < 2:
        raise ValueError(f"monosemanticity needs at least 2 clips per set, got p={p}")
    e = torch.nn.functional.normalize(emb.double(), dim=-1)
    sims = e @ e.transpose(1, 2)  # (F, p, p)
    iu = torch.triu_indices(p, p, offset=1)
    pairs = sims[:, iu[0], iu[1]]  # (F, B)
    return SetCoherence(pairs.mean(1), pairs.std(1, unbiased=False))


def monosemanticity(top_emb: torch.Tensor, bottom_emb: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """(F, p, D) top and bottom embeddings -> (F,) m scores (eq. 4)."""
    h, l = set_coherence(top_emb), set_coherence(bottom_emb)
    pooled = torch.sqrt((h.std**2 + l.std**2) / 2)
    return ((h.mean - l.mean) / (pooled + eps)).float()


def rank_features(scores: torch.Tensor, top_c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept feature ids best first, rank per feature 1..F with NaN scores last)."""
    s = torch.nan_to_num(scores.double(), nan=-torch.inf)
    order = torch.argsort(-s, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(1, len(order) + 1)
    return order[:top_c], rank
