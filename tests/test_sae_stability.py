"""Seed stability: the share of decoder rows with a partner above 0.7 cosine in another seed's SAE."""

from __future__ import annotations

import pytest
import torch


def test_seed_stability_counts_features_with_a_partner_above_the_threshold():
    from ard_core.sae.stability import partner_share, seed_stability

    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(40, 64, generator=g), dim=1)
    # B keeps A's first 30 rows (rotated a little, cosine ~0.95, and rescaled) and has 10 new ones
    b = torch.cat([3.0 * (a[:30] + 0.2 * torch.nn.functional.normalize(torch.randn(30, 64, generator=g), dim=1)),
                   torch.randn(10, 64, generator=g)])
    assert partner_share(a, b) == pytest.approx(30 / 40)
    assert partner_share(a, b, threshold=0.99) == 0.0
    s = seed_stability([a, b, a.clone()])
    # ordered pairs: (a,b) .75, (a,a') 1, (b,a) .75, (b,a') .75, (a',a) 1, (a',b) .75
    assert s.n_pairs == 6 and s.mean == pytest.approx((4 * 0.75 + 2 * 1.0) / 6)
    rand = seed_stability([torch.randn(200, 64, generator=g) for _ in range(2)])
    assert rand.mean < 0.01  # random directions in 64 dimensions almost never come close
