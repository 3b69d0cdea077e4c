"""The committed mini corpus (assets/corpus), its verification, and its builder (forge.corpus).

The tests on the committed files run everywhere; rebuilding speech needs
espeak-ng and is skipped, with the reason, where it is missing. Determinism of
the builder is checked on the non-speech groups always (they need no
synthesizer), and on speech too when espeak-ng is present.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from ard_core.audio import audio_info, load_audio, log_mel, save_audio
from ard_core.config import ConfigError, RunConfig
from ard_core.datasets import LABEL_VOCAB, SPLITS, TRACKS, load_manifest, manifest_hash
from ard_core.datasets.corpus import CorpusMismatch, verify_corpus
from forge.corpus import speech
from forge.corpus.build import build_corpus, corpus_config_from_info
from forge.corpus.config import CorpusConfig, MiniCorpusConfig
from forge.corpus.plan import EVENT_CLASSES, SFX_CLASSES, clip_rng, plan_corpus
from forge.corpus.quality import mean_pairwise_correlation, within_class_correlation

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "assets" / "corpus"
SOURCES = CORPUS / "sources"
needs_espeak = pytest.mark.skipif(not speech.espeak_available(),
                                  reason="espeak-ng is not installed (apt-get install espeak-ng)")


@pytest.fixture(scope="module")
def records():
    return load_manifest(CORPUS / "manifest.csv")


@pytest.fixture(scope="module")
def cfg() -> MiniCorpusConfig:
    return corpus_config_from_info(CORPUS)


# ---------------------------------------------------------------- the committed corpus


def test_committed_corpus_matches_its_build_record(cfg: MiniCorpusConfig) -> None:
    assert len(verify_corpus(CORPUS)) == json.loads((CORPUS / "build.json").read_text())["n_clips"]


def test_forge_config_is_what_built_the_committed_corpus(cfg: MiniCorpusConfig) -> None:
    """configs/forge.toml rebuilds the committed corpus: its [corpus.build] equals build.json's settings."""
    corpus = RunConfig.load(REPO / "configs" / "forge.toml").section("corpus", CorpusConfig)
    assert corpus.build == cfg and corpus.out_dir == Path("assets/corpus")


@pytest.mark.parametrize("table, message", [
    ("[corpus.build]\nmax_duration_s = 0.2", "max_duration_s"),
    ("[corpus.build]\ngroups = ['speech', 'music']", "groups"),
    ("[corpus]\nrebuild = true", "unknown key"),
])
def test_corpus_config_errors_name_the_key(tmp_path: Path, table: str, message: str) -> None:
    (tmp_path / "forge.toml").write_text(table + "\n")
    with pytest.raises(ConfigError, match=message):
        RunConfig.load(tmp_path / "forge.toml").section("corpus", CorpusConfig)


def test_verification_catches_an_edited_manifest_a_replaced_file_and_no_build(tmp_path: Path) -> None:
    """The pipeline's check, against the build record alone: each kind of damage is refused."""
    small = MiniCorpusConfig(animal_per_class=1, event_per_class=1, groups=("animal", "sound_event"))
    recs = build_corpus(small, tmp_path / "c", SOURCES)
    assert [r.clip_id for r in verify_corpus(tmp_path / "c")] == [r.clip_id for r in recs]
    manifest = tmp_path / "c" / "manifest.csv"
    text = manifest.read_text()
    manifest.write_text(text.replace(",train,", ",test,", 1))
    with pytest.raises(CorpusMismatch, match="edited after the build.*python -m forge corpus"):
        verify_corpus(tmp_path / "c")
    manifest.write_text(text)
    save_audio(recs[0].path, np.zeros(1600, dtype=np.float32))  # 0.1 s, not the recorded duration
    with pytest.raises(CorpusMismatch, match=recs[0].clip_id):
        verify_corpus(tmp_path / "c")
    with pytest.raises(CorpusMismatch, match="no built corpus.*python -m forge corpus"):
        verify_corpus(tmp_path / "elsewhere")


def test_committed_corpus_fits_the_size_budget() -> None:
    size = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    assert size <= 60 * 1024 * 1024, f"assets/corpus is {size / 2**20:.1f} MiB; the budget is 60"


def _is_composite(rec) -> bool:
    return rec.clip_id.startswith("mix-")


