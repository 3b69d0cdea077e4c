"""Stage 2 of AR&D: representativeness scores and each feature's top/bottom clips.

For clip ``a`` (T tokens) and feature k, with z the SAE latents (eq. 2):

    mu^k = (1/T) sum_t z_t^k          mean activation
    c^k  = (1/T) sum_t 1[z_t^k > 0]    coverage
    r^k  = mu^k * c^k                  representativeness ('ard')

The baselines of Table 1 score with mu alone ('mean_act'), c alone ('coverage'),
or run the same ard score on the raw neurons of x instead of SAE latents ('poly');
'random' picks random clips (:func:`random_representatives`).

Nothing here builds a dense (tokens, d_z) matrix: a clip's sums and counts come
from its K active (index, value) pairs per token via ``bincount``, and the top-p
and bottom-p clips of every feature are kept by merging each batch of clips into
running (features, p) tables. Ties (most clips score exactly 0 for most
features) are broken by a key hashed from (seed, feature, clip_id), so the
choice is deterministic, independent of clip order and batch size, and differs
between features (each feature gets its own bottom set among its zero scores).
:func:`select_representatives` streams a layer's clips from the activation store
through an SAE into a selector, a batch of clips at a time.
"""

from __future__ import annotations

import hashlib
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ard_core.sae import TopKSAE
from ard_core.store import ActivationStore

METHODS = ("ard", "mean_act", "coverage")


class ClipStats(NamedTuple):
    mean_act: torch.Tensor  # (B, F) mu
    coverage: torch.Tensor  # (B, F) c
    max_act: torch.Tensor  # (F,) max over all tokens of the batch
    n_active: torch.Tensor  # (F,) tokens where the feature is > 0


def clip_stats_sparse(acts: Sequence[torch.Tensor], indices: Sequence[torch.Tensor], n_features: int) -> ClipStats:
    """Stats of B clips from their TopK latents: acts[b], indices[b] are (T_b, K)."""
    B = len(acts)
    lengths = torch.tensor([a.shape[0] for a in acts], dtype=torch.float64)
    a = torch.cat([x.detach().reshape(-1).float().cpu() for x in acts])
    i = torch.cat([x.detach().reshape(-1).cpu() for x in indices])
    clip_of = torch.repeat_interleave(torch.arange(B), torch.tensor([x.numel() for x in acts]))
    flat = clip_of * n_features + i  # one bin per (clip, feature); each clip's entries keep their order
    sums = torch.bincount(flat, weights=a.double(), minlength=B * n_features).view(B, n_features)
    active = a > 0
    counts = torch.bincount(flat[active], minlength=B * n_features).view(B, n_features).double()
    max_act = torch.zeros(n_features).scatter_reduce(0, i, a, reduce="amax", include_self=True)
    denom = lengths.clamp(min=1).unsqueeze(1)
    return ClipStats((sums / denom).float(), (counts / denom).float(), max_act, counts.sum(0))


def clip_stats_dense(xs: Sequence[torch.Tensor]) -> ClipStats:
    """Stats of B clips from dense activations (T_b, F): the 'poly' baseline on raw neurons."""
    mus, covs = [], []
    n_features = xs[0].shape[1]
    max_act = torch.full((n_features,), -torch.inf)
    n_active = torch.zeros(n_features, dtype=torch.float64)
    for x in xs:
        x = x.detach().float().cpu()
        mus.append(x.mean(0))
        covs.append((x > 0).float().mean(0))
        max_act = torch.maximum(max_act, x.max(0).values)
        n_active += (x > 0).sum(0).double()
    return ClipStats(torch.stack(mus), torch.stack(covs), max_act, n_active)


def score(method: str, mean_act: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    if method == "ard":
        return mean_act * coverage
    if method == "mean_act":
        return mean_act
    if method == "coverage":
        return coverage
    raise ValueError(f"unknown scoring method {method!r}; use one of {METHODS}")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 (wrapping arithmetic): a cheap, well-mixed integer hash."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def clip_keys(clip_ids: Sequence[str], seed: int) -> np.ndarray:
    """(B,) uint64: a seeded pseudo-random key per clip, a function of (seed, clip id) only, so an order
    drawn from it does not depend on the order clips come in."""
    return np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{c}".encode(), digest_size=8).digest(), "big")
                     for c in clip_ids], dtype=np.uint64)


def tie_keys(clip_ids: Sequence[str], seed: int, n_features: int) -> torch.Tensor:
    """(n_features, B) seeded pseudo-random int64 per (feature, clip), independent of order: the tie-break.

    It depends on the feature too: with a per-clip key every feature broke its ties among the
    many zero scores the same way, so thousands of features shared the same few bottom sets."""
    clip = clip_keys(clip_ids, seed)
    feat = _splitmix64(np.arange(n_features, dtype=np.uint64) ^ np.uint64(seed & 0xFFFFFFFF))
    return torch.from_numpy(_splitmix64(feat[:, None] ^ clip[None, :]).view(np.int64))


