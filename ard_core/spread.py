"""How much a figure would move with another sample: the bootstrap over the items it averages.

Every Table 1 figure is a mean over test clips and every Table 3 figure a function of the
steered source samples, so :func:`bootstrap` resamples those items with replacement
(``n_resamples`` times, seeded) and reports the figure with the standard deviation of its
resampled values and their central ``level`` percentile interval. A statistic of any shape
of data works: it receives a batch of resamples ``(R, n, ...)`` and returns ``(R,)``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

Statistic = Callable[[np.ndarray], np.ndarray]
"""(R, n, ...) resampled data -> (R,) figures; the default is the mean over the n items."""

DEFAULT_RESAMPLES = 1000
_CHUNK = 100  # resamples materialised at once: bounds memory at (100, n, ...) whatever n


class Spread(NamedTuple):
    value: float
    """The statistic on the data as it is."""
    std: float
    """Standard deviation of the statistic over bootstrap resamples (0 for a single item)."""
    low: float
    high: float
    """The central ``level`` percentile interval of the resampled statistic."""
    n: int
    """Items resampled."""


def _mean(batch: np.ndarray) -> np.ndarray:
    return batch.reshape(batch.shape[0], batch.shape[1], -1).mean(axis=1)[:, 0]


def bootstrap(data: np.ndarray, statistic: Statistic | None = None, *, n_resamples: int = DEFAULT_RESAMPLES,
              seed: int = 0, level: float = 0.95) -> Spread:
    """The figure ``statistic(data)`` with its bootstrap spread over the items (axis 0) of ``data``.

    Resample indices come from ``numpy.random.default_rng(seed)``, so the same data and seed
    give the same spread on every machine.
    """
    stat = statistic or _mean
    data = np.asarray(data, dtype=np.float64)
    if data.ndim == 0 or len(data) == 0:
        raise ValueError("bootstrap needs at least one item (axis 0 of data is empty)")
    if n_resamples < 1 or not 0 < level < 1:
        raise ValueError(f"bootstrap: n_resamples {n_resamples} must be >= 1 and level {level} in (0, 1)")
    value = float(stat(data[None])[0])
    n = len(data)
    rng = np.random.default_rng(seed)
    stats = []
    for start in range(0, n_resamples, _CHUNK):
        idx = rng.integers(0, n, size=(min(_CHUNK, n_resamples - start), n))
        stats.append(np.asarray(stat(data[idx]), dtype=np.float64))
    s = np.concatenate(stats)
    lo, hi = np.quantile(s, [(1 - level) / 2, (1 + level) / 2])
    return Spread(value, float(s.std(ddof=1)) if len(s) > 1 else 0.0, float(lo), float(hi), n)
