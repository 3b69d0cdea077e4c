"""A feature's activations recomputed from the activation store: over one clip's tokens, and
over a fixed sample of clips (the feature page's trace plots and activation histogram).

Neither is stored in the catalog: a clip's tokens at the SAE's layer go through the SAE
on demand, which takes milliseconds per clip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    from ard_core.sae import TopKSAE
    from ard_core.store import ActivationStore

TOKEN_SECONDS = 0.04
"""Seconds per audio token when a clip's duration is unknown (Qwen2-Audio: 40 ms each)."""
WINDOW_TOKENS = 750
"""Qwen2-Audio's audio tokens in its 30 s window."""


class Trace(NamedTuple):
    """A feature's activation per token of one clip."""

    times: np.ndarray  # (T,) start time of each token, seconds
    acts: np.ndarray  # (T,) activation
    note: str  # why it is empty, when it is


def activation_over_time(sae: "TopKSAE", store: "ActivationStore", layer: int, feature: int, clip_id: str,
                         duration_s: float | None) -> Trace:
    """Feature ``feature``'s activation on each stored token of ``clip_id`` at ``layer`` (the SAE's layer)."""
    return clip_traces(sae, store, layer, [feature], clip_id, duration_s)[feature]


def clip_traces(sae: "TopKSAE", store: "ActivationStore", layer: int, features: list[int], clip_id: str,
                duration_s: float | None) -> dict[int, Trace]:
    """Each of ``features``' activation on each stored token of ``clip_id``, from one SAE encode of the clip."""
    empty = np.zeros(0)
    try:
        x = store.clip_tokens(layer, clip_id)  # (T, d) float16
        pos = store.clip_positions(layer, clip_id)  # (T,)
    except KeyError:
        return {f: Trace(empty, empty, f"clip {clip_id} has no stored activations at layer {layer}") for f in features}
    if x.shape[0] == 0:
        return {f: Trace(empty, empty, "the clip has no stored tokens") for f in features}
    with torch.no_grad():
        lat = sae.encode(torch.from_numpy(np.asarray(x, dtype=np.float32)))
    times = pos.astype(np.float64) * token_seconds(int(pos.max()) + 1, duration_s)
    return {f: Trace(times, (lat.acts * (lat.indices == f)).sum(dim=1).numpy().astype(np.float64), "")
            for f in features}


def token_seconds(span: int, duration_s: float | None) -> float:
    """Seconds per audio token of a clip with ``span`` tokens: Qwen2-Audio's 40 ms when its 25 per second
    explain the count (the last partial token dropped, or a clip cut to the 30 s window); otherwise the
    tokens are taken to cover the clip evenly (another model's rate)."""
    if not duration_s:
        return TOKEN_SECONDS
    qwen = abs(span * TOKEN_SECONDS - duration_s) <= TOKEN_SECONDS or (span == WINDOW_TOKENS and duration_s > 30.0)
    return TOKEN_SECONDS if qwen else float(duration_s) / span


class ActivationSample(NamedTuple):
    """An SAE's TopK latents on every token of a sample of stored clips."""

    clip_ids: list[str]
    n_tokens: int
    acts: torch.Tensor  # (n_tokens, K)
    indices: torch.Tensor  # (n_tokens, K)

    def feature_values(self, feature: int) -> np.ndarray:
        """(n_tokens,) the activation of ``feature`` on each sampled token (0 where it is not in the TopK)."""
        return (self.acts * (self.indices == feature)).sum(dim=1).numpy()


def activation_sample(sae: "TopKSAE", store: "ActivationStore", layer: int, token_budget: int,
                      seed: int = 0) -> ActivationSample:
    """The SAE's latents on clips drawn in a seeded order until ``token_budget`` tokens are reached.

    A fixed sample (same seed, same clips) keeps a feature's histogram stable between
    page views. Raises KeyError when the store holds no tokens at ``layer``.
    """
    index = store.index(layer)
    order = np.random.default_rng(seed).permutation(len(index))
    chosen, n = [], 0
    for i in order:
        if n >= token_budget:
            break
        chosen.append(index[i].clip_id)
        n += index[i].n_tokens
    xs = [np.asarray(store.clip_tokens(layer, c), dtype=np.float32) for c in chosen]
    x = torch.from_numpy(np.concatenate(xs)) if xs else torch.zeros(0, sae.cfg.d_in)
    with torch.no_grad():
        lat = sae.encode(x)
    return ActivationSample(chosen, int(x.shape[0]), lat.acts, lat.indices)
