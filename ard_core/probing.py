"""Sparse probing (SAEBench's k-sparse probes): does a representation hold a label in k of its dimensions?

Every clip becomes one vector: its SAE latents (or a layer's raw neurons) mean-pooled over its
stored tokens, the audio positions in the paper's setup (:func:`ard_core.clip_eval.clip_means`).
For every labelled (track, label) there is a one-vs-rest task among the clips labelled on that
track: positives carry the label, negatives another label of the track (multi-label cells count
for each of their labels). On the training clips the k dimensions with the largest absolute
difference between the positives' and the negatives' mean are chosen (:func:`top_difference`),
then a logistic regression (standardised inputs, classes weighted to balance) is fitted on
those k alone and scored on the test clips by balanced accuracy (chance 0.5, whatever the
imbalance). A track's figure is the mean over its labels' tasks.

Two passes over the training clips keep memory at tasks x dimensions whatever the SAE's width:
the class sums that choose the dimensions (:class:`ClassMeans`), then the chosen dimensions only.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from ard_core.clip_eval import clip_means
from ard_core.evaluation import clip_labels
from ard_core.retrieval import iter_clip_stats
from ard_core.sae import TopKSAE
from ard_core.store import ActivationStore

Task = tuple[str, str]
"""(track, label): the label's clips against the track's other labelled clips."""


class ProbeResult(NamedTuple):
    track: str
    label: str
    k: int
    features: list[int]
    """The k dimensions chosen on the training clips, by |mean difference|."""
    accuracy: float
    """Balanced accuracy on the test clips."""
    n_train: int
    n_test: int


def top_difference(pos_mean: np.ndarray, neg_mean: np.ndarray, k: int) -> list[int]:
    """The ``k`` dimensions of largest |pos_mean - neg_mean| (ties by index)."""
    diff = np.abs(np.asarray(pos_mean, np.float64) - np.asarray(neg_mean, np.float64))
    return np.lexsort((np.arange(len(diff)), -diff))[:k].tolist()


def fit_and_score(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                  seed: int = 0) -> float:
    """Balanced test accuracy of a logistic regression on standardised inputs, classes weighted to balance."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # Newton-Cholesky: the lbfgs optimum in a tenth of the time for a handful of dimensions
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", solver="newton-cholesky",
                                                               max_iter=200, random_state=seed))
    with warnings.catch_warnings():  # a dimension constant on the training clips (a dead latent) is fine
        warnings.simplefilter("ignore", category=RuntimeWarning)
        model.fit(x_train, y_train)
    return float(balanced_accuracy_score(y_test, model.predict(x_test)))


class ClassMeans:
    """Per task, the positives' and the negatives' mean pooled vector, summed batch by batch."""

    def __init__(self, tasks: Sequence[Task], n_features: int) -> None:
        self.tasks = list(tasks)
        self.tracks = sorted({t for t, _ in self.tasks})
        self.pos = np.zeros((len(self.tasks), n_features))
        self.n_pos = np.zeros(len(self.tasks))
        self.track_sum = np.zeros((len(self.tracks), n_features))
        self.n_track = np.zeros(len(self.tracks))

    def update(self, mu: np.ndarray, labels: Sequence[set[Task]]) -> None:
        """``mu`` (B, F) pooled vectors of clips whose (track, label) pairs are ``labels``."""
        on = np.array([[task in ls for task in self.tasks] for ls in labels], np.float64).reshape(len(mu), -1)
        tracked = np.array([[any(t == tr for t, _ in ls) for tr in self.tracks] for ls in labels],
                           np.float64).reshape(len(mu), -1)
        self.pos += on.T @ mu
        self.n_pos += on.sum(0)
        self.track_sum += tracked.T @ mu
        self.n_track += tracked.sum(0)

    def means(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(positives' mean, negatives' mean) of task i (NaN-free: an empty side is zeros)."""
        j = self.tracks.index(self.tasks[i][0])
        n_neg = self.n_track[j] - self.n_pos[i]
        neg = (self.track_sum[j] - self.pos[i]) / max(n_neg, 1)
        return self.pos[i] / max(self.n_pos[i], 1), neg


def clip_tasks(labels: Mapping[str, Mapping[str, str]], tracks: Sequence[str] | None = None) -> dict[str, set[Task]]:
    """clip_id -> its (track, label) pairs (of ``tracks``; None: every track)."""
    return {c: {(t, l) for t, l in clip_labels(dict(ls)) if tracks is None or t in tracks} for c, ls in labels.items()}


def probe(store: ActivationStore, layer: int, sae: TopKSAE | None, labels: Mapping[str, Mapping[str, str]],
          train_ids: set[str], test_ids: set[str], ks: Sequence[int], *, batch_clips: int = 64,
          encode_tokens: int = 4096, min_clips: int = 2, seed: int = 0, desc: str = "") -> list[ProbeResult]:
    """k-sparse probes of every (track, label) task of ``labels`` (clip -> {track: label}) on the SAE's
    latents (None: the layer's raw neurons), chosen and fitted on ``train_ids``, scored on ``test_ids``.
    A task needs ``min_clips`` positives and negatives on each side; others are left out."""
    pairs = clip_tasks(labels)
    tasks = sorted({t for c in train_ids | test_ids for t in pairs.get(c, ())})
    n_features = sae.cfg.d_sae if sae is not None else store.d_model
    sums = ClassMeans(tasks, n_features)
    kw = dict(batch_clips=batch_clips, encode_tokens=encode_tokens)
    for batch in iter_clip_stats(store, layer, train_ids, n_features, sae, desc=f"{desc} class means", **kw):
        sums.update(batch.stats.mean_act.double().numpy(), [pairs.get(c, set()) for c in batch.clip_ids])
    chosen = {task: top_difference(*sums.means(i), max(ks)) for i, task in enumerate(tasks)}
    union = sorted({f for fs in chosen.values() for f in fs})
    if not union:
        return []
    pooled = clip_means(store, layer, train_ids | test_ids, sae, union, desc=f"{desc} chosen", **kw)
    col = {f: j for j, f in enumerate(union)}
    row = {c: i for i, c in enumerate(pooled.clip_ids)}
    out = []
    for track, label in tasks:
        sides = {}
        for name, ids in (("train", train_ids), ("test", test_ids)):
            on = sorted(c for c in ids if c in row and any(t == track for t, _ in pairs.get(c, ())))
            sides[name] = (np.array([row[c] for c in on], np.int64),
                           np.array([(track, label) in pairs[c] for c in on], bool))
        (tr, ytr), (te, yte) = sides["train"], sides["test"]
        if min(ytr.sum(), (~ytr).sum()) < min_clips or min(yte.sum(), (~yte).sum()) < 1:
            continue
        for k in ks:
            feats = chosen[(track, label)][:k]
            cols = [col[f] for f in feats]
            acc = fit_and_score(pooled.mu[np.ix_(tr, cols)], ytr, pooled.mu[np.ix_(te, cols)], yte, seed)
            out.append(ProbeResult(track, label, k, feats, acc, len(tr), len(te)))
    return out


class TrackScore(NamedTuple):
    mean: float
    std: float | None
    """Sample std over the track's tasks (None for a single task)."""
    n_tasks: int


def track_scores(results: Sequence[ProbeResult]) -> dict[tuple[str, int], TrackScore]:
    """(track, k) -> the mean balanced accuracy over the track's labels' tasks."""
    by: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in results:
        by[(r.track, r.k)].append(r.accuracy)
    return {key: TrackScore(float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else None, len(v))
            for key, v in sorted(by.items())}