def test_class_counts_per_track_and_split(records, cfg: MiniCorpusConfig) -> None:
    """The single-sound clips form the factorial design; each class gets its exact split shares."""
    base = [r for r in records if not _is_composite(r)]
    assert len(base) >= 1500
    counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for r in base:
        for track, label in r.labels.items():
            counts[track][label][r.split] += 1
    assert set(counts) == set(TRACKS)
    for track in ("gender", "language", "emotion"):
        assert sorted(counts[track]) == sorted(LABEL_VOCAB[track])
    assert len(counts["animal"]) >= 8 and len(counts["sound_event"]) >= 10
    assert sorted(counts["sound_event"]) == sorted(EVENT_CLASSES)
    per_class = {"gender": 8 * 6 * cfg.speech_per_cell, "language": 2 * 6 * cfg.speech_per_cell,
                 "emotion": 8 * 2 * cfg.speech_per_cell, "animal": cfg.animal_per_class,
                 "sound_event": cfg.event_per_class}
    for track, labels in counts.items():
        for label, by_split in labels.items():
            n = sum(by_split.values())
            assert n == per_class[track], (track, label, by_split)
            for split, frac in (("probe", cfg.probe_frac), ("test", cfg.test_frac)):
                assert abs(by_split[split] - frac * n) <= 1, (track, label, by_split)
            assert by_split["train"] >= 0.6 * n
    # every speech clip carries all three speech labels, no other single-sound clip carries any
    for r in base:
        speechy = {"gender", "language", "emotion"} & set(r.labels)
        assert speechy in (set(), {"gender", "language", "emotion"}), r.clip_id
        assert len(r.labels) == (3 if speechy else 1), r.clip_id


def test_composites_are_a_fifth_of_the_corpus_and_label_every_track_present(records) -> None:
    mixes = [r for r in records if _is_composite(r)]
    assert len(mixes) >= 0.2 * len(records)
    kinds = Counter(r.clip_id.split("-")[1] for r in mixes)
    assert set(kinds) == {"speech", "noise", "seq"} and min(kinds.values()) >= 100
    for r in mixes:
        kind = r.clip_id.split("-")[1]
        events = set(r.labels) & {"animal", "sound_event"}
        if kind == "speech":
            assert set(r.labels) - events == {"gender", "language", "emotion"} and len(events) == 1, r.clip_id
        elif kind == "noise":
            assert len(r.labels) == 1 and len(events) == 1, r.clip_id
        else:
            assert events == set(r.labels) == {"animal", "sound_event"}, r.clip_id
    for split in SPLITS:  # every kind reaches every split
        assert {r.clip_id.split("-")[1] for r in mixes if r.split == split} == {"speech", "noise", "seq"}


def test_spans_lie_inside_their_clips_and_carry_their_labels(records) -> None:
    for r in records:
        assert set(r.spans) == set(r.labels), r.clip_id
        for track, segs in r.spans.items():
            assert segs, (r.clip_id, track)
            for a, b in segs:
                assert 0.0 <= a < b <= r.duration_s + 0.01, (r.clip_id, track, a, b)
    # in a composite the placed event fills only a part of its clip: coverage can be < 1
    shares = [sum(b - a for a, b in r.spans[t]) / r.duration_s for r in records if _is_composite(r)
              for t in r.spans if t in ("animal", "sound_event") and r.clip_id.split("-")[1] != "seq"]
    assert np.median(shares) < 0.4 and max(shares) < 0.8


def test_a_composite_span_is_where_its_event_sounds(records) -> None:
    """In an event-in-noise clip the audio is louder inside the event's span than outside it: the
    spans describe the audio, not only the plan."""
    louder = []
    for r in [r for r in records if r.clip_id.startswith("mix-noise-")][::7]:
        x = load_audio(r.path)
        (track,) = r.labels
        inside = np.zeros(len(x), dtype=bool)
        for a, b in r.spans[track]:
            inside[int(a * 16000): int(b * 16000)] = True
        if inside.all() or not inside.any():
            continue
        louder.append(10 * np.log10(np.mean(x[inside] ** 2) / np.mean(x[~inside] ** 2)))
    assert len(louder) >= 20 and np.median(louder) > 6.0, np.round(louder, 1)


