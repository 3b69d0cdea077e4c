"""What fires on a clip: the model's residual stream on one clip through chosen SAEs, and the
features most representative of it (the audio version of Neuronpedia's search via inference).

For each SAE the clip's audio-token states at its layer are encoded; per feature, over the
clip's T audio tokens, mu = mean activation, c = coverage (share of tokens where it fires)
and r = mu x c, the AR&D representativeness of :mod:`ard_core.retrieval` (the same numbers the
score stage ranks a feature's top clips by). Features are ranked by r over every SAE at once.

No gradio and no catalog here: the caller gives the SAEs and a function naming features
(the Inspect tab and the ``/inspect`` endpoint pass the catalog's names).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

import numpy as np
import torch

from ard_core.retrieval import clip_stats_sparse
from ard_core.traces import TOKEN_SECONDS

if TYPE_CHECKING:  # pragma: no cover
    from ard_core.models.base import AudioLLM
    from ard_core.sae import TopKSAE


class SaeAt(NamedTuple):
    """An SAE to inspect with: its catalog id, the decoder layer it reads, the loaded SAE."""

    sae_id: str
    layer: int
    sae: "TopKSAE"


class FeatureOnClip(NamedTuple):
    """One feature's activity on the inspected clip."""

    sae_id: str
    feature: int
    layer: int
    name: str
    """The catalog's name ('' when unnamed)."""
    mean_act: float
    """mu: mean activation over the clip's audio tokens."""
    coverage: float
    """c: share of the clip's audio tokens where it fires."""
    max_act: float
    """Its largest activation on the clip."""
    acts: np.ndarray  # (T,) activation on each audio token

    @property
    def ref(self) -> str:
        return f"{self.sae_id}/{self.feature}"

    @property
    def score(self) -> float:
        """r = mu x c, what the features are ranked by."""
        return self.mean_act * self.coverage


class ClipInspection(NamedTuple):
    duration_s: float
    n_tokens: int
    """Audio tokens of the clip (the time axis of every ``acts``)."""
    features: list[FeatureOnClip]
    """The ranked features, best first."""
    n_firing: int
    """Features of the chosen SAEs that fire anywhere on the clip (named or not)."""

    @property
    def seconds_per_token(self) -> float:
        return self.duration_s / self.n_tokens if self.n_tokens else TOKEN_SECONDS

    @property
    def times(self) -> np.ndarray:
        """(T,) start time of each audio token, seconds."""
        return np.arange(self.n_tokens) * self.seconds_per_token


def audio_states(llm: "AudioLLM", audio: np.ndarray, prompt: str, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """{layer: (T, d) float32 on the CPU}: the residual stream after each layer at the clip's audio tokens."""
    from ard_core.activations import clip_states

    states = clip_states(llm, [audio], prompt, sorted(set(layers)), "audio")[0]
    return {layer: x.float().cpu() for layer, x in states.items()}


def rank_features(states: dict[int, torch.Tensor], saes: Sequence[SaeAt], names: Callable[[list[str]], dict[str, str]],
                  top_n: int = 20, named_only: bool = True) -> tuple[list[FeatureOnClip], int]:
    """The ``top_n`` features with the largest r on the clip whose ``states`` are given, and how many fire.

    ``names(refs)`` maps references to names; a reference it leaves out is not listed in the catalog
    and is skipped; with ``named_only`` so is one named ''. Ties in r go to the earlier SAE, then index.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    found: list[tuple[float, int, int, FeatureOnClip]] = []
    n_firing = 0
    for order, s in enumerate(saes):
        x = states[s.layer]
        with torch.no_grad():
            lat = s.sae.encode(x.to(s.sae.W_enc.device, s.sae.W_enc.dtype))
        acts, idx = lat.acts.float().cpu(), lat.indices.cpu()
        stats = clip_stats_sparse([acts], [idx], s.sae.cfg.d_sae)
        mu, cov = stats.mean_act[0], stats.coverage[0]
        firing = torch.nonzero(mu > 0).flatten().tolist()
        n_firing += len(firing)
        known = names([f"{s.sae_id}/{k}" for k in firing])
        for k in firing:
            name = known.get(f"{s.sae_id}/{k}")
            if name is None or (named_only and not name.strip()):
                continue
            trace = (acts * (idx == k)).sum(dim=1).numpy().astype(np.float64)
            f = FeatureOnClip(s.sae_id, k, s.layer, name, float(mu[k]), float(cov[k]), float(trace.max()), trace)
            found.append((-f.score, order, k, f))
    found.sort(key=lambda t: t[:3])
    return [t[3] for t in found[:top_n]], n_firing


def inspect_clip(llm: "AudioLLM", audio: np.ndarray, prompt: str, saes: Sequence[SaeAt],
                 names: Callable[[list[str]], dict[str, str]], top_n: int = 20,
                 named_only: bool = True) -> ClipInspection:
    """Run ``llm`` once on ``audio`` (mono at ``llm.sampling_rate``) and rank what fires on it.

    ``prompt`` is a built prompt; use the one the activations were extracted with (the store's),
    so the SAEs read the stream they were trained on.
    """
    if not saes:
        raise ValueError("choose at least one SAE to inspect the clip with")
    states = audio_states(llm, audio, prompt, [s.layer for s in saes])
    features, n_firing = rank_features(states, saes, names, top_n, named_only)
    n_tokens = int(next(iter(states.values())).shape[0])
    return ClipInspection(audio.size / llm.sampling_rate, n_tokens, features, n_firing)
