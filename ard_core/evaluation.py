"""Matching predicted concept names to reference concepts (AR&D section 4).

Given a similarity matrix S (predictions x references; CLAP text cosine by
default), predictions and references are matched one-to-one with the Hungarian
algorithm (``scipy.optimize.linear_sum_assignment``) maximising the total
similarity of the pairs that clear the threshold gamma (0.7 in the paper); a
pair below gamma never counts as a match. Then

    precision = matches / n_pred,  recall = matches / n_ref,  F1 = harmonic mean.

mAP: all n_pred x n_ref pairs are ranked by similarity (ties by index); a pair is
relevant when it is one of the Hungarian matches. AP = (1 / n_ref) * sum over the
relevant ranks i of precision@i, i.e. precision integrated over the ranks where
recall increases, normalised by the number of references, so a method scores
high only when its matched pairs are also its most similar ones. With a single
list of references per evaluation, mAP equals this AP; :func:`mean_ap` averages
it over several lists (e.g. seeds of the random baseline).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

DEFAULT_GAMMA = 0.7


class MatchResult(NamedTuple):
    precision: float
    recall: float
    f1: float
    ap: float
    pairs: list[tuple[int, int, float]]  # (pred, ref, similarity) of the matches


def hungarian_matches(sim: np.ndarray, gamma: float = DEFAULT_GAMMA) -> list[tuple[int, int, float]]:
    """One-to-one matches with similarity >= gamma maximising their total similarity."""
    sim = np.asarray(sim, dtype=np.float64)
    if sim.size == 0:
        return []
    gain = np.where(sim >= gamma, sim, 0.0)  # pairs under gamma contribute nothing
    rows, cols = linear_sum_assignment(gain, maximize=True)
    return [(int(r), int(c), float(sim[r, c])) for r, c in zip(rows, cols) if sim[r, c] >= gamma]


def average_precision(sim: np.ndarray, relevant: set[tuple[int, int]], n_ref: int) -> float:
    if n_ref == 0:
        return 0.0
    flat = np.asarray(sim, dtype=np.float64).ravel()
    order = np.argsort(-flat, kind="stable")
    n_cols = sim.shape[1]
    hits, total = 0, 0.0
    for rank, f in enumerate(order, start=1):
        if (int(f // n_cols), int(f % n_cols)) in relevant:
            hits += 1
            total += hits / rank
            if hits == len(relevant):
                break
    return total / n_ref


def match_concepts(sim: np.ndarray, gamma: float = DEFAULT_GAMMA) -> MatchResult:
    sim = np.asarray(sim, dtype=np.float64)
    n_pred, n_ref = sim.shape
    pairs = hungarian_matches(sim, gamma)
    tp = len(pairs)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    ap = average_precision(sim, {(p, r) for p, r, _ in pairs}, n_ref)
    return MatchResult(precision, recall, f1, ap, pairs)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a / np.clip(np.linalg.norm(a, axis=1, keepdims=True), 1e-12, None)
    b = b / np.clip(np.linalg.norm(b, axis=1, keepdims=True), 1e-12, None)
    return a @ b.T


def mean_ap(results: Sequence[MatchResult]) -> float:
    return float(np.mean([r.ap for r in results])) if results else 0.0