def test_splits_are_disjoint(records) -> None:
    assert {r.split for r in records} == set(SPLITS)
    assert len({r.clip_id for r in records}) == len(records)
    assert len({r.path for r in records}) == len(records)
    # speech (alone or inside a composite): the test split reads held-out sentences in held-out voices
    sentences, voices = defaultdict(set), defaultdict(set)
    for r in records:
        if "language" in r.labels:
            sentences[r.split == "test"].add(r.meta["text"])
            voices[r.split == "test"].add(r.meta["voice"].split("+")[1])
    assert sentences[True] and sentences[False] and not sentences[True] & sentences[False]
    assert voices[True] and voices[False] and not voices[True] & voices[False]
    assert min(len(s) for s in sentences.values()) >= 100  # hundreds of sentences, not a fixed list
    # game sound effects with >= 3 variant files: the test split uses the held-out one only
    used = defaultdict(set)
    for r in records:
        sfx = [s for s in r.meta.get("source", "").split(";") if s.startswith("sfx/")]
        label = r.labels.get("sound_event")
        if label in SFX_CLASSES and len(SFX_CLASSES[label][1]) >= 3 and sfx:
            used[r.split == "test"] |= {(label, s) for s in sfx}
    assert used[True] and not used[True] & used[False]


def test_test_sentences_hold_words_training_never_hears(records) -> None:
    """Held out by vocabulary, not only by combination: every test sentence is built from a verb
    phrase and a time phrase that no train or probe sentence uses."""
    from forge.corpus.sentences import GRAMMARS, sentence, sentence_pool

    for language, g in GRAMMARS.items():
        pools = {split: {sentence(language, *ix): ix for ix in sentence_pool(language, split)}
                 for split in ("train", "test")}
        seen_verbs = {v for _, _, v in pools["train"].values()}
        seen_times = {t for _, t, _ in pools["train"].values()}
        for s_, t, v in pools["test"].values():
            assert v not in seen_verbs and t not in seen_times, (language, g.verbs[v], g.times[t])
        for r in records:
            if r.labels.get("language") == language:
                pool = pools["test" if r.split == "test" else "train"]
                assert r.meta["text"] in pool, (r.clip_id, r.meta["text"])


def test_every_file_is_16k_mono_of_the_stated_duration(records, cfg: MiniCorpusConfig) -> None:
    for r in records:
        assert r.path.is_file() and r.path.is_relative_to(CORPUS), r.clip_id
        sr, channels, frames = audio_info(r.path)
        assert (sr, channels) == (16000, 1), r.clip_id
        audio = load_audio(r.path)
        assert len(audio) == frames
        assert abs(len(audio) / 16000 - r.duration_s) <= 0.001, r.clip_id
        assert cfg.min_duration_s - 1e-3 <= r.duration_s <= cfg.max_duration_s + 1e-3, r.clip_id
        assert np.isfinite(audio).all() and np.max(np.abs(audio)) > 0.01, r.clip_id


def test_captions_are_written_from_labels(records) -> None:
    for r in records:
        if "language" in r.labels:
            assert r.labels["language"] in r.caption
            assert ("a woman" if r.labels["gender"] == "female" else "a man") in r.caption
        elif "animal" in r.labels:
            assert r.labels["animal"] in r.caption or r.labels["animal"] + "s" in r.caption
        assert r.caption and r.caption == r.caption.strip()


def test_correlation_metric_flags_near_duplicates(records) -> None:
    """The within-class check must be able to fail: a copy with a gain change and
    faint noise scores far above 0.95, while distinct clips of one class do not."""
    x = load_audio(records[0].path)
    rng = np.random.default_rng(0)
    copies = [x * g + 1e-4 * rng.standard_normal(len(x)).astype(np.float32) for g in (1.0, 0.5, 0.8)]
    assert mean_pairwise_correlation([log_mel(c, n_fft=400).db for c in copies]) > 0.95


@pytest.mark.parametrize("track", TRACKS)
def test_clips_within_a_class_are_not_near_duplicates(records, track: str) -> None:
    corr = within_class_correlation(records, track, max_per_class=12, seed=0)
    assert corr and all(v < 0.95 for v in corr.values()), corr


def test_stage_verifies_and_writes_run_manifest(tmp_path: Path, cfg: MiniCorpusConfig) -> None:
    from precompute.dataset import main

    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(f'[run]\nname = "t"\nout_dir = "{tmp_path / "run"}"\n'
                        f'[dataset]\nkind = "mini"\ncorpus_dir = "{CORPUS}"\n')
    assert main(argparse.Namespace(config=cfg_path, decode=False)) == 0
    out = load_manifest(tmp_path / "run" / "dataset" / "manifest.csv")
    assert [(r.clip_id, r.path) for r in out] == [(r.clip_id, r.path) for r in load_manifest(CORPUS / "manifest.csv")]
    summary = json.loads((tmp_path / "run" / "dataset" / "summary.json").read_text())
    assert summary["n_clips"] == len(out) and summary["max_duration_s"] <= cfg.max_duration_s
    # a folder that holds no built corpus is refused, not silently used
    cfg_path.write_text(cfg_path.read_text().replace(f'corpus_dir = "{CORPUS}"', f'corpus_dir = "{tmp_path}"'))
    assert main(argparse.Namespace(config=cfg_path, decode=False)) == 1


