"""The per-clip protocol of Table 1 against hand-worked examples, a planted good-vs-random namer,
the bootstrap spread, and the detection score."""

from __future__ import annotations

import numpy as np
import pytest

from ard_core.clip_eval import evaluate_clips, ranked_ap, score_clip, top_predictions
from ard_core.detection import auroc, balanced_sample, clap_detection, feature_rng, llm_detection
from ard_core.datasets.labels import label_phrase
from ard_core.evaluation import clip_labels, reference_text, references
from ard_core.spread import bootstrap


def test_top_predictions_keeps_positive_activations_by_rank():
    acts = np.array([0.0, 0.5, 2.0, -1.0, 0.5, 1.0])
    assert top_predictions(acts, 3).tolist() == [2, 5, 1]  # ties (0.5, 0.5) by index
    assert top_predictions(acts, 10).tolist() == [2, 5, 1, 4]  # never a zero or negative activation
    assert top_predictions(np.zeros(4), 5).tolist() == []


def test_per_clip_scores_hand_worked():
    # 3 predictions (by activation) x 2 references; gamma 0.7.
    sim = np.array([
        [0.20, 0.30],   # rank 1: matches nothing
        [0.90, 0.80],   # rank 2: close to both
        [0.85, 0.10],   # rank 3: only to r0
    ])
    # Hungarian over pairs >= 0.7: rank2-r1 (0.80) + rank3-r0 (0.85) = 1.65 beats rank2-r0 alone (0.90)
    s = score_clip(sim, 0.7, m=5)
    assert s.matched == [None, 1, 0]
    assert s.precision == pytest.approx(2 / 3)
    assert s.recall == pytest.approx(1.0)
    assert s.f1 == pytest.approx(0.8)
    # relevant at ranks 2 and 3: (1/2 + 2/3) / min(2 references, m = 5)
    assert s.ap == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_per_clip_ap_is_one_for_a_perfect_ranking_and_normalised_by_m():
    assert ranked_ap([True, True, False], n_references=2, m=5) == 1.0
    assert ranked_ap([False, True, True], n_references=2, m=5) == pytest.approx((1 / 2 + 2 / 3) / 2)
    # more references than predictions allowed: normalise by m, so naming m of them perfectly gives 1
    assert ranked_ap([True, True], n_references=4, m=2) == 1.0
    # one correct name out of one prediction on a clip with 3 labels, m = 5: 1 / 3
    assert ranked_ap([True], n_references=3, m=5) == pytest.approx(1 / 3)
    assert ranked_ap([], n_references=2, m=5) == 0.0


def test_no_predictions_and_no_references():
    s = score_clip(np.zeros((0, 2)), 0.7, 5)
    assert (s.precision, s.recall, s.f1, s.ap) == (0.0, 0.0, 0.0, 0.0)
    s = score_clip(np.zeros((3, 0)), 0.7, 5)
    assert (s.precision, s.recall, s.ap, s.matched) == (0.0, 0.0, 0.0, [None, None, None])


def _one_hot_embedding(texts):
    vocab = sorted(set(texts))
    return {t: np.eye(len(vocab))[vocab.index(t)] for t in vocab}


def test_evaluate_clips_records_predictions_and_matches():
    names = ["a dog barking", "a man speaking", "rain falling"]
    emb = _one_hot_embedding(names + ["a cat meowing"])
    mu = np.array([[0.0, 2.0, 1.0],    # clip a: man (2.0) then rain (1.0)
                   [0.0, 0.0, 0.0]])   # clip b: nothing fires
    res = evaluate_clips(["a", "b"], mu, [10, 11, 12], names, [["a man speaking", "a cat meowing"], ["a dog barking"]],
                         emb, 0.7, m=5)
    a, b = res
    assert [(p.rank, p.feature, p.name, p.matched, p.reference) for p in a.predictions] == [
        (1, 11, "a man speaking", True, "a man speaking"), (2, 12, "rain falling", False, "a man speaking")]
    assert a.predictions[0].similarity == pytest.approx(1.0) and a.predictions[1].similarity == pytest.approx(0.0)
    assert (a.score.precision, a.score.recall, a.score.ap) == (0.5, 0.5, 0.5)  # AP: 1/1 over min(2, 5)
    assert b.predictions == [] and (b.score.precision, b.score.recall, b.score.f1) == (0.0, 0.0, 0.0)


