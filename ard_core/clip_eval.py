"""The per-clip protocol of Table 1: does a method name what a held-out clip contains?

For one test clip and one method, the candidates are the method's named features; their
activation on the clip is the mean over its tokens, mu (SAE latents, or raw neurons for
'poly'). The predictions are the names of the ``m`` most active candidates with mu > 0
(:func:`top_predictions`), the references the phrases of the clip's labels. Predictions and
references are matched one-to-one by the Hungarian algorithm on text similarity, counting
pairs >= gamma (:func:`ard_core.evaluation.hungarian_matches`), and

    P = matched / |predictions| (0 with no predictions),  R = matched / |references|,
    F1 = their harmonic mean,
    AP = (1 / min(|references|, m)) * sum over matched ranks i of precision@i,

with the predictions ranked by activation, so a method that names the clip's labels with its
most active features scores AP = 1. Table 1's P/R/F1/mAP are the means over test clips.
:func:`clip_means` computes mu for chosen features of a layer's clips from the activation store.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch

from ard_core.evaluation import cosine_matrix, hungarian_matches
from ard_core.retrieval import iter_clip_stats
from ard_core.sae import TopKSAE
from ard_core.store import ActivationStore


class ClipScore(NamedTuple):
    precision: float
    recall: float
    f1: float
    ap: float
    matched: list[int | None]
    """Per prediction (by rank): the index of the reference it matched, or None."""


def top_predictions(acts: np.ndarray, m: int) -> np.ndarray:
    """Indices of the (at most) ``m`` largest entries of ``acts`` that are > 0, largest first (ties by index)."""
    acts = np.asarray(acts, dtype=np.float64)
    order = np.lexsort((np.arange(len(acts)), -acts))  # by activation desc, then index
    return order[acts[order] > 0][:m]


def ranked_ap(relevant: Sequence[bool], n_references: int, m: int) -> float:
    """Precision summed over the ranks of the relevant predictions, over min(n_references, m)."""
    denom = min(n_references, m)
    if denom <= 0:
        return 0.0
    hits, total = 0, 0.0
    for rank, rel in enumerate(relevant, start=1):
        if rel:
            hits += 1
            total += hits / rank
    return total / denom


def score_clip(sim: np.ndarray, gamma: float, m: int) -> ClipScore:
    """Scores of one clip from ``sim`` (predictions by rank x references; 2-D, either side may be empty)."""
    sim = np.asarray(sim, dtype=np.float64)
    n_pred, n_ref = sim.shape
    matched: list[int | None] = [None] * n_pred
    for p, r, _ in hungarian_matches(sim, gamma):
        matched[p] = r
    tp = sum(r is not None for r in matched)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ClipScore(precision, recall, f1, ranked_ap([r is not None for r in matched], n_ref, m), matched)


class Prediction(NamedTuple):
    rank: int
    """1 = the most active candidate on the clip."""
    feature: int
    name: str
    activation: float
    reference: str | None
    """The reference it matched, else the most similar one (None when the clip has no reference)."""
    similarity: float | None
    matched: bool


class ClipResult(NamedTuple):
    clip_id: str
    score: ClipScore
    n_references: int
    predictions: list[Prediction]


def evaluate_clips(clip_ids: Sequence[str], mu: np.ndarray, features: Sequence[int], names: Sequence[str],
                   clip_refs: Sequence[Sequence[str]], emb: Mapping[str, np.ndarray], gamma: float,
                   m: int) -> list[ClipResult]:
    """One method on every clip: ``mu`` (clips, candidates) holds the candidates' activations,
    ``features``/``names`` the candidates, ``clip_refs`` each clip's reference texts and ``emb``
    the text vector of every name and reference."""
    out = []
    for i, clip_id in enumerate(clip_ids):
        refs = list(clip_refs[i])
        top = top_predictions(mu[i], m)
        sim = np.zeros((len(top), len(refs)))
        if len(top) and refs:
            sim = cosine_matrix(np.stack([emb[names[j]] for j in top]), np.stack([emb[r] for r in refs]))
        sc = score_clip(sim, gamma, m)
        preds = []
        for rank, (j, hit) in enumerate(zip(top, sc.matched), start=1):
            ref = hit if hit is not None else (int(np.argmax(sim[rank - 1])) if refs else None)
            preds.append(Prediction(rank, int(features[j]), names[j], float(mu[i, j]),
                                    refs[ref] if ref is not None else None,
                                    float(sim[rank - 1, ref]) if ref is not None else None, hit is not None))
        out.append(ClipResult(clip_id, sc, len(refs), preds))
    return out


class ClipMeans(NamedTuple):
    clip_ids: list[str]
    mu: np.ndarray  # (clips, len(features)) mean activation over each clip's tokens


def clip_means(store: ActivationStore, layer: int, clip_ids: set[str], sae: TopKSAE | None, features: Sequence[int],
               *, batch_clips: int, encode_tokens: int, desc: str = "") -> ClipMeans:
    """mu of ``features`` (SAE latents, or raw neurons when ``sae`` is None) on each of ``clip_ids``
    that has tokens at ``layer``, in the store's order. Only the chosen columns are kept, so memory
    is clips x features whatever the SAE's width."""
    n_features = sae.cfg.d_sae if sae is not None else store.d_model
    cols = torch.as_tensor(list(features), dtype=torch.long)
    ids: list[str] = []
    parts: list[np.ndarray] = []
    for batch in iter_clip_stats(store, layer, clip_ids, n_features, sae, batch_clips=batch_clips,
                                 encode_tokens=encode_tokens, desc=desc):
        ids += batch.clip_ids
        parts.append(batch.stats.mean_act[:, cols].double().numpy())
    mu = np.concatenate(parts) if parts else np.zeros((0, len(cols)))
    return ClipMeans(ids, mu)
