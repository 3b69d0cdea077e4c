"""Steerability: which features turn a track's answer into a target label, and at what value.

For a track with a P3 question (gender, emotion, ...) and a target label, the candidates
on one SAE are

- **named**: named features whose name matches the target: first those sharing a word that
  tells the target's reference phrase apart from the track's other labels ('man' for male
  when the references are 'man speaking' and 'woman speaking'), then by text similarity of
  name and reference (the evaluate stage's CLAP text space);
- **contrast**: the features with the largest probe contrast, mean r = mu x c on the clips
  labelled with the target minus mean r on the track's other clips (from the activation
  store, :func:`clip_scores`). On raw neurons the same contrast picks the 'poly' baseline.

Values are set relative to the layer's typical residual norm: multiple m sets the feature so
that its decoder row adds m x the median token norm at that layer (m x norm x input_scale /
|W_dec[k]| in latent units; m x norm on a raw neuron), so one sweep fits every layer and SAE.

:func:`sweep` judges candidates x values on probe clips whose unsteered answer is not the
target (:class:`ard_core.steer_batch.ClipPool`), sparingly: every candidate and value first
on ``screen_clips`` of them, then only the ``finalists`` best on the rest. A candidate's
result is its best value (most flips, then the smallest multiple), the flips and the clips
it was judged on. Results judged on different numbers of clips rank by the Wilson lower bound
of their flip rate (:func:`wilson_lower`), so 3 of 3 screen clips does not outrank 15 of 16.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch

from ard_core.catalog.rows import ClipRow
from ard_core.naming import STOPWORDS
from ard_core.prompts import EMOTION_NEUTRAL_FORMAT, NEUTRAL, TRACK_PROMPTS, Prompt, attribute_prompt, p3_options
from ard_core.retrieval import clip_keys, clip_stats_dense, clip_stats_sparse
from ard_core.steer_batch import ClipPool
from ard_core.steering import RowSteer
from ard_core.store import ActivationStore


class Candidate(NamedTuple):
    """A feature (or raw neuron) to try for a target."""

    sae_id: str | None
    """The SAE; None for a raw neuron of the layer (poly)."""
    layer: int
    feature: int
    how: str
    """'name', 'contrast' or 'name+contrast': why it was chosen."""


class SweepResult(NamedTuple):
    """A candidate's best value on the probe clips."""

    candidate: Candidate
    value: float
    """Steering value (latent units; a raw neuron's value for poly)."""
    multiple: float
    """The value as a multiple of the layer's median token norm."""
    flipped: int
    """Probe clips answered with the target at that value."""
    n: int
    """Probe clips judged (their unsteered answer was not the target)."""
    clip: int
    """Pool index of the first clip the value flipped; -1 when none."""

    @property
    def flip_rate(self) -> float:
        return self.flipped / self.n if self.n else 0.0

    @property
    def flip_lower(self) -> float:
        return wilson_lower(self.flipped, self.n)


def wilson_lower(k: int, n: int, z: float = 1.96) -> float:
    """The 95% Wilson lower bound of a rate of k in n: what results judged on different n rank by."""
    if n <= 0:
        return 0.0
    p = k / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - margin) / (1 + z * z / n)


# -- prompts and clips ------------------------------------------------------------------------
def judge_prompt(track: str, present: Sequence[str]) -> tuple[Prompt, tuple[str, ...]]:
    """The question a track's answers are judged by and its labels: P3 with the labels present,
    or for emotion with 'neutral' among them P3n (all six; Neutral->Happy needs 'neutral')."""
    if track not in TRACK_PROMPTS:
        raise KeyError(f"no P3 question for track {track!r}; known tracks: {sorted(TRACK_PROMPTS)}")
    labels = p3_options(track, sorted(set(present)))
    if track == "emotion" and NEUTRAL in labels:
        p = attribute_prompt(track, EMOTION_NEUTRAL_FORMAT, labels)
        return p, tuple(o for o in labels if o != NEUTRAL) + (NEUTRAL,)
    return attribute_prompt(track, "P3", labels), labels


def probe_pool(clips: Sequence[ClipRow], track: str, n: int, seed: int) -> list[ClipRow]:
    """Up to ``n`` of ``clips`` with a ``track`` label, balanced over labels (round robin), each
    label's clips in a seeded order independent of the catalog's order."""
    by_label: dict[str, list[ClipRow]] = defaultdict(list)
    for c in clips:
        if c.labels.get(track):
            by_label[c.labels[track]].append(c)
    queues = []
    for label in sorted(by_label):
        group = by_label[label]
        keys = clip_keys([c.clip_id for c in group], seed).tolist()
        queues.append([c for _, c in sorted(zip(keys, group), key=lambda kc: (kc[0], kc[1].clip_id))])
    out: list[ClipRow] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


