"""Seed stability: do an SAE's features come back when it is trained again with another seed?

For SAEs A and B of one shape (trained from different seeds), feature i of A *reappears* in B
when some decoder row of B has cosine similarity above ``threshold`` (0.7) with A's row i.
:func:`partner_share` is the share of A's features that reappear in B; over several seeds,
:func:`seed_stability` averages it over every ordered pair (A, B) of distinct seeds and gives
the sample std over the pairs. AudioSAE reports more than half of Whisper/HuBERT SAE features
reappearing across seeds. Every latent counts, dead ones included: a latent that never
trained keeps its seed's random direction and reappears only by chance, which is the point.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

DEFAULT_THRESHOLD = 0.7


@torch.no_grad()
def max_cosine(w_a: Tensor, w_b: Tensor, chunk: int = 4096) -> Tensor:
    """(n_a,) the largest cosine similarity of each row of ``w_a`` (n_a, d) with any row of ``w_b`` (n_b, d),
    ``chunk`` rows of A at a time (bounds the (chunk, n_b) similarity block)."""
    a = torch.nn.functional.normalize(w_a.float(), dim=1)
    b = torch.nn.functional.normalize(w_b.float(), dim=1)
    return torch.cat([(part @ b.T).max(dim=1).values for part in a.split(chunk)])


def partner_share(w_a: Tensor, w_b: Tensor, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Share of A's decoder rows with a partner in B above ``threshold`` cosine."""
    if w_a.shape[1] != w_b.shape[1]:
        raise ValueError(f"decoders of width {w_a.shape[1]} and {w_b.shape[1]} cannot be compared; "
                         "give SAEs of one layer")
    return float((max_cosine(w_a, w_b) > threshold).float().mean())


class Stability(NamedTuple):
    mean: float
    """Mean :func:`partner_share` over ordered pairs of distinct seeds."""
    std: float | None
    """Sample std over those pairs (None for a single pair)."""
    n_pairs: int


def seed_stability(decoders: Sequence[Tensor], threshold: float = DEFAULT_THRESHOLD) -> Stability:
    """Over the decoders (d_sae, d) of one SAE shape trained from different seeds (at least two)."""
    if len(decoders) < 2:
        raise ValueError(f"seed stability needs the SAE from at least 2 seeds, got {len(decoders)}")
    shares = [partner_share(a, b, threshold) for i, a in enumerate(decoders)
              for j, b in enumerate(decoders) if i != j]
    return Stability(float(np.mean(shares)), float(np.std(shares, ddof=1)) if len(shares) > 1 else None,
                     len(shares))
