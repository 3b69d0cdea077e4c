"""The tiny CLAP's contrastive losses: label-aware negatives, several positives per row.

Two terms shape the shared space (:mod:`forge.tiny_clap.train` adds the audio heads' loss):

- **audio <-> text** (:func:`audio_text_loss`): each batch clip against the batch's captions and a
  phrase of every label of the corpus (its reference phrase or a training paraphrase,
  :mod:`.phrases`). A text is a *positive* for a clip when it is the clip's own caption or the
  phrase of one of the clip's labels: a composite clip ("a woman speaking French in a neutral
  voice, interrupted by a cat meowing") has its caption and all four of its labels' phrases as
  positives. A text is a *negative* only when it says something false of the clip: a phrase of a
  label the clip lacks, or a caption naming a fact (label or pace/noise word) the clip lacks.
  Everything else (another clip's caption that is true of this clip, e.g. "a cat meowing" for
  the composite above) is left out of the denominator: never a negative. The same relation,
  transposed, gives the text -> audio direction.
- **text <-> text** (:func:`supervised_contrastive`): the phrases of a step, two or more per label,
  as a supervised contrastive loss (Khosla et al., 2020) with the label as class: the wordings of
  one concept are positives, every other label's wordings (other tracks' too) negatives.
- **caption -> phrases** (:func:`caption_phrase_loss`): a caption holds several concepts, so its
  positives are the phrases of all its labels and its negatives every other label's phrases. Without
  it the text encoder becomes a one-concept classifier: "man speaking English" lands on English
  alone and a composite caption on one of its two events, or on neither.

Each positive competes only with the row's negatives (:func:`multi_positive_nce`), so two true
texts of a clip ("a man speaking", "an angry voice") are never pushed apart on its account.
"""

from __future__ import annotations

import random
from typing import NamedTuple, Sequence

import torch
from torch.nn import functional as F

from ard_core.datasets import ClipRecord

CAPTION_TAGS: dict[str, str] = {"quickly": "pace:quick", "slowly": "pace:slow", "background noise": "noise"}
"""Caption words that state a fact of the clip beyond its labels (speech pace, background noise)."""


def concept_key(track: str, label: str) -> str:
    """How a label is named inside a fact set: 'animal:dog'."""
    return f"{track}:{label}"


def clip_facts(rec: ClipRecord) -> frozenset[str]:
    """Every label of the clip (as :func:`concept_key`) and the facts its caption's tag words state."""
    facts = {concept_key(track, lab) for track in rec.labels for lab in rec.label_set(track)}
    facts |= {tag for words, tag in CAPTION_TAGS.items() if words in rec.caption}
    return frozenset(facts)


class TextRelation(NamedTuple):
    """Which batch texts are positives and which negatives for each batch clip."""

    positive: torch.Tensor  # (clips, texts) bool
    negative: torch.Tensor  # (clips, texts) bool; never True where positive is


def batch_relation(clip_facts_: Sequence[frozenset[str]], phrase_keys: Sequence[str]) -> TextRelation:
    """Clips i against texts = the clips' own captions (same order), then phrases of ``phrase_keys``.

    Caption j is positive for clip i when j == i, negative when it names a fact clip i lacks;
    the phrase of concept c is positive when clip i has c, negative otherwise.
    """
    b, p = len(clip_facts_), len(phrase_keys)
    pos = torch.zeros(b, b + p, dtype=torch.bool)
    neg = torch.zeros(b, b + p, dtype=torch.bool)
    for i, facts in enumerate(clip_facts_):
        pos[i, i] = True
        for j, other in enumerate(clip_facts_):
            neg[i, j] = j != i and not other <= facts
        for k, key in enumerate(phrase_keys):
            pos[i, b + k] = key in facts
            neg[i, b + k] = key not in facts
    return TextRelation(pos, neg)


def multi_positive_nce(logits: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Mean over rows with a positive of the mean over its positives p of
    ``-log(exp(s_p) / (exp(s_p) + sum_neg exp(s_n)))``; cells in neither mask are ignored."""
    neg_lse = torch.logsumexp(logits.masked_fill(~negative, float("-inf")), dim=1, keepdim=True)  # (rows, 1)
    per_cell = torch.logaddexp(logits, neg_lse) - logits  # (rows, cols), -log p(positive vs negatives)
    n_pos = positive.sum(1)
    rows = n_pos > 0
    if not rows.any():
        return logits.sum() * 0.0
    per_row = (per_cell * positive).sum(1)[rows] / n_pos[rows]
    return per_row.mean()


def audio_text_loss(audio: torch.Tensor, text: torch.Tensor, relation: TextRelation, scale_a: torch.Tensor,
                    scale_t: torch.Tensor) -> torch.Tensor:
    """Symmetric multi-positive InfoNCE: audio (clips, D) and text (texts, D) rows L2-normalised."""
    sims = audio @ text.T  # (clips, texts)
    a2t = multi_positive_nce(sims * scale_a, relation.positive, relation.negative)
    t2a = multi_positive_nce(sims.T * scale_t, relation.positive.T, relation.negative.T)
    return (a2t + t2a) / 2


def caption_phrase_loss(caption: torch.Tensor, phrase: torch.Tensor, relation: TextRelation,
                        temperature: float) -> torch.Tensor:
    """Multi-positive InfoNCE of the batch captions (clips, D) against the phrases (phrases, D), with
    the phrase columns of ``relation`` (a clip's caption states exactly the clip's labels)."""
    b = caption.shape[0]
    logits = caption @ phrase.T / temperature
    return multi_positive_nce(logits, relation.positive[:, b:], relation.negative[:, b:])


def supervised_contrastive(emb: torch.Tensor, classes: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon over L2-normalised rows ``emb`` (N, D) with integer ``classes`` (N,): for each anchor,
    the mean over its same-class rows of -log softmax over all other rows."""
    n = emb.shape[0]
    logits = emb @ emb.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    same = (classes[:, None] == classes[None, :]) & ~self_mask
    n_pos = same.sum(1)
    rows = n_pos > 0
    if not rows.any():
        return emb.sum() * 0.0
    return (-(log_prob.masked_fill(~same, 0.0)).sum(1)[rows] / n_pos[rows]).mean()


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Rows to unit length (as ``ard_core.clap`` does before any cosine)."""
    return F.normalize(x, dim=-1)


class PhraseBank(NamedTuple):
    """The training wordings of every label: reference phrase and training paraphrases."""

    keys: list[str]
    """Concept key per label (:func:`concept_key`)."""
    phrases: list[tuple[str, ...]]
    """Per label: its reference phrase, then its training paraphrases."""

    @classmethod
    def build(cls) -> "PhraseBank":
        from forge.tiny_clap.phrases import TRAIN_PARAPHRASES, concept_phrases

        table = concept_phrases(TRAIN_PARAPHRASES)
        return cls([concept_key(t, lab) for t, lab in table], list(table.values()))

    def texts(self) -> list[str]:
        """Every phrase once (the tokenizer trains on them with the captions)."""
        return [p for group in self.phrases for p in group]

    def sample(self, rng: random.Random, per_label: int) -> tuple[list[str], list[str], torch.Tensor]:
        """``per_label`` distinct phrases of every label: texts, their concept keys, class ids (texts,)."""
        texts, keys, classes = [], [], []
        for c, (key, group) in enumerate(zip(self.keys, self.phrases)):
            for p in rng.sample(group, min(per_label, len(group))):
                texts.append(p)
                keys.append(key)
                classes.append(c)
        return texts, keys, torch.tensor(classes)
