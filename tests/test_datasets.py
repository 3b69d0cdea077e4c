"""Manifest format and the real-dataset loaders, on the fixtures in tests/data/datasets
(written by scripts/make_dataset_fixtures.py in each publisher's layout, see tests/dataset_fixtures.py)."""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from ard_core.config import ConfigError, RunConfig
from ard_core.datasets import TRACKS, ClipRecord, load_manifest, manifest_hash, save_manifest
from ard_core.datasets.loaders import (
    load_audiobench, load_fsd50k, load_folder, load_iemocap, load_sakura, load_wavcaps,
)
from ard_core.datasets.manifest import MANIFEST_COLUMNS, ManifestError
from ard_core.datasets.metadata import DatasetFormatError
from dataset_fixtures import WAVCAPS_JSON

DATA = Path(__file__).parent / "data" / "datasets"


def _by_id(records: list[ClipRecord]) -> dict[str, ClipRecord]:
    return {r.clip_id: r for r in records}


# ---------------------------------------------------------------- manifest


def _records(root: Path) -> list[ClipRecord]:
    (root / "a").mkdir(parents=True, exist_ok=True)
    return [
        ClipRecord("s1", root / "a" / "s1.wav", "mini", "train", 1.5,
                   {"gender": "female", "language": "German", "emotion": "sad"},
                   "a woman speaking German, slowly", {"text": "Hallo, \"du\"!"}),
        ClipRecord("d1", root / "a" / "d1.wav", "mini", "test", 2.0, {"animal": "dog"}, "dogs barking"),
        ClipRecord("f1", root / "f1.flac", "fsd50k", "probe", 0.0, {"sound_event": "bark;dog"}, "bark, dog"),
    ]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_manifest_round_trip(tmp_path: Path, suffix: str) -> None:
    recs = _records(tmp_path)
    path = save_manifest(recs, tmp_path / f"manifest{suffix}")
    back = load_manifest(path)
    assert back == [ClipRecord(r.clip_id, r.path.resolve(), r.dataset, r.split, r.duration_s,
                               r.labels, r.caption, r.meta) for r in recs]
    assert back[2].label_set("sound_event") == ("bark", "dog")
    assert back[0].label_set("animal") == ()


def test_manifest_spans_round_trip_and_are_checked(tmp_path: Path) -> None:
    """The optional ``spans`` column: JSON {track: [[start, end], ...]}; absent for datasets that say nothing."""
    recs = _records(tmp_path)
    assert "spans" not in save_manifest(recs, tmp_path / "plain.csv").read_text().splitlines()[0]
    recs[1] = ClipRecord(**{**recs[1].__dict__, "spans": {"animal": ((0.5, 0.9), (1.2, 1.6))}})
    path = save_manifest(recs, tmp_path / "m.csv")
    back = load_manifest(path)
    assert back[1].spans == {"animal": ((0.5, 0.9), (1.2, 1.6))} and back[0].spans == {} and "spans" not in back[1].meta
    text = path.read_text()
    for bad, message in (('[[0.5, 0.9], [1.2, 1.6]]', "not JSON"),
                         ('{""gender"": [[0.5, 0.9]]}', "no label for"),
                         ('{""animal"": [[0.5, 2.5]]}', "not inside the clip")):
        path.write_text(text.replace('"{""animal"":[[0.5,0.9],[1.2,1.6]]}"', f'"{bad}"'))
        with pytest.raises(ManifestError, match=message):
            load_manifest(path)


def test_manifest_columns_and_relative_paths(tmp_path: Path) -> None:
    recs = _records(tmp_path / "corpus")
    path = save_manifest(recs, tmp_path / "corpus" / "manifest.csv")
    header, first = path.read_text().splitlines()[:2]
    assert header.split(",")[: len(MANIFEST_COLUMNS)] == list(MANIFEST_COLUMNS)
    assert first.startswith("s1,a/s1.wav,mini,train,1.500,female,German,sad,,,")
    # a manifest elsewhere points back with '..' and still resolves to the same files
    other = save_manifest(recs, tmp_path / "run" / "dataset" / "manifest.csv")
    assert "../../corpus/a/s1.wav" in other.read_text()
    assert [r.path for r in load_manifest(other)] == [r.path for r in load_manifest(path)]