def test_a_method_that_names_correctly_beats_one_that_names_randomly():
    """Planted truth: each of 12 features fires on the clips of one label; the 'good' method names each
    feature after its label, the 'random' one gives the same names shuffled across features."""
    rng = np.random.default_rng(0)
    labels = [f"label {i}" for i in range(12)]
    emb = _one_hot_embedding(labels)
    n_clips = 120
    clip_label = rng.integers(0, 12, n_clips)
    mu = rng.random((n_clips, 12)) * 0.3 * (rng.random((n_clips, 12)) < 0.3)  # weak, sparse background
    mu[np.arange(n_clips), clip_label] += 1.0  # the clip's own feature fires strongest
    refs = [[labels[l]] for l in clip_label]
    ids = [f"c{i}" for i in range(n_clips)]
    good = evaluate_clips(ids, mu, list(range(12)), labels, refs, emb, 0.7, m=3)
    shuffled = list(rng.permutation(labels))
    bad = evaluate_clips(ids, mu, list(range(12)), shuffled, refs, emb, 0.7, m=3)

    def mean(results, k):
        return float(np.mean([getattr(r.score, k) for r in results]))

    assert mean(good, "recall") == 1.0 and mean(good, "ap") == 1.0
    assert mean(bad, "recall") < 0.5 and mean(bad, "ap") < 0.4
    assert mean(good, "f1") - mean(bad, "f1") > 0.3


def test_bootstrap_mean_spread_matches_theory_and_is_seeded():
    x = np.random.default_rng(1).normal(size=400)
    s = bootstrap(x, n_resamples=2000, seed=3)
    assert s.value == pytest.approx(x.mean())
    assert s.std == pytest.approx(x.std(ddof=1) / np.sqrt(len(x)), rel=0.1)  # the standard error
    assert s.low < s.value < s.high and s.n == 400
    assert bootstrap(x, n_resamples=2000, seed=3) == s
    assert bootstrap(x, n_resamples=2000, seed=4) != s
    assert bootstrap(np.ones(10)).std == 0.0


def test_label_phrases_and_references():
    assert label_phrase("gender", "male") == "a man speaking"
    assert label_phrase("language", "German") == "someone speaking German"
    assert label_phrase("emotion", "angry") == "an angry voice"
    assert label_phrase("animal", "dog") == "a dog barking"
    assert label_phrase("sound_event", "siren") == "a siren wailing"
    assert label_phrase("sound_event", "Accelerating_and_revving") == "Accelerating and revving"  # a real class name
    assert reference_text("animal", "dog", "labels") == "dog"
    assert clip_labels({"sound_event": "Bark;Dog", "gender": ""}) == [("sound_event", "Bark"), ("sound_event", "Dog")]


def test_auroc_hand_worked():
    assert auroc([3, 4], [1, 2]) == 1.0
    assert auroc([1, 2], [3, 4]) == 0.0
    assert auroc([1, 3], [2, 2]) == 0.5
    assert auroc([2], [2]) == 0.5  # ties count half
    assert auroc([1, 3, 5], [2, 4]) == pytest.approx(3 / 6)


def test_balanced_sample_and_clap_detection():
    mu = np.array([0.0, 1.0, 0.0, 2.0, 0.0, 3.0, 0.0])
    s = balanced_sample(mu, 10, feature_rng(0, "sae", 1))
    assert sorted(s.pos.tolist()) == [1, 3, 5] and len(s.neg) == 3 and set(s.neg.tolist()) <= {0, 2, 4, 6}
    assert balanced_sample(mu, 10, feature_rng(0, "sae", 1)).neg.tolist() == s.neg.tolist()  # seeded
    # audio embeddings: activating clips point along the name, the others away from it
    name = np.array([1.0, 0.0])
    audio = np.array([[0, 1], [1, 0], [0, 1], [0.9, 0.1], [0, 1], [0.8, 0.2], [0.1, 0.9]], float)
    d = clap_detection(name, audio, s)
    assert (d.score, d.n_pos, d.n_neg) == (1.0, 3, 3)
    assert clap_detection(name, audio, balanced_sample(np.zeros(7), 5, feature_rng(0, "s", 0))).score is None


class _KeywordJudge:
    """Says yes when the caption contains the name's last word (a stand-in for the LLM)."""

    def __init__(self):
        self.calls = 0

    def chat(self, messages, max_tokens=3):
        self.calls += 1
        text = messages[-1]["content"]
        name = text.split('"')[1]
        caption = text.split('"')[3]
        return "yes" if name.split()[-1] in caption else "no"


def test_llm_detection_is_balanced_accuracy():
    captions = ["a dog barking", "a dog growling", "rain", "a siren", "a cat", "dogs barking"]
    mu = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.5])
    s = balanced_sample(mu, 3, feature_rng(0, "s", 0))
    judge = _KeywordJudge()
    d = llm_detection(judge, "barking", captions, s)
    # positives: 'a dog barking' yes, 'a dog growling' no, 'dogs barking' yes; negatives all no
    assert d.score == pytest.approx((2 / 3 + 1.0) / 2) and judge.calls == 6


def test_references_are_label_phrases_not_captions():
    from ard_core.catalog import ClipRow

    clips = [ClipRow("a", "mini", "test", "a.wav", 1.0, {"gender": "male", "language": "German"}, "whatever caption"),
             ClipRow("b", "mini", "train", "b.wav", 1.0, {"animal": "dog"}, "dogs barking loudly")]
    assert [r.text for r in references(clips)] == ["a dog barking", "a man speaking", "someone speaking German"]
    assert [r.text for r in references(clips, "labels", ["test"])] == ["male", "German"]
