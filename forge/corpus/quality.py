"""Quality checks of a built corpus: are clips within a class distinct enough?

A class whose clips are near-copies of each other teaches a model (and an SAE)
one recording, not the class. The measure is the mean pairwise Pearson
correlation of log-mel spectrograms; assets/corpus/DATA.md reports it per
class and the corpus tests hold every class below 0.95.
"""

from __future__ import annotations

import numpy as np

from ard_core.audio import load_audio, log_mel
from ard_core.datasets import ClipRecord


def mean_pairwise_correlation(specs: list[np.ndarray]) -> float:
    """Mean Pearson correlation over all pairs of log-mel spectrograms.

    Each pair is compared over its common length (the shorter clip's frames),
    never over padding, so silence added to fit a length cannot inflate it.
    """
    vals = []
    for i in range(len(specs)):
        for j in range(i + 1, len(specs)):
            t = min(specs[i].shape[1], specs[j].shape[1])
            a, b = specs[i][:, :t].ravel(), specs[j][:, :t].ravel()
            vals.append(float(np.corrcoef(a, b)[0, 1]))
    return float(np.mean(vals)) if vals else float("nan")


def within_class_correlation(records: list[ClipRecord], track: str, max_per_class: int = 30,
                             seed: int = 0) -> dict[str, float]:
    """Label -> mean pairwise log-mel correlation of up to ``max_per_class`` clips of that label."""
    by_label: dict[str, list[ClipRecord]] = {}
    for rec in records:
        if track in rec.labels:
            by_label.setdefault(rec.labels[track], []).append(rec)
    rng = np.random.default_rng(seed)
    out = {}
    for label, recs in sorted(by_label.items()):
        if len(recs) > max_per_class:
            recs = [recs[i] for i in sorted(rng.choice(len(recs), max_per_class, replace=False))]
        out[label] = mean_pairwise_correlation([log_mel(load_audio(r.path), n_fft=400).db for r in recs])
    return out
