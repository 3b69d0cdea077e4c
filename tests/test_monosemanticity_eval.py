"""Monosemanticity (eqs. 3-4) and Hungarian P/R/F1/mAP against hand-worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ard_core.evaluation import average_precision, hungarian_matches, match_concepts
from ard_core.monosemanticity import monosemanticity, rank_features, set_coherence


def test_monosemanticity_hand_computed():
    # Top set: three unit vectors in the x-y plane at 0, 60 and 90 degrees.
    # pairwise cosines: cos60 = 0.5, cos90 = 0, cos30 = sqrt(3)/2
    top = torch.tensor([[[1.0, 0, 0], [0.5, math.sqrt(3) / 2, 0], [0, 1.0, 0]]])
    # Bottom set: orthogonal axes -> all pairwise cosines 0... plus scale (cosine ignores it)
    bottom = torch.tensor([[[2.0, 0, 0], [0, 3.0, 0], [0, 0, 1.0]]])
    h = set_coherence(top)
    sims = np.array([0.5, 0.0, math.sqrt(3) / 2])
    assert h.mean.item() == pytest.approx(sims.mean())
    assert h.std.item() == pytest.approx(sims.std())  # population std over the B = 3 pairs
    l = set_coherence(bottom)
    assert l.mean.item() == pytest.approx(0.0) and l.std.item() == pytest.approx(0.0)
    expected = (sims.mean() - 0.0) / (math.sqrt((sims.std() ** 2 + 0.0) / 2) + 1e-6)
    assert monosemanticity(top, bottom).item() == pytest.approx(expected, rel=1e-6)


def test_rank_features_puts_nan_last():
    kept, rank = rank_features(torch.tensor([0.5, float("nan"), 2.0, 1.0]), top_c=2)
    assert kept.tolist() == [2, 3]
    assert rank.tolist() == [3, 4, 1, 2]


def test_hungarian_hand_worked():
    # 3 predictions x 2 references.
    sim = np.array([
        [0.90, 0.80],   # p0 is close to both
        [0.85, 0.10],   # p1 only to r0
        [0.20, 0.60],   # p2 under gamma everywhere
    ])
    # Greedy would give p0-r0 (0.90) and leave r1 to nobody but p0...; Hungarian over the
    # pairs >= 0.7 maximises the total: p0-r1 (0.80) + p1-r0 (0.85) = 1.65 > 0.90.
    pairs = hungarian_matches(sim, 0.7)
    assert sorted((p, r) for p, r, _ in pairs) == [(0, 1), (1, 0)]
    res = match_concepts(sim, 0.7)
    assert res.precision == pytest.approx(2 / 3)
    assert res.recall == pytest.approx(1.0)
    assert res.f1 == pytest.approx(0.8)
    # pairs ranked by similarity: (p0,r0) .90 no, (p1,r0) .85 yes -> 1/2, (p0,r1) .80 yes -> 2/3
    assert res.ap == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_threshold_blocks_low_matches():
    res = match_concepts(np.array([[0.69, 0.1], [0.2, 0.3]]), 0.7)
    assert (res.precision, res.recall, res.f1, res.ap) == (0.0, 0.0, 0.0, 0.0)


def test_average_precision_perfect_ranking():
    sim = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert average_precision(sim, {(0, 0), (1, 1)}, 2) == 1.0