# ---------------------------------------------------------------- the builder


def _rerender(cfg: MiniCorpusConfig, clip_id: str) -> np.ndarray:
    (plan,) = [p for p in plan_corpus(cfg, SOURCES) if p.clip_id == clip_id]
    return plan.render(clip_rng(cfg.seed, clip_id))[0]


def _snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)))


def test_committed_manifest_is_the_builders_plan(records, cfg: MiniCorpusConfig) -> None:
    plans = plan_corpus(cfg, SOURCES)
    assert [(p.clip_id, p.split, p.labels) for p in plans] == [(r.clip_id, r.split, r.labels) for r in records]


@pytest.mark.parametrize("clip_id", ["animal-sheep-003", "event-siren-010", "event-laser-020", "mix-noise-dog-003",
                                     "mix-seq-owl-011"])
def test_committed_clips_are_what_the_builder_makes(records, cfg: MiniCorpusConfig, clip_id: str) -> None:
    """The committed files come from this code: re-rendering matches up to Vorbis coding."""
    committed = load_audio(next(r.path for r in records if r.clip_id == clip_id))
    fresh = _rerender(cfg, clip_id)
    assert len(fresh) == len(committed)
    assert _snr_db(fresh, committed) > 10.0
    other = load_audio(next(r.path for r in records if r.clip_id == clip_id[:-1] + "4"))
    n = min(len(other), len(fresh))
    assert _snr_db(fresh[:n], other[:n]) < 3.0  # a different clip of the class is far from it


@needs_espeak
def test_committed_speech_is_what_the_builder_makes(records, cfg: MiniCorpusConfig) -> None:
    rec = next(r for r in records if r.clip_id.startswith("speech-de-female-sad"))
    assert _snr_db(_rerender(cfg, rec.clip_id), load_audio(rec.path)) > 10.0


def _build_twice(tmp_path: Path, cfg: MiniCorpusConfig) -> tuple[str, str, list]:
    a = build_corpus(cfg, tmp_path / "a", SOURCES)
    b = build_corpus(cfg, tmp_path / "b", SOURCES)
    for ra, rb in zip(a, b, strict=True):
        # compare samples, not bytes: libsndfile gives each Ogg stream a random serial number
        np.testing.assert_array_equal(load_audio(ra.path), load_audio(rb.path), err_msg=ra.clip_id)
    return manifest_hash(a, tmp_path / "a"), manifest_hash(b, tmp_path / "b"), a


def test_builder_is_deterministic_without_speech(tmp_path: Path) -> None:
    cfg = MiniCorpusConfig(animal_per_class=2, event_per_class=2, speech_event_per_class=0, noise_event_per_class=1,
                           sequence_per_class=1, groups=("animal", "sound_event", "composite"))
    ha, hb, recs = _build_twice(tmp_path, cfg)
    assert ha == hb
    assert len(recs) == 2 * 10 + 2 * len(EVENT_CLASSES) + (10 + len(EVENT_CLASSES)) + 10
    assert json.loads((tmp_path / "a" / "build.json").read_text())["manifest_sha256"] == ha
    other = build_corpus(MiniCorpusConfig(seed=1, animal_per_class=2, event_per_class=2, speech_event_per_class=0,
                                          noise_event_per_class=1, sequence_per_class=1,
                                          groups=("animal", "sound_event", "composite")), tmp_path / "c", SOURCES)
    assert manifest_hash(other, tmp_path / "c") != ha


@needs_espeak
def test_builder_is_deterministic_with_speech(tmp_path: Path) -> None:
    cfg = MiniCorpusConfig(speech_per_cell=1, animal_per_class=1, event_per_class=1, speech_event_per_class=1,
                           noise_event_per_class=0, sequence_per_class=0)
    ha, hb, recs = _build_twice(tmp_path, cfg)
    assert ha == hb
    assert sum("language" in r.labels for r in recs) == 8 * 2 * 6 + 10 + len(EVENT_CLASSES)


def test_speech_build_without_espeak_says_how_to_install(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(speech, "espeak_available", lambda: False)
    with pytest.raises(speech.SpeechSynthError, match="apt-get install espeak-ng"):
        build_corpus(MiniCorpusConfig(speech_per_cell=1), tmp_path, SOURCES)
    assert not (tmp_path / "clips").exists()