class Selection(NamedTuple):
    """Per feature, p examples (rank 0 = most representative for 'top', least for 'bottom')."""

    clip_index: torch.Tensor  # (F, p) int64 into the scorer's clip list; -1 where fewer clips
    score: torch.Tensor  # (F, p)
    mean_act: torch.Tensor  # (F, p)
    coverage: torch.Tensor  # (F, p)


def low_coverage_share(top: Selection, features: torch.Tensor, threshold: float = 0.5) -> float | None:
    """Among the top-p clips selected for ``features``, the share whose coverage c is below ``threshold``:
    how often a method's representatives are clips where the feature fires on only a part of the
    tokens (a bark inside speech). None when no clip was selected."""
    idx = top.clip_index[features]
    cov = top.coverage[features][idx >= 0]
    return float((cov < threshold).float().mean()) if cov.numel() else None


class _Table:
    """Running best-p per feature under the order (score desc or asc, tie key asc)."""

    def __init__(self, n_features: int, p: int, descending: bool) -> None:
        self.descending = descending
        sentinel = -torch.inf if descending else torch.inf
        self.score = torch.full((n_features, 0), sentinel)
        self.key = torch.zeros((n_features, 0), dtype=torch.int64)
        self.idx = torch.zeros((n_features, 0), dtype=torch.int64)
        self.mu = torch.zeros((n_features, 0))
        self.cov = torch.zeros((n_features, 0))
        self.p = p

    def merge(self, score: torch.Tensor, key: torch.Tensor, idx: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor) -> None:
        """score/mu/cov/key: (F, B); idx: (B,)."""
        F, B = score.shape
        keys = key
        if self.score.shape[1] == self.p:
            # Once full, only rows where some clip beats the kept p-th are re-sorted. Most
            # scores are 0 and most rows have no such clip, so this skips nearly all of the
            # (F, p + B) sorting that otherwise dominates scoring; the result is the same.
            worst_s, worst_k = self.score[:, -1:], self.key[:, -1:]
            beats = (score > worst_s) if self.descending else (score < worst_s)
            rows = (beats | ((score == worst_s) & (keys < worst_k))).any(dim=1).nonzero().squeeze(1)
            if rows.numel() == 0:
                return
            if rows.numel() < F:
                new = self._merged(rows, score[rows], keys[rows], idx.expand(len(rows), B), mu[rows], cov[rows])
                for t, v in zip((self.score, self.key, self.idx, self.mu, self.cov), new):
                    t[rows] = v
                return
        self.score, self.key, self.idx, self.mu, self.cov = self._merged(
            slice(None), score, keys, idx.expand(F, B), mu, cov)

    def _merged(self, rows: torch.Tensor | slice, score: torch.Tensor, key: torch.Tensor, idx: torch.Tensor,
                mu: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The best p of the kept entries of ``rows`` and the new (R, B) ones, in order."""
        s = torch.cat([self.score[rows], score], 1)
        k = torch.cat([self.key[rows], key], 1)
        i = torch.cat([self.idx[rows], idx], 1)
        m = torch.cat([self.mu[rows], mu], 1)
        c = torch.cat([self.cov[rows], cov], 1)
        # lexicographic sort: by key, then (stable) by score
        order = k.argsort(dim=1, stable=True)
        s, k, i, m, c = (t.gather(1, order) for t in (s, k, i, m, c))
        order = s.argsort(dim=1, descending=self.descending, stable=True)[:, : self.p]
        return tuple(t.gather(1, order) for t in (s, k, i, m, c))

    def selection(self) -> Selection:
        F, have = self.score.shape
        pad = self.p - have
        if pad <= 0:
            return Selection(self.idx, self.score, self.mu, self.cov)
        nan = torch.full((F, pad), torch.nan)
        return Selection(torch.cat([self.idx, torch.full((F, pad), -1)], 1), torch.cat([self.score, nan], 1),
                         torch.cat([self.mu, nan], 1), torch.cat([self.cov, nan], 1))


class RepresentativeSelector:
    """Feed batches of clip stats; get the top-p and bottom-p clips per feature and method."""

    def __init__(self, n_features: int, p: int = 4, methods: Sequence[str] = METHODS, seed: int = 0) -> None:
        for m in methods:
            score(m, torch.zeros(1), torch.zeros(1))  # validates the name
        self.n_features, self.p, self.seed = n_features, p, seed
        self.top = {m: _Table(n_features, p, descending=True) for m in methods}
        self.bottom = {m: _Table(n_features, p, descending=False) for m in methods}
        self.clip_ids: list[str] = []
        self.n_active = torch.zeros(n_features, dtype=torch.float64)
        self.n_tokens = 0
        self.max_act = torch.full((n_features,), -torch.inf)

    def update(self, clip_ids: Sequence[str], stats: ClipStats, n_tokens: int) -> None:
        start = len(self.clip_ids)
        self.clip_ids.extend(clip_ids)
        idx = torch.arange(start, start + len(clip_ids))
        key = tie_keys(clip_ids, self.seed, self.n_features)
        mu, cov = stats.mean_act.T.contiguous(), stats.coverage.T.contiguous()  # (F, B)
        for m in self.top:
            r = score(m, mu, cov)
            self.top[m].merge(r, key, idx, mu, cov)
            self.bottom[m].merge(r, key, idx, mu, cov)
        self.n_active += stats.n_active
        self.n_tokens += n_tokens
        self.max_act = torch.maximum(self.max_act, stats.max_act)

    def result(self, method: str) -> tuple[Selection, Selection]:
        return self.top[method].selection(), self.bottom[method].selection()

    @property
    def density(self) -> torch.Tensor:
        """(F,) fraction of all tokens on which each feature is active."""
        return (self.n_active / max(self.n_tokens, 1)).float()


def random_representatives(n_clips: int, n_features: int, p: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 'random' baseline: (F, p) random top and (F, p) random bottom clip indices, disjoint per feature."""
    g = torch.Generator().manual_seed(seed)
    need = min(2 * p, n_clips)
    # Written into one tensor: a list of slices (even cloned ones) kept memory growing by a
    # whole permutation per feature, n_features x n_clips int64 (26 GB at 100k clips x 32k).
    picks = torch.empty((n_features, need), dtype=torch.int64)
    for f in range(n_features):
        picks[f] = torch.randperm(n_clips, generator=g)[:need]
    return picks[:, :p], picks[:, p:need]


class StatsBatch(NamedTuple):
    clip_ids: list[str]
    stats: ClipStats
    n_tokens: int


def iter_clip_stats(store: ActivationStore, layer: int, clip_ids: set[str], n_features: int, sae: TopKSAE | None, *,
                    batch_clips: int, encode_tokens: int, desc: str = "") -> Iterator[StatsBatch]:
    """The clips ``clip_ids`` of ``layer`` through ``sae`` (None: the raw neurons), ``batch_clips``
    clips per batch of statistics and at most ``encode_tokens`` tokens per SAE encode call (which
    bounds the dense (tokens, d_z) pre-activations); clips with no tokens are skipped."""
    ids: list[str] = []
    xs: list[torch.Tensor] = []

    def flush() -> StatsBatch:
        if sae is None:
            stats = clip_stats_dense(xs)
        else:
            acts, indices = [], []
            with torch.inference_mode():
                for chunk in torch.cat(xs).split(encode_tokens):
                    lat = sae.encode(chunk.to(sae.device, torch.float32))
                    acts.append(lat.acts)
                    indices.append(lat.indices)
            splits = [len(x) for x in xs]
            stats = clip_stats_sparse(list(torch.cat(acts).split(splits)), list(torch.cat(indices).split(splits)),
                                      n_features)
        out = StatsBatch(list(ids), stats, sum(len(x) for x in xs))
        ids.clear()
        xs.clear()
        return out

    for clip_id, acts in tqdm(store.iter_clips(layer), total=len(store.index(layer)), desc=desc, leave=False):
        if clip_id not in clip_ids or len(acts) == 0:
            continue
        ids.append(clip_id)
        xs.append(torch.from_numpy(acts))  # the store's dtype; float32 one encode chunk at a time
        if len(ids) >= batch_clips:
            yield flush()
    if ids:
        yield flush()


def select_representatives(store: ActivationStore, layer: int, clip_ids: set[str], n_features: int,
                           sae: TopKSAE | None, *, p: int, methods: Sequence[str], seed: int, batch_clips: int,
                           encode_tokens: int, desc: str = "") -> RepresentativeSelector:
    """Stream the clips ``clip_ids`` of ``layer`` through ``sae`` (None: the raw neurons, 'ard' only)
    into a selector (:func:`iter_clip_stats`)."""
    sel = RepresentativeSelector(n_features, p=p, methods=methods if sae is not None else ["ard"], seed=seed)
    for batch in iter_clip_stats(store, layer, clip_ids, n_features, sae, batch_clips=batch_clips,
                                 encode_tokens=encode_tokens, desc=desc):
        sel.update(batch.clip_ids, batch.stats, batch.n_tokens)
    return sel
