"""Detection score of a named feature: does its name pick out the clips it fires on?

In the spirit of EleutherAI delphi's detection scoring, but offline and for audio: a balanced
sample of the feature's activating clips (mean activation mu > 0) and non-activating clips
(mu = 0) is drawn (:func:`balanced_sample`, seeded per feature), and a judge scores each clip
against the name:

- ``clap``: the name is a CLAP text query; the score of a clip is the cosine between the name's
  text embedding and the clip's (cached) audio embedding (:func:`clap_detection`);
- ``llm``: an OpenAI-compatible chat endpoint reads the name and the clip's caption and answers
  yes or no (:func:`llm_detection`).

The detection score is the AUROC of those scores separating activating from non-activating
clips (:func:`auroc`; 0.5 = the name says nothing about where the feature fires, 1 = it tells
them apart perfectly). For the LLM's yes/no answers the AUROC is the balanced accuracy.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np

if TYPE_CHECKING:
    from ard_core.naming import ChatEndpoint

JUDGES = ("clap", "llm")


def auroc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(score of a random positive > that of a random negative), ties counted half (Mann-Whitney U)."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    if not len(pos) or not len(neg):
        raise ValueError("AUROC needs at least one positive and one negative score")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


class Sample(NamedTuple):
    pos: np.ndarray  # indices of activating clips
    neg: np.ndarray  # indices of non-activating clips


def feature_rng(seed: int, sae_id: str, feature: int) -> np.random.Generator:
    """The generator of one feature's sample: the same for a feature whatever else is scored."""
    return np.random.default_rng([seed, zlib.crc32(sae_id.encode()), feature])


def balanced_sample(mu: np.ndarray, n: int, rng: np.random.Generator) -> Sample:
    """Up to ``n`` activating (mu > 0) and as many non-activating (mu = 0) clip indices of ``mu`` (clips,),
    the same number of each (the smaller side's count), drawn without replacement."""
    mu = np.asarray(mu)
    pos, neg = np.flatnonzero(mu > 0), np.flatnonzero(mu == 0)
    k = min(n, len(pos), len(neg))
    return Sample(np.sort(rng.choice(pos, k, replace=False)), np.sort(rng.choice(neg, k, replace=False)))


class DetectionScore(NamedTuple):
    score: float | None
    """AUROC; None when the feature has no activating or no non-activating clip."""
    n_pos: int
    n_neg: int


def clap_detection(name_emb: np.ndarray, audio_emb: np.ndarray, sample: Sample) -> DetectionScore:
    """AUROC of cos(name, clip) over the sample; ``audio_emb`` (clips, D) and ``name_emb`` (D,) L2-normalised."""
    if not len(sample.pos):
        return DetectionScore(None, 0, 0)
    sims = audio_emb @ name_emb
    return DetectionScore(auroc(sims[sample.pos], sims[sample.neg]), len(sample.pos), len(sample.neg))


def judge_prompt(name: str, caption: str) -> list[dict[str, str]]:
    return [{"role": "user", "content":
             f"An audio feature is described as: \"{name}\".\nA clip is described as: \"{caption}\".\n"
             "Does the feature's description apply to this clip? Reply with yes or no only."}]


def llm_detection(endpoint: ChatEndpoint, name: str, captions: Sequence[str], sample: Sample) -> DetectionScore:
    """AUROC (= balanced accuracy) of the endpoint's yes/no verdicts on the sampled clips' captions."""
    if not len(sample.pos):
        return DetectionScore(None, 0, 0)

    def verdicts(idx: np.ndarray) -> list[float]:
        return [float(endpoint.chat(judge_prompt(name, captions[i]), max_tokens=3).strip().lower().startswith("yes"))
                for i in idx]

    return DetectionScore(auroc(verdicts(sample.pos), verdicts(sample.neg)), len(sample.pos), len(sample.neg))
