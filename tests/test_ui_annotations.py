"""The annotations store (sessions, answers, export, restart, concurrency) and Table 2 statistics."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import numpy as np
import pytest

from ard_core.agreement import BertScorer, krippendorff_alpha_interval, mean_pairwise_spearman, summarize
from ard_core.catalog import AnnotationStore, annotations_path_for

REFS = [f"tiny-audiollm-l{l}-e8/{k}" for l in (1, 4) for k in range(30)]


def test_annotations_file_sits_beside_the_catalog() -> None:
    assert annotations_path_for("runs/demo/catalog.duckdb") == Path("runs/demo/catalog.annotations.duckdb")


def test_sessions_sample_with_the_seed_and_resume(tmp_path: Path) -> None:
    with AnnotationStore(tmp_path / "a.duckdb") as store:
        a = store.start_or_resume("Alice", 10, 7, REFS)
        assert len(a.features) == 10 and len(set(a.features)) == 10 and set(a.features) <= set(REFS)
        # the same seed draws the same concepts for another annotator, in any candidate order
        b = store.start_or_resume("bob", 10, 7, list(reversed(REFS)))
        assert b.features == a.features and b.session_id != a.session_id
        # another seed draws others
        assert store.start_or_resume("Alice", 10, 8, REFS).features != a.features
        # starting again resumes, even if the candidates changed meanwhile
        again = store.start_or_resume("Alice", 10, 7, REFS[:12])
        assert again == a
        # the draw is numpy's seeded permutation of the sorted candidates
        pool = sorted(REFS)
        assert list(a.features) == [pool[i] for i in np.random.default_rng(7).permutation(len(pool))[:10]]
        with pytest.raises(ValueError, match="name"):
            store.start_or_resume("  ", 10, 7, REFS)
        with pytest.raises(ValueError, match="describe"):
            store.start_or_resume("carol", 5, 0, [])
        # a name that slugs to another annotator's session is refused, not merged into it
        with pytest.raises(ValueError, match="belongs to 'Alice'"):
            store.start_or_resume("alice", 10, 7, REFS)
        assert [x.annotator for x in store.sessions()].count("alice") == 0


def test_blind_protocol_idempotent_submits_and_restart(tmp_path: Path) -> None:
    path = tmp_path / "a.duckdb"
    with AnnotationStore(path) as store:
        s = store.start_or_resume("alice", 3, 0, REFS)
        r0, r1 = s.features[0], s.features[1]
        with pytest.raises(ValueError, match="label before rating"):
            store.save_rating(s.session_id, r0, 3)
        store.save_label(s.session_id, r0, "dog  barking ")
        first = store.answer(s.session_id, r0)
        store.save_label(s.session_id, r0, "dog barking")  # double submit
        with pytest.raises(ValueError, match="cannot be changed"):
            store.save_label(s.session_id, r0, "cat")  # the name was revealed after the first label
        store.save_rating(s.session_id, r0, 4)
        store.save_rating(s.session_id, r0, 4)  # double submit
        answers = store.answers(s.session_id)
        assert len(answers) == 1
        assert (answers[0].label, answers[0].rating) == ("dog barking", 4)
        assert answers[0].labelled_at == first.labelled_at
        assert store.next_index(s) == 1
        for bad in (6, -1, 2.5, None):
            with pytest.raises(ValueError):
                store.save_rating(s.session_id, r0, bad)
        with pytest.raises(ValueError, match="not part of session"):
            store.save_label(s.session_id, "other-sae-l1-e2/1", "x")
        store.save_label(s.session_id, r1, "siren")
    # a restart (new process, new connection) finds everything
    with AnnotationStore(path) as store:
        s2 = store.start_or_resume("alice", 3, 0, REFS)
        assert s2 == s
        got = {a.ref: (a.label, a.rating) for a in store.answers(s.session_id)}
        assert got == {r0: ("dog barking", 4), r1: ("siren", None)}
        assert store.next_index(s2) == 1  # r1 is labelled but not rated yet


def test_whole_answers_name_their_session_and_concept(tmp_path: Path) -> None:
    with AnnotationStore(tmp_path / "a.duckdb") as store:
        with pytest.raises(KeyError, match="no session ann-s1-n2: start it first"):
            store.find_session("Ann", 2, 1)
        s = store.start_or_resume("Ann", 2, 1, REFS)
        assert store.find_session(" Ann ", 2, 1) == s
        with pytest.raises(ValueError, match="belongs to 'Ann', not 'ann'"):
            store.find_session("ann", 2, 1)
        ref = s.features[1]
        with pytest.raises(ValueError, match="whole number"):
            store.save_answer(s.session_id, ref, "a hum", "lots")
        assert store.answers() == []  # a bad rating stores nothing, not even the label
        a = store.save_answer(s.session_id, ref, "a hum", "4")
        assert (a.ref, a.label, a.rating) == (ref, "a hum", 4)
        assert store.save_answer(s.session_id, ref, "a hum", 2).rating == 2  # a changed rating replaces the old
        with pytest.raises(ValueError, match="cannot be changed"):
            store.save_answer(s.session_id, ref, "a buzz", 2)
        assert [(x.label, x.rating) for x in store.answers()] == [("a hum", 2)]


def test_export_csv_has_every_answer(tmp_path: Path) -> None:
    with AnnotationStore(tmp_path / "a.duckdb") as store:
        for name, rating in (("alice", 5), ("bob", 2)):
            s = store.start_or_resume(name, 2, 1, REFS)
            store.save_label(s.session_id, s.features[0], f"label by {name}")
            store.save_rating(s.session_id, s.features[0], rating)
        out = store.export_csv(tmp_path / "out" / "a.csv")
        rows = list(csv.DictReader(out.open()))
        assert [(r["annotator"], r["label"], r["rating"]) for r in rows] == [
            ("alice", "label by alice", "5"), ("bob", "label by bob", "2")]
        assert rows[0]["feature_ref"] == f"{rows[0]['sae_id']}/{rows[0]['feature']}"
        only_bob = list(csv.DictReader(store.export_csv(tmp_path / "b.csv", annotator="bob").open()))
        assert [r["annotator"] for r in only_bob] == ["bob"]


def test_concurrent_submissions_are_all_stored_once(tmp_path: Path) -> None:
    """20 annotators x 10 concepts submitted from 20 threads at once, each twice (double clicks)."""
    store = AnnotationStore(tmp_path / "a.duckdb")
    errors: list[BaseException] = []
    sessions = {f"ann{i}": store.start_or_resume(f"ann{i}", 10, 3, REFS) for i in range(20)}

    def work(name: str) -> None:
        try:
            s = sessions[name]
            for j, ref in enumerate(s.features):
                for _ in range(2):
                    store.save_label(s.session_id, ref, f"{name} label {j}")
                    store.save_rating(s.session_id, ref, j % 6)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    answers = store.answers()
    assert len(answers) == 200
    assert all(a.rating == int(a.label.rsplit(" ", 1)[1]) % 6 for a in answers)
    store.close()


_WRITER = """
import sys
from ard_core.catalog import AnnotationStore
path, name, refs = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
store = AnnotationStore(path)
s = store.start_or_resume(name, len(refs), 5, refs)
for j, ref in enumerate(s.features):
    store.save_answer(s.session_id, ref, f"{name} label {j}", j % 6)
