"""How well a CLAP's text space separates the mini corpus's concepts.

Evaluation matches feature names to the reference phrases of
``ard_core.datasets.labels.LABEL_PHRASES`` by text cosine at gamma = 0.7, which only
means something when different labels' phrases sit far apart and every wording of one
label close together. Per track, :func:`separability` reports:

- ``between_max``: the largest cosine between a reference phrase of the track and the
  reference phrase of any *other* label (of any track), and that pair (aim: < 0.5);
- ``within_min`` / ``within_mean``: over pairs of phrases of one label (reference phrase and
  training paraphrases, :data:`.phrases.TRAIN_PARAPHRASES`), the smallest and mean cosine (aim: > 0.8);
- ``heldout_min`` / ``heldout_mean``: the same between each held-out paraphrase
  (:data:`.phrases.HELDOUT_PARAPHRASES`, never trained on) and each of its label's reference phrase
  and training paraphrases;
- ``heldout_nearest``: the share of held-out paraphrases whose nearest reference phrase is
  their own label's (what name matching needs).

The ``all`` row is the same over every track; :func:`wording_misses` lists the phrases
under the within-label aim by name. Any object with ``embed_text`` (L2-normalised
rows, the ``ard_core.clap`` interface) can be measured.
"""

from __future__ import annotations

from itertools import combinations
from typing import NamedTuple, Protocol, Sequence

import numpy as np

from ard_core.datasets.labels import LABEL_PHRASES
from forge.tiny_clap.phrases import HELDOUT_PARAPHRASES, TRAIN_PARAPHRASES

BETWEEN_AIM = 0.5
"""Reference phrases of different labels must score below this cosine."""
WITHIN_AIM = 0.8
"""Paraphrases of one label must score above this cosine."""


class TextEmbedder(Protocol):
    def embed_text(self, texts: Sequence[str], batch_size: int = 64, progress: bool = True) -> np.ndarray: ...


class SeparabilityRow(NamedTuple):
    """The text-space figures of one track (or 'all')."""

    track: str
    n_labels: int
    between_max: float
    between_pair: str
    """'phrase' / 'phrase' of the largest between-label cosine."""
    within_min: float
    within_mean: float
    heldout_min: float
    heldout_mean: float
    heldout_nearest: float


class _Phrases(NamedTuple):
    keys: list[tuple[str, str]]  # (track, label) per label
    ref: np.ndarray  # (labels, D)
    train: list[np.ndarray]  # per label: (1 + n_train, D), reference first
    heldout: list[np.ndarray]  # per label: (n_heldout, D)


def _embed(clap: TextEmbedder) -> _Phrases:
    keys = [(t, lab) for t, labels in LABEL_PHRASES.items() for lab in labels]
    groups = [[LABEL_PHRASES[t][lab], *TRAIN_PARAPHRASES[t][lab]] for t, lab in keys]
    held = [list(HELDOUT_PARAPHRASES[t][lab]) for t, lab in keys]
    flat = [p for g in groups + held for p in g]
    emb = clap.embed_text(flat, progress=False)
    out, at = [], 0
    for g in groups + held:
        out.append(emb[at:at + len(g)])
        at += len(g)
    train, heldout = out[:len(keys)], out[len(keys):]
    return _Phrases(keys, np.stack([g[0] for g in train]), train, heldout)


def _pair_cosines(a: np.ndarray) -> np.ndarray:
    return np.array([float(a[i] @ a[j]) for i, j in combinations(range(len(a)), 2)])


def _row(track: str, idx: list[int], ph: _Phrases) -> SeparabilityRow:
    ref_sims = ph.ref @ ph.ref.T
    np.fill_diagonal(ref_sims, -np.inf)
    sub = ref_sims[idx]
    i, j = np.unravel_index(int(np.argmax(sub)), sub.shape)
    ref_text = [LABEL_PHRASES[t][lab] for t, lab in ph.keys]
    within = np.concatenate([_pair_cosines(ph.train[k]) for k in idx])
    held = np.concatenate([(ph.heldout[k] @ ph.train[k].T).ravel() for k in idx])
    nearest = np.concatenate([np.argmax(ph.heldout[k] @ ph.ref.T, axis=1) == k for k in idx])
    return SeparabilityRow(track, len(idx), float(sub[i, j]), f"'{ref_text[idx[i]]}' / '{ref_text[j]}'",
                           float(within.min()), float(within.mean()), float(held.min()), float(held.mean()),
                           float(nearest.mean()))


def separability(clap: TextEmbedder) -> list[SeparabilityRow]:
    """One row per track of LABEL_PHRASES, then 'all'."""
    ph = _embed(clap)
    rows = [_row(track, [k for k, (t, _) in enumerate(ph.keys) if t == track], ph) for track in LABEL_PHRASES]
    return rows + [_row("all", list(range(len(ph.keys))), ph)]


def meets_aims(row: SeparabilityRow) -> bool:
    """Between-label reference cosine below 0.5 and every within-label cosine (held-out too) above 0.8."""
    return row.between_max < BETWEEN_AIM and min(row.within_min, row.heldout_min) > WITHIN_AIM


class WordingMiss(NamedTuple):
    """A phrase whose smallest cosine with the other phrases of its label is at or under the aim."""

    track: str
    label: str
    phrase: str
    heldout: bool
    min_cosine: float
    nearest: str
    """The reference phrase closest to it."""


def wording_misses(clap: TextEmbedder) -> list[WordingMiss]:
    """Every training or held-out paraphrase that misses the within-label aim, worst first."""
    ph = _embed(clap)
    out = []
    for k, (track, lab) in enumerate(ph.keys):
        group = np.concatenate([ph.train[k], ph.heldout[k]])
        texts = [LABEL_PHRASES[track][lab], *TRAIN_PARAPHRASES[track][lab], *HELDOUT_PARAPHRASES[track][lab]]
        n_train = len(ph.train[k])
        sims = group @ group[:n_train].T  # every phrase against the training phrases, as in the table
        sims[np.arange(n_train), np.arange(n_train)] = np.inf
        for r in range(len(texts)):
            low = float(sims[r].min())
            if low <= WITHIN_AIM:
                t, n = ph.keys[int(np.argmax(ph.ref @ group[r]))]
                out.append(WordingMiss(track, lab, texts[r], r >= n_train, low, LABEL_PHRASES[t][n]))
    return sorted(out, key=lambda m: m.min_cosine)