def test_manifest_hash_tracks_content(tmp_path: Path) -> None:
    recs = _records(tmp_path)
    h = manifest_hash(recs, tmp_path)
    assert h == manifest_hash(list(recs), tmp_path)
    changed = [*recs[:2], ClipRecord(**{**recs[2].__dict__, "split": "test"})]
    assert manifest_hash(changed, tmp_path) != h


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("split,", "fold,", 1), "lacks column"),
    (lambda t: t.replace(",train,", ",dev,", 1), "split 'dev'"),
    (lambda t: t.replace("d1,", "s1,", 1), "duplicate clip_id"),
    (lambda t: t.replace("1.500", "long", 1), "not a number"),
])
def test_manifest_errors_name_file_and_line(tmp_path: Path, edit, message: str) -> None:
    path = save_manifest(_records(tmp_path), tmp_path / "m.csv")
    path.write_text(edit(path.read_text()))
    with pytest.raises(ManifestError, match=message) as info:
        load_manifest(path)
    assert "m.csv" in str(info.value)


# ---------------------------------------------------------------- loaders


def test_folder_loader(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        recs = _by_id(load_folder(DATA / "folder", dataset="mine"))
    assert sorted(recs) == ["calm", "shout"]  # 'missing' has no audio file
    assert "missing" in caplog.text
    calm, shout = recs["calm"], recs["shout"]
    assert calm.labels == {"gender": "female", "emotion": "neutral"} and calm.split == "train"
    assert calm.caption == "a woman speaking calmly" and calm.meta == {"speaker": "spk1"}
    assert shout.split == "test" and shout.path.name == "shout.flac" and shout.dataset == "mine"
    assert shout.caption == "a man speaking in an angry voice"  # written from the labels
    assert calm.duration_s == pytest.approx(0.25) and shout.duration_s == pytest.approx(0.25)


def test_folder_loader_reads_a_full_manifest(tmp_path: Path) -> None:
    recs = _records(tmp_path)
    save_manifest(recs, tmp_path / "metadata.csv")
    assert [r.clip_id for r in load_folder(tmp_path)] == ["s1", "d1", "f1"]


def test_folder_loader_needs_a_file_column(tmp_path: Path) -> None:
    (tmp_path / "metadata.csv").write_text("name,gender\nx.wav,male\n")
    with pytest.raises(DatasetFormatError, match="file column"):
        load_folder(tmp_path)


WAVCAPS = DATA / "WavCaps"


def test_wavcaps_loader_reads_every_source_with_prefixed_ids() -> None:
    recs = {}
    for source, stem in WAVCAPS_JSON.items():
        recs |= _by_id(load_wavcaps(WAVCAPS / "json_files" / source / f"{stem}.json", WAVCAPS / "Zip_files" / source))
    # one clip per source has no audio; FreeSound and SoundBible both have clip 2149
    assert sorted(recs) == ["audioset_sl-Yb0RFKhbpFJA", "bbc_sound_effects-07070156", "freesound-180913",
                            "freesound-2149", "soundbible-2149"]
    dog = recs["freesound-180913"]
    assert dog.caption == "A dog barks twice while birds chirp." and dog.labels == {}
    assert dog.duration_s == 0.25 and dog.split == "train" and dog.path.suffix == ".flac"
    assert dog.path.parent.name == "FreeSound_flac"  # found deep inside the unpacked zip
    assert dog.meta["description"] == "a dog barks twice while birds chirp." and dog.meta["author"] == "someone"
    assert dog.meta["wavcaps_source"] == "FreeSound" and dog.dataset == "wavcaps"
    assert recs["audioset_sl-Yb0RFKhbpFJA"].path.name == "Yb0RFKhbpFJA.flac"  # AudioSet_SL ids end in .wav
    assert recs["soundbible-2149"].caption == "Thunder rolls in the distance."
    assert recs["bbc_sound_effects-07070156"].meta["category"] == "['Nature']"


def test_wavcaps_source_comes_from_the_path_or_the_argument(tmp_path: Path) -> None:
    from ard_core.datasets.loaders import wavcaps_source

    assert wavcaps_source(Path("x/json_files/SoundBible/sb_final.json")) == "SoundBible"
    assert wavcaps_source(Path("elsewhere/bbc_final.json")) == "BBC_Sound_Effects"
    moved = tmp_path / "mine.json"
    moved.write_text((WAVCAPS / "json_files" / "FreeSound" / "fsd_final.json").read_text())
    got = load_wavcaps(moved, WAVCAPS / "Zip_files" / "FreeSound", source="FreeSound", split="probe")
    assert sorted(r.clip_id for r in got) == ["freesound-180913", "freesound-2149"]
    assert {r.split for r in got} == {"probe"}
    with pytest.raises(ConfigError, match="split 'dev'"):
        load_wavcaps(moved, tmp_path, split="dev")


def test_wavcaps_rejects_other_json(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(json.dumps([{"id": 1}]))
    with pytest.raises(DatasetFormatError, match="'data' list"):
        load_wavcaps(tmp_path / "x.json", tmp_path)


def test_iemocap_loader() -> None:
    root = DATA / "IEMOCAP_full_release"
    recs = _by_id(load_iemocap(root))
    # F002 is 'xxx' (no agreement), F004 'oth' (other): no emotion, left out; M003 has no wav
    assert sorted(recs) == ["Ses01F_impro01_F000", "Ses01F_impro01_M001", "Ses05M_script01_1_M000"]
    f0 = recs["Ses01F_impro01_F000"]
    assert f0.labels == {"gender": "female", "language": "English", "emotion": "neutral"}
    assert f0.duration_s == pytest.approx(0.25) and f0.split == "train"
    assert recs["Ses01F_impro01_M001"].labels["emotion"] == "happy"  # exc merged into happy
    m5 = recs["Ses05M_script01_1_M000"]
    assert m5.split == "test" and m5.labels["gender"] == "male" and m5.labels["emotion"] == "angry"
    assert m5.caption == "a man speaking English in an angry voice"
    unmerged = _by_id(load_iemocap(root, merge_excited=False, keep_unlabelled=True, test_sessions=()))
    assert unmerged["Ses01F_impro01_M001"].labels["emotion"] == "excited"
    for unlabelled in ("Ses01F_impro01_F002", "Ses01F_impro01_F004"):  # xxx and oth
        assert "emotion" not in unmerged[unlabelled].labels
        assert unmerged[unlabelled].caption == "a woman speaking English"
    assert {r.split for r in unmerged.values()} == {"train"}


def test_iemocap_needs_its_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match="EmoEvaluation"):
        load_iemocap(tmp_path)


def test_fsd50k_loader() -> None:
    ev = _by_id(load_fsd50k(DATA / "FSD50K", "eval"))
    assert sorted(ev) == ["fsd50k-175151", "fsd50k-37199"]
    dog = ev["fsd50k-175151"]
    assert dog.label_set("sound_event") == ("bark", "dog", "domestic animals and pets", "animal")
    assert dog.split == "test" and dog.meta["mids"].startswith("/m/05tny_")
    assert dog.caption == "bark, dog, domestic animals and pets, animal"
    assert dog.duration_s == pytest.approx(0.25)  # from the header when the CSV has none
    dev = _by_id(load_fsd50k(DATA / "FSD50K", "dev"))
    assert dev["fsd50k-64760"].split == "train" and dev["fsd50k-16399"].split == "probe"


@pytest.mark.parametrize("root", [DATA / "SAKURA", DATA / "SAKURA" / "data"])
def test_sakura_loader(root: Path) -> None:
    recs = _by_id(load_sakura(root))
    assert recs["sakura-gender-g1"].labels == {"gender": "female"}
    assert recs["sakura-gender-g2"].caption == "a man speaking"
    assert recs["sakura-language-l1"].labels == {"language": "German"}
    assert recs["sakura-emotion-e1"].labels == {"emotion": "disgust"}  # 'Disgusted' -> track label
    assert recs["sakura-animal-a2"].labels == {"animal": "rooster"}
    a1 = recs["sakura-animal-a1"]
    assert a1.meta["single_answer"] == "(a) dog" and a1.meta["multi_answer"] == "(a) an answer"
    assert a1.meta["multi_instruction"].startswith("A multi-hop question") and a1.path.parent.name == "audio"
    assert {r.split for r in recs.values()} == {"test"} and len(recs) == 6
    only = load_sakura(root, attributes=["Animal"])
    assert {r.clip_id for r in only} == {"sakura-animal-a1", "sakura-animal-a2"}
    with pytest.raises(ValueError, match="attribute"):
        load_sakura(root, attributes=["Accent"])


def test_sakura_names_a_missing_audio_folder_and_the_file_column(tmp_path: Path) -> None:
    (tmp_path / "Gender").mkdir()
    (tmp_path / "Gender" / "metadata.csv").write_text("file,attribute_label\ng1.wav,Male\n")
    with pytest.raises(DatasetFormatError, match="Gender/audio"):
        load_sakura(tmp_path, attributes=["Gender"])
    (tmp_path / "Gender" / "metadata.csv").write_text("file_name,attribute_label\ng1.wav,Male\n")
    with pytest.raises(DatasetFormatError, match=r"needs column\(s\) \['file', 'attribute_label'\]"):
        load_sakura(tmp_path, attributes=["Gender"])


@pytest.mark.parametrize("answer, label", [
    ("The speaker sounds sad, not happy.", "sad"), ("Happy? No: angry.", "happy"), ("Anger.", "angry"),
    ("frustration", "frustrated"), ("It is a woman.", "female"), ("The speaker is male, not female.", "male"),
    ("Female", "female"), ("I cannot tell.", None),
])
def test_audiobench_answers_give_the_first_label_they_mention(answer: str, label: str | None) -> None:
    from ard_core.datasets.benchmarks import AUDIOBENCH_TASKS, label_from_answer

    vocab = [*AUDIOBENCH_TASKS["iemocap_emotion_test"][1], *AUDIOBENCH_TASKS["voxceleb_gender_test"][1]]
    assert label_from_answer(answer, vocab) == label


def test_audiobench_loader_reads_the_hub_parquet(tmp_path: Path) -> None:
    emo = _by_id(load_audiobench(DATA / "AudioBench" / "iemocap_emotion_test", "iemocap_emotion_test",
                                 extract_to=tmp_path / "emo"))
    # row 3 has neither audio bytes nor a file: skipped
    assert sorted(emo) == ["iemocap_emotion_test-00000", "iemocap_emotion_test-00001", "iemocap_emotion_test-00002"]
    first = emo["iemocap_emotion_test-00000"]
    assert first.labels == {"emotion": "sad"} and first.meta["answer"] == "The speaker sounds sad, not happy."
    assert emo["iemocap_emotion_test-00001"].labels == {"emotion": "angry"}
    assert emo["iemocap_emotion_test-00002"].labels == {"emotion": "happy"}
    assert first.meta["source_path"] == "Ses05F_impro01_F000.wav" and first.split == "test"
    assert first.path == (tmp_path / "emo" / "00000.wav").resolve() and first.duration_s == pytest.approx(0.25)
    assert first.meta["instruction"] == "What emotion does the speaker convey?"
    gen = _by_id(load_audiobench(DATA / "AudioBench" / "voxceleb_gender_test", "voxceleb_gender_test",
                                 extract_to=tmp_path / "vox"))
    assert [r.labels for r in gen.values()] == [{"gender": "female"}, {"gender": "male"}]
    with pytest.raises(ValueError, match="task"):
        load_audiobench(DATA / "AudioBench", "librispeech_test")
    with pytest.raises(DatasetFormatError, match="no parquet files"):
        load_audiobench(tmp_path, "voxceleb_gender_test")


def test_every_loader_gives_known_tracks_and_existing_files(tmp_path: Path) -> None:
    recs = [
        *load_folder(DATA / "folder"),
        *load_wavcaps(WAVCAPS / "json_files" / "AudioSet_SL" / "as_final.json", WAVCAPS / "Zip_files" / "AudioSet_SL"),
        *load_iemocap(DATA / "IEMOCAP_full_release"), *load_fsd50k(DATA / "FSD50K"),
        *load_sakura(DATA / "SAKURA"),
        *load_audiobench(DATA / "AudioBench" / "voxceleb_gender_test", "voxceleb_gender_test", extract_to=tmp_path),
    ]
    for r in recs:
        assert set(r.labels) <= set(TRACKS), r
        assert r.path.is_absolute() and r.path.is_file(), r
        assert r.caption, r


# ---------------------------------------------------------------- the stage, kind = "sources"


def _stage(tmp_path: Path, sources: str) -> int:
    from precompute.dataset import main

    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(f'[run]\nname = "t"\nout_dir = "{tmp_path / "run"}"\n[dataset]\nkind = "sources"\n{sources}')
    return main(argparse.Namespace(config=cfg_path, decode=False, overrides=[]))


def _source(loader: str, **kw: object) -> str:
    return "[[dataset.sources]]\n" + "\n".join(f"{k} = {json.dumps(str(v) if isinstance(v, Path) else v)}"
                                                 for k, v in {"loader": loader, **kw}.items()) + "\n"


def test_stage_merges_every_source_of_every_dataset(tmp_path: Path) -> None:
    """All four WavCaps sources (FreeSound and SoundBible share the bare id 2149), IEMOCAP, FSD50K,
    SAKURA and both AudioBench tasks in one run."""
    sources = "".join(_source("wavcaps", json_path=WAVCAPS / "json_files" / src / f"{stem}.json",
                              audio_dir=WAVCAPS / "Zip_files" / src) for src, stem in WAVCAPS_JSON.items())
    sources += _source("iemocap", root=DATA / "IEMOCAP_full_release") + _source("fsd50k", root=DATA / "FSD50K")
    sources += _source("sakura", root=DATA / "SAKURA")
    sources += "".join(_source("audiobench", root=DATA / "AudioBench" / t, task=t)
                       for t in ("iemocap_emotion_test", "voxceleb_gender_test"))
    assert _stage(tmp_path, sources) == 0
    recs = _by_id(load_manifest(tmp_path / "run" / "dataset" / "manifest.csv"))
    assert len(recs) == 5 + 3 + 2 + 6 + 3 + 2
    assert {"freesound-2149", "soundbible-2149"} <= set(recs)
    assert Counter(r.dataset for r in recs.values()) == {
        "wavcaps": 5, "iemocap": 3, "fsd50k": 2, "sakura": 6, "iemocap_emotion_test": 3, "voxceleb_gender_test": 2}
    # AudioBench's embedded audio was written under the run's dataset folder
    vox = recs["voxceleb_gender_test-00001"]
    assert vox.path.is_file() and (tmp_path / "run" / "dataset" / "audio") in vox.path.parents
    summary = json.loads((tmp_path / "run" / "dataset" / "summary.json").read_text())
    assert summary["tracks"]["emotion"]["angry"] == {"test": 2}  # IEMOCAP session 5 + AudioBench 'Anger.'
    assert summary["tracks"]["sound_event"]["dog"] == {"test": 1}


def test_colliding_ids_name_the_sources_and_id_prefix_fixes_them(tmp_path: Path) -> None:
    twice = _source("folder", root=DATA / "folder") * 2
    with pytest.raises(ConfigError, match=r"#1 and #2 \(folder\) both give clip id 'calm'; add id_prefix"):
        _stage(tmp_path, twice)
    fixed = _source("folder", root=DATA / "folder") + _source("folder", root=DATA / "folder", id_prefix="copy")
    assert _stage(tmp_path, fixed) == 0
    ids = [r.clip_id for r in load_manifest(tmp_path / "run" / "dataset" / "manifest.csv")]
    assert ids == ["calm", "shout", "copy-calm", "copy-shout"]


def test_a_dataset_format_error_is_one_line_on_the_command_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "bad.json").write_text('[{"id": 1}]')
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[run]\nout_dir = "{tmp_path / "run"}"\n[dataset]\nkind = "sources"\n'
                   + _source("wavcaps", json_path=tmp_path / "bad.json", audio_dir=tmp_path))
    out = subprocess.run([sys.executable, "-m", "precompute", "dataset", "--config", str(cfg)],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "has no 'data' list (WavCaps json_files format)" in out.stderr
    assert len([line for line in out.stderr.splitlines() if line.startswith("error")]) == 1


@pytest.mark.parametrize("table, message", [
    ('kind = "sources"', "at least one"),
    ('kind = "huge"', "kind 'huge'"),
    ('kind = "sources"\n[[dataset.sources]]\nloader = "librispeech"', "loader 'librispeech'"),
    ('kind = "sources"\n[[dataset.sources]]\nloader = "fsd50k"\nroot = "x"\nsubsett = "eval"', "subsett"),
    ('kind = "sources"\n[[dataset.sources]]\nloader = "fsd50k"\nroot = "x"\nid_prefix = "a b"', "id_prefix 'a b'"),
    # the corpus's build settings are the forge's ([corpus.build] of configs/forge.toml), not the pipeline's
    ('kind = "mini"\n[dataset.mini]\nseed = 0', r"unknown key\(s\) \['mini'\]"),
    ('kind = "mini"\nsources_dir = "x"', r"unknown key\(s\) \['sources_dir'\]"),
])
def test_dataset_config_errors(tmp_path: Path, table: str, message: str) -> None:
    from precompute.dataset import DatasetConfig

    (tmp_path / "c.toml").write_text("[dataset]\n" + table + "\n")
    cfg = RunConfig.load(tmp_path / "c.toml")
    with pytest.raises(ConfigError, match=message):
        cfg.section("dataset", DatasetConfig)