print(len(store.answers(s.session_id)))
"""


def test_two_processes_share_the_file(tmp_path: Path) -> None:
    """Two apps on one catalog (one for annotators, one for a demo) each write answers while the other
    does: neither is refused for the other's lock, and every answer is stored once."""
    import subprocess
    import sys

    path = tmp_path / "a.duckdb"
    first = AnnotationStore(path)  # an app process that started first and is still running
    refs = ",".join(REFS[:15])
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name, refs], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
             for name in ("annotator", "demo")]
    s = first.start_or_resume("local", 5, 1, REFS)  # and it keeps writing meanwhile
    for j, ref in enumerate(s.features):
        first.save_answer(s.session_id, ref, f"local {j}", 3)
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert [out.split()[-1] for out, _ in outs] == ["15", "15"]
    assert sorted({a.annotator for a in first.answers()}) == ["annotator", "demo", "local"]
    assert len(first.answers()) == 35


def test_krippendorff_alpha_matches_the_published_example() -> None:
    """Krippendorff (2011), 'Computing Krippendorff's alpha-reliability': interval alpha = 0.849."""
    n = np.nan
    data = np.array([
        [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
        [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n],
    ])
    assert krippendorff_alpha_interval(data) == pytest.approx(0.849, abs=5e-4)
    assert krippendorff_alpha_interval(np.array([[1, 2, 3], [1, 2, 3]])) == pytest.approx(1.0)
    assert np.isnan(krippendorff_alpha_interval(np.array([[1, n], [n, 2]])))  # nothing pairable


def test_krippendorff_alpha_on_a_hand_worked_example_with_a_missing_value() -> None:
    """Unit 3 has one rating and is dropped; pairable values 1, 1 | 2, 3 (n = 4).
    D_o = (0 + 2 (2-3)^2 / 1) / 4 = 1/2; D_e = 22 / (4 * 3) = 11/6; alpha = 1 - 3/11 = 8/11."""
    n = np.nan
    assert krippendorff_alpha_interval(np.array([[1, 2, n], [1, 3, 3]])) == pytest.approx(8 / 11)
    # every pairable rating equal: no expected disagreement, alpha undefined (the package would divide by 0)
    assert np.isnan(krippendorff_alpha_interval(np.array([[5, 3], [5, n]])))
    assert np.isnan(krippendorff_alpha_interval(np.array([[4, 4], [4, 4]])))


def test_mean_pairwise_spearman() -> None:
    r = {"a": {"x": 1, "y": 2, "z": 3, "w": 4}, "b": {"x": 1, "y": 2, "z": 3, "w": 4},
         "c": {"x": 4, "y": 3, "z": 2, "w": 1}}
    rho, pairs = mean_pairwise_spearman(r)
    assert pairs == 3 and rho == pytest.approx((1 - 1 - 1) / 3)


class _BagOfWords:
    """A text embedder with a known cosine: normalised word counts."""

    name = "bow"
    vocab = ["dog", "barking", "siren", "hum", "low", "beep"]

    def embed_text(self, texts, batch_size=64, progress=True):  # noqa: ANN001, ANN201
        m = np.array([[t.split().count(w) for w in self.vocab] for t in texts], float) + 1e-9
        return m / np.linalg.norm(m, axis=1, keepdims=True)


def test_summary_statistics_against_hand_computed_values(tmp_path: Path) -> None:
    with AnnotationStore(tmp_path / "a.duckdb") as store:
        names = {}
        ratings = {"alice": [5, 3, 4], "bob": [4, 1, 4]}
        labels = {"alice": ["dog barking", "siren", "low hum"], "bob": ["dog", "beep", "hum"]}
        for ann in ratings:
            s = store.start_or_resume(ann, 3, 0, REFS)
            for j, ref in enumerate(s.features):
                names[ref] = ["dog barking", "siren", "low hum"][j]
                store.save_label(s.session_id, ref, labels[ann][j])
                store.save_rating(s.session_id, ref, ratings[ann][j])
        summ = summarize(store.answers(), names, clap=_BagOfWords(), bert=None, bert_note="no model here")
    allr = np.array(ratings["alice"] + ratings["bob"], float)
    assert summ.rating.mean == pytest.approx(allr.mean()) and summ.rating.std == pytest.approx(allr.std(ddof=1))
    assert [(a.annotator, a.n_rated) for a in summ.per_annotator] == [("alice", 3), ("bob", 3)]
    assert summ.per_annotator[1].mean == pytest.approx(3.0)
    # bag-of-words cosines: alice 1, 1, 1; bob: dog vs 'dog barking' = 1/sqrt2, beep vs siren = 0, hum vs 'low hum' = 1/sqrt2
    cos = np.array([1, 1, 1, 2 ** -0.5, 0, 2 ** -0.5])
    assert summ.clap_cosine.mean == pytest.approx(cos.mean(), abs=1e-6)
    assert summ.clap_cosine.std == pytest.approx(cos.std(ddof=1), abs=1e-6)
    assert summ.bertscore.mean is None and "no model here" in summ.bertscore.text()
    ref_alpha = krippendorff_alpha_interval(np.array([ratings["alice"], ratings["bob"]], float))
    assert summ.alpha.mean == pytest.approx(ref_alpha) and summ.alpha.n == 3
    from scipy.stats import spearmanr

    assert summ.spearman.mean == pytest.approx(spearmanr(ratings["alice"], ratings["bob"]).statistic)


def test_summary_marks_missing_pieces(tmp_path: Path) -> None:
    with AnnotationStore(tmp_path / "a.duckdb") as store:
        s = store.start_or_resume("solo", 2, 0, REFS)
        store.save_label(s.session_id, s.features[0], "dog")
        store.save_rating(s.session_id, s.features[0], 3)
        summ = summarize(store.answers(), {s.features[0]: "dog"}, clap=None, bert=None, clap_note="no CLAP")
    assert summ.clap_cosine.text() == "unavailable: no CLAP"
    assert "unavailable" in summ.bertscore.text()
    assert summ.alpha.mean is None and "two or more annotators" in summ.alpha.text()


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny RoBERTa with a locally trained tokenizer (BERTScore's usual family)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-roberta")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(["a dog barking loudly", "a siren wailing", "a low hum"],
                            trainers.BpeTrainer(vocab_size=200, special_tokens=specials,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    tokenizer = RobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                     unk_token="<unk>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")
    torch.manual_seed(0)
    RobertaModel(RobertaConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=40,
                               pad_token_id=tokenizer.pad_token_id)).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_bertscore_is_greedy_cosine_matching(tiny_encoder: Path) -> None:
    import torch

    scorer = BertScorer.load(tiny_encoder)
    assert scorer.f1(["a dog barking"], ["a dog barking"])[0] == pytest.approx(1.0, abs=1e-5)
    # reference: embed by hand, drop <s> and </s>, greedy-match both ways
    def emb(text: str) -> np.ndarray:
        enc = scorer.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            h = scorer.model(**enc).last_hidden_state[0, 1:-1]
        return torch.nn.functional.normalize(h, dim=-1).numpy()

    c, r = emb("a siren"), emb("a low hum")
    sim = c @ r.T
    p, rc = sim.max(1).mean(), sim.max(0).mean()
    got = scorer.f1(["a siren"], ["a low hum"])[0]
    assert got == pytest.approx(2 * p * rc / (p + rc), abs=1e-5)
    assert got < 0.999