# -- candidates -------------------------------------------------------------------------------
def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z][a-z'-]*", (text or "").lower()) if w not in STOPWORDS}


def target_words(refs: Mapping[str, str]) -> dict[str, set[str]]:
    """label -> the words of its reference phrase the track's other references do not all share,
    plus the label itself ({'male': {'man', 'male'}} from 'man speaking' / 'woman speaking')."""
    common = set.intersection(*(words(t) for t in refs.values())) if refs else set()
    return {label: (words(text) - common) | {label.lower()} for label, text in refs.items()}


def named_candidates(names: Sequence[str], sims: np.ndarray, wanted: set[str], n: int) -> list[int]:
    """Indices into ``names`` of the ``n`` best named matches: word matches first, then by similarity."""
    order = sorted(range(len(names)), key=lambda i: (not (words(names[i]) & wanted), -float(sims[i]), i))
    return order[:n]


def clip_scores(store: ActivationStore, layer: int, clip_ids: Sequence[str], saes: Mapping[str, torch.nn.Module],
                ) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """r = mu x c per clip: ({sae_id: (clips, d_sae)}, raw neurons (clips, d), median token norm).
    A clip with no stored tokens scores 0 everywhere."""
    xs = [torch.from_numpy(store.clip_tokens(layer, c).astype(np.float32)) for c in clip_ids]
    empty = np.array([len(x) == 0 for x in xs], dtype=bool)
    norm = float(torch.cat(xs).norm(dim=1).median()) if xs and not empty.all() else 0.0
    keep = [x if len(x) else torch.zeros(1, store.d_model) for x in xs]
    poly = clip_stats_dense(keep)
    out = {}
    with torch.inference_mode():
        for sae_id, sae in saes.items():
            lat = [sae.encode(x) for x in keep]
            st = clip_stats_sparse([a for a, _ in lat], [i for _, i in lat], sae.cfg.d_sae)
            out[sae_id] = (st.mean_act * st.coverage).numpy()
            out[sae_id][empty] = 0.0
    r_poly = (poly.mean_act * poly.coverage).numpy()
    r_poly[empty] = 0.0
    return out, r_poly, norm


def contrast(r: np.ndarray, labels: Sequence[str], target: str) -> np.ndarray:
    """(features,) mean r on clips labelled ``target`` minus mean r on the others (``labels`` per row of r)."""
    on = np.array([l == target for l in labels])
    if not on.any() or on.all():
        return np.zeros(r.shape[1])
    return r[on].mean(0) - r[~on].mean(0)


def top_contrast(c: np.ndarray, n: int) -> list[int]:
    """The ``n`` features of highest positive contrast (ties by index)."""
    order = sorted((i for i in range(len(c)) if c[i] > 0), key=lambda i: (-float(c[i]), i))
    return order[:n]


def merge(named: Sequence[int], contrasted: Sequence[int], sae_id: str | None, layer: int) -> list[Candidate]:
    """Named first, then contrast; a feature found both ways once, as 'name+contrast'."""
    out = [Candidate(sae_id, layer, k, "name+contrast" if k in contrasted else "name") for k in named]
    return out + [Candidate(sae_id, layer, k, "contrast") for k in contrasted if k not in named]


def values_for(sae: torch.nn.Module | None, feature: int, multiples: Sequence[float], norm: float) -> np.ndarray:
    """The sweep's values of one feature: its decoder row adds m x ``norm`` (module docstring)."""
    m = np.asarray(multiples, dtype=np.float64)
    if sae is None:
        return m * norm
    row = float(sae.W_dec[feature].detach().norm())
    return m * norm * sae.cfg.input_scale / max(row, 1e-12)


# -- the sweep --------------------------------------------------------------------------------
def _judge(pool: ClipPool, saes: Mapping[str, torch.nn.Module], cands: Sequence[Candidate],
           values: Mapping[Candidate, np.ndarray], clips: np.ndarray, target: int,
           positions: Sequence[str]) -> np.ndarray:
    """(candidates, values, clips) bool: the steered answer is the target."""
    V = len(next(iter(values.values()))) if values else 0
    hit = np.zeros((len(cands), V, len(clips)), bool)
    if not len(clips):
        return hit
    groups: dict[tuple[int, str | None], list[int]] = defaultdict(list)
    for i, c in enumerate(cands):
        groups[(c.layer, c.sae_id)].append(i)
    for (layer, sae_id), members in groups.items():
        # rows: candidate-major, then value, then clip
        feats = np.repeat([cands[i].feature for i in members], V * len(clips))
        vals = np.concatenate([np.repeat(values[cands[i]], len(clips)) for i in members])
        rows = np.tile(clips, len(members) * V)
        spec = RowSteer(layer, torch.as_tensor(feats, dtype=torch.int64), torch.as_tensor(vals, dtype=torch.float32),
                        saes[sae_id] if sae_id is not None else None)
        ans = pool.steered(spec, rows, positions).answer.reshape(len(members), V, len(clips))
        hit[members] = ans == target
    return hit


def _best(cand: Candidate, hits: np.ndarray, clips: np.ndarray, values: np.ndarray,
          multiples: Sequence[float]) -> SweepResult:
    """A candidate's best value from its (values, clips) hits: most flips, then the smallest |multiple|."""
    flips = hits.sum(1)
    v = min(range(len(flips)), key=lambda j: (-int(flips[j]), abs(multiples[j]), j))
    first = np.flatnonzero(hits[v])
    return SweepResult(cand, float(values[v]), float(multiples[v]), int(flips[v]), int(len(clips)),
                       int(clips[first[0]]) if len(first) else -1)


def sweep(pool: ClipPool, saes: Mapping[str, torch.nn.Module], cands: Sequence[Candidate],
          values: Mapping[Candidate, np.ndarray], multiples: Sequence[float], target: int, movable: np.ndarray,
          screen_clips: int, finalists: int, positions: Sequence[str]) -> list[SweepResult]:
    """Every candidate's best value on the ``movable`` pool clips (module docstring), in candidate order."""
    if not cands:
        return []
    screen, rest = movable[:screen_clips], movable[screen_clips:]
    hits = _judge(pool, saes, cands, values, screen, target, positions)
    order = sorted(range(len(cands)), key=lambda i: (-int(hits[i].sum(1).max(initial=0)), i))
    final = sorted(order[:finalists]) if len(rest) else []
    more = _judge(pool, saes, [cands[i] for i in final], values, rest, target, positions)
    out = []
    for i, cand in enumerate(cands):
        if i in final:
            h, clips = np.concatenate([hits[i], more[final.index(i)]], axis=1), movable
        else:
            h, clips = hits[i], screen
        out.append(_best(cand, h, clips, values[cand], multiples))
    return out
