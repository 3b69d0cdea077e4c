"""The tiny CLAP's text space: the separability figures (on planted spaces and on the shipped
weights), the paraphrase sets they are measured on, and the label-aware contrastive losses."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import torch

from ard_core.datasets import ClipRecord
from ard_core.datasets.labels import LABEL_PHRASES
from forge.tiny_clap.losses import (PhraseBank, batch_relation, caption_phrase_loss, clip_facts, concept_key,
                                    multi_positive_nce, supervised_contrastive)
from forge.tiny_clap.phrases import HELDOUT_PARAPHRASES, TRAIN_PARAPHRASES, concept_phrases
from forge.tiny_clap.separability import BETWEEN_AIM, WITHIN_AIM, meets_aims, separability, wording_misses

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "assets" / "models" / "tiny-clap"
MANIFEST = REPO / "assets" / "corpus" / "manifest.csv"
KEYS = [(t, lab) for t, labels in LABEL_PHRASES.items() for lab in labels]


class PlantedSpace:
    """Every phrase of label k embeds as basis vector ``direction[k]`` plus a little seeded noise."""

    def __init__(self, direction: dict[tuple[str, str], int], noise: float = 0.01) -> None:
        self.of: dict[str, int] = {}
        for table in (concept_phrases(TRAIN_PARAPHRASES), concept_phrases(HELDOUT_PARAPHRASES, False)):
            for key, phrases in table.items():
                self.of.update({p: direction[key] for p in phrases})
        self.noise = noise

    def embed_text(self, texts: Sequence[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
        rng = np.random.default_rng(0)
        x = np.eye(len(KEYS), dtype=np.float32)[[self.of[t] for t in texts]]
        x += self.noise * rng.standard_normal(x.shape).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_separability_of_a_planted_separated_space() -> None:
    rows = separability(PlantedSpace({k: i for i, k in enumerate(KEYS)}))
    assert [r.track for r in rows] == [*LABEL_PHRASES, "all"]
    assert rows[-1].n_labels == len(KEYS)
    for r in rows:
        assert r.between_max < 0.2 and r.within_min > 0.95 and r.heldout_min > 0.95
        assert r.heldout_nearest == 1.0 and meets_aims(r)


def test_separability_names_a_planted_collision_and_a_planted_split() -> None:
    direction = {k: i for i, k in enumerate(KEYS)}
    direction[("animal", "cat")] = direction[("sound_event", "siren")]  # cat and siren said alike
    rows = {r.track: r for r in separability(PlantedSpace(direction))}
    assert rows["animal"].between_max > 0.95
    assert rows["animal"].between_pair == "'a cat meowing' / 'a siren wailing'"
    assert rows["all"].between_max > 0.95 and not meets_aims(rows["all"])
    assert rows["gender"].between_max < 0.2 and meets_aims(rows["gender"])
    assert rows["animal"].heldout_nearest < 1.0  # a held-out cat phrase may land on the siren

    # One held-out dog paraphrase embedded as a cow: the held-out minimum drops, the training one does not.
    space = PlantedSpace({k: i for i, k in enumerate(KEYS)})
    space.of[HELDOUT_PARAPHRASES["animal"]["dog"][0]] = KEYS.index(("animal", "cow"))
    animal = {r.track: r for r in separability(space)}["animal"]
    assert animal.heldout_min < 0.2 and animal.within_min > 0.95
    assert animal.heldout_nearest == pytest.approx(1 - 1 / sum(len(v) for v in HELDOUT_PARAPHRASES["animal"].values()))


def _words(text: str) -> set[str]:
    return set(re.findall(r"[\w'-]+", text.lower()))


def test_paraphrase_sets_cover_every_label_and_held_out_ones_are_new_wordings_of_known_words() -> None:
    from ard_core.datasets import load_manifest

    train = concept_phrases(TRAIN_PARAPHRASES)
    held = concept_phrases(HELDOUT_PARAPHRASES, with_reference=False)
    assert set(train) == set(held) == set(KEYS)
    assert min(len(v) for v in train.values()) >= 4 and min(len(v) for v in held.values()) >= 3
    known = set().union(*(_words(p) for v in train.values() for p in v))
    captions = {r.caption for r in load_manifest(MANIFEST) if r.split == "train"} if MANIFEST.is_file() else set()
    known |= set().union(*(_words(c) for c in captions)) if captions else set()
    all_train = {p for v in train.values() for p in v} | captions
    for key, phrases in held.items():
        for p in phrases:
            assert p not in all_train, (key, p)  # never a training text
            assert _words(p) <= known, (key, p, _words(p) - known)


def _rec(labels: dict[str, str], caption: str) -> ClipRecord:
    return ClipRecord("c", Path("c.wav"), "mini", "train", 1.0, labels, caption)


def test_batch_relation_has_several_positives_and_only_false_texts_as_negatives() -> None:
    composite = _rec({"gender": "female", "language": "French", "emotion": "neutral", "animal": "cat"},
                     "a woman speaking French in a neutral voice, interrupted by a cat meowing")
    cat = _rec({"animal": "cat"}, "a cat meowing")
    fast = _rec({"gender": "female", "language": "French", "emotion": "neutral"},
                "a woman speaking French quickly in a neutral voice")
    facts = [clip_facts(r) for r in (composite, cat, fast)]
    assert "pace:quick" in facts[2] and "pace:quick" not in facts[0]
    phrases = [concept_key("animal", "cat"), concept_key("gender", "female"), concept_key("animal", "dog")]
    rel = batch_relation(facts, phrases)
    # columns: 3 captions, then the phrases of cat, female, dog
    assert rel.positive[0].tolist() == [True, False, False, True, True, False]
    # "a cat meowing" is true of the composite: neither positive nor negative; the fast caption says 'quickly'
    assert rel.negative[0].tolist() == [False, False, True, False, False, True]
    assert rel.negative[1].tolist() == [True, False, True, False, True, True]
    assert rel.negative[2].tolist() == [True, True, False, True, False, True]
    assert not (rel.positive & rel.negative).any()


def test_multi_positive_nce_against_a_loop() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, generator=g)
    pos = torch.rand(4, 6, generator=g) < 0.3
    pos[0] = False  # a row without positives is skipped
    pos[1, 0] = True
    neg = ~pos & (torch.rand(4, 6, generator=g) < 0.7)
    ref = []
    for i in range(4):
        if not pos[i].any():
            continue
        terms = [-(logits[i, p] - torch.logsumexp(torch.cat([logits[i, p:p + 1], logits[i][neg[i]]]), 0))
                 for p in torch.nonzero(pos[i]).flatten()]
        ref.append(torch.stack(terms).mean())
    torch.testing.assert_close(multi_positive_nce(logits, pos, neg), torch.stack(ref).mean())


def test_caption_phrase_loss_prefers_a_caption_between_all_its_labels() -> None:
    """A two-label caption embedded on one of its labels only loses more than one between both."""
    facts = [frozenset({"gender:male", "language:English"})]
    keys = ["gender:male", "language:English", "animal:dog"]
    rel = batch_relation(facts, keys)
    phrase = torch.eye(3)
    between = torch.nn.functional.normalize(torch.tensor([[1.0, 1.0, 0.0]]), dim=-1)
    one_sided = torch.tensor([[0.0, 1.0, 0.0]])
    assert caption_phrase_loss(between, phrase, rel, 0.2) < caption_phrase_loss(one_sided, phrase, rel, 0.2)
    manual = multi_positive_nce(between @ phrase.T / 0.2, rel.positive[:, 1:], rel.negative[:, 1:])
    torch.testing.assert_close(caption_phrase_loss(between, phrase, rel, 0.2), manual)


def test_supervised_contrastive_against_a_loop_and_its_optimum() -> None:
    g = torch.Generator().manual_seed(1)
    emb = torch.nn.functional.normalize(torch.randn(7, 5, generator=g), dim=-1)
    classes = torch.tensor([0, 0, 1, 1, 1, 2, 3])
    ref = []
    for i in range(7):
        others = [j for j in range(7) if j != i]
        same = [j for j in others if classes[j] == classes[i]]
        if same:
            lse = torch.logsumexp(torch.stack([emb[i] @ emb[j] / 0.1 for j in others]), 0)
            ref.append(torch.stack([-(emb[i] @ emb[j] / 0.1 - lse) for j in same]).mean())
    torch.testing.assert_close(supervised_contrastive(emb, classes, 0.1), torch.stack(ref).mean())
    # classes on orthogonal axes score lower than the random rows
    planted = torch.eye(5)[classes]
    assert supervised_contrastive(planted, classes, 0.1) < supervised_contrastive(emb, classes, 0.1)


def test_phrase_bank_draws_distinct_phrases_of_every_label() -> None:
    bank = PhraseBank.build()
    assert bank.keys == [concept_key(t, lab) for t, lab in KEYS]
    assert all(group[0] == LABEL_PHRASES[t][lab] for group, (t, lab) in zip(bank.phrases, KEYS))
    texts, keys, classes = bank.sample(random.Random(0), 3)
    assert len(texts) == 3 * len(KEYS) and keys[::3] == bank.keys and classes.tolist()[::3] == list(range(len(KEYS)))
    for c in range(len(KEYS)):
        drawn = texts[3 * c:3 * c + 3]
        assert len(set(drawn)) == 3 and set(drawn) <= set(bank.phrases[c])


@pytest.mark.skipif(not (SHIPPED / "config.json").is_file(),
                    reason="shipped tiny CLAP not built (python -m forge tiny-clap)")
def test_shipped_tiny_clap_separates_the_corpus_concepts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15, from the shipped weights: between different labels' reference phrases cosine < 0.5;
    between any two phrases of one label (reference phrase and training paraphrases) cosine > 0.8.

    Held-out paraphrases (never trained on) are new text, and one stray wording should not hide
    behind a mean: at least 98% of them must clear 0.8 against every training phrase of their label
    (the card names the ones that do not), and as many must have their own label's reference
    phrase as the nearest one.
    """
    from ard_core.clap import load_clap

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clap = load_clap("hf", SHIPPED)
    overall = separability(clap)[-1]
    assert overall.track == "all"
    assert overall.between_max < BETWEEN_AIM, overall.between_pair
    assert overall.within_min > WITHIN_AIM
    n_heldout = sum(len(v) for labels in HELDOUT_PARAPHRASES.values() for v in labels.values())
    misses = [m for m in wording_misses(clap) if m.heldout]
    assert not [m for m in wording_misses(clap) if not m.heldout]
    assert len(misses) <= 0.02 * n_heldout, misses
    assert overall.heldout_nearest >= 0.98 and overall.heldout_mean > WITHIN_AIM


def test_wording_misses_name_the_planted_stray_phrase() -> None:
    space = PlantedSpace({k: i for i, k in enumerate(KEYS)})
    assert wording_misses(space) == []
    stray = HELDOUT_PARAPHRASES["animal"]["dog"][0]
    space.of[stray] = KEYS.index(("animal", "cow"))
    (miss,) = wording_misses(space)
    assert (miss.track, miss.label, miss.phrase, miss.heldout, miss.nearest) == (
        "animal", "dog", stray, True, "a cow mooing")
    assert miss.min_cosine < 0.2
