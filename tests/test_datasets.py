"""Manifest format and the real-dataset loaders, on the fixtures in tests/data/datasets
(written by scripts/make_dataset_fixtures.py, one miniature per real format)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest

from ard_core.config import ConfigError, RunConfig
from ard_core.datasets import TRACKS, ClipRecord, load_manifest, manifest_hash, save_manifest
from ard_core.datasets.loaders import (
    load_audiobench, load_fsd50k, load_folder, load_iemocap, load_sakura, load_wavcaps,
)
from ard_core.datasets.manifest import MANIFEST_COLUMNS, ManifestError
from ard_core.datasets.metadata import DatasetFormatError

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


def test_wavcaps_loader() -> None:
    recs = _by_id(load_wavcaps(DATA / "wavcaps" / "json_files" / "fsd_final.json", DATA / "wavcaps" / "audio"))
    assert sorted(recs) == ["180913", "Yb0RFKhbpFJA"]  # 999999 was never downloaded
    dog = recs["180913"]
    assert dog.caption == "A dog barks twice while birds chirp." and dog.labels == {}
    assert dog.duration_s == 0.25 and dog.split == "train" and dog.path.suffix == ".flac"
    assert dog.meta["description"] == "dog barking in garden"
    assert recs["Yb0RFKhbpFJA"].path.name == "Yb0RFKhbpFJA.flac"  # AudioSet_SL ids end in .wav


def test_wavcaps_rejects_other_json(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(json.dumps([{"id": 1}]))
    with pytest.raises(DatasetFormatError, match="'data' list"):
        load_wavcaps(tmp_path / "x.json", tmp_path)


def test_iemocap_loader() -> None:
    root = DATA / "iemocap" / "IEMOCAP_full_release"
    recs = _by_id(load_iemocap(root))
    # F002 is 'xxx' (no agreement) and M003 has no wav: both are left out
    assert sorted(recs) == ["Ses01F_impro01_F000", "Ses01F_impro01_M001", "Ses05M_script01_1_M000"]
    f0 = recs["Ses01F_impro01_F000"]
    assert f0.labels == {"gender": "female", "language": "English", "emotion": "neutral"}
    assert f0.duration_s == pytest.approx(8.2357 - 6.2901) and f0.split == "train"
    assert recs["Ses01F_impro01_M001"].labels["emotion"] == "happy"  # exc merged into happy
    m5 = recs["Ses05M_script01_1_M000"]
    assert m5.split == "test" and m5.labels["gender"] == "male" and m5.labels["emotion"] == "angry"
    assert m5.caption == "a man speaking English in an angry voice"
    unmerged = _by_id(load_iemocap(root, merge_excited=False, keep_unlabelled=True, test_sessions=()))
    assert unmerged["Ses01F_impro01_M001"].labels["emotion"] == "excited"
    assert "emotion" not in unmerged["Ses01F_impro01_F002"].labels
    assert {r.split for r in unmerged.values()} == {"train"}


def test_iemocap_needs_its_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match="EmoEvaluation"):
        load_iemocap(tmp_path)


def test_fsd50k_loader() -> None:
    ev = _by_id(load_fsd50k(DATA / "fsd50k", "eval"))
    assert sorted(ev) == ["fsd50k-175151", "fsd50k-37199"]
    dog = ev["fsd50k-175151"]
    assert dog.label_set("sound_event") == ("bark", "dog", "domestic animals and pets", "animal")
    assert dog.split == "test" and dog.meta["mids"].startswith("/m/05tny_")
    assert dog.caption == "bark, dog, domestic animals and pets, animal"
    assert dog.duration_s == pytest.approx(0.25)  # from the header when the CSV has none
    dev = _by_id(load_fsd50k(DATA / "fsd50k", "dev"))
    assert dev["fsd50k-64760"].split == "train" and dev["fsd50k-16399"].split == "probe"


def test_sakura_loader() -> None:
    recs = _by_id(load_sakura(DATA / "sakura"))
    assert recs["sakura-gender-g1"].labels == {"gender": "female"}
    assert recs["sakura-gender-g2"].caption == "a man speaking"
    assert recs["sakura-language-l1"].labels == {"language": "German"}  # 'german' -> vocabulary case
    assert recs["sakura-language-l1"].path.parent.name == "Language"  # audio next to the CSV
    assert recs["sakura-emotion-e1"].labels == {"emotion": "disgust"}  # 'Disgusted' -> track label
    assert recs["sakura-animal-a2"].labels == {"animal": "rooster"}
    assert recs["sakura-animal-a1"].meta["single_answer"] == "dog"
    assert {r.split for r in recs.values()} == {"test"} and len(recs) == 6
    only = load_sakura(DATA / "sakura", attributes=["Animal"])
    assert {r.clip_id for r in only} == {"sakura-animal-a1", "sakura-animal-a2"}
    with pytest.raises(ValueError, match="attribute"):
        load_sakura(DATA / "sakura", attributes=["Accent"])


def test_audiobench_loaders() -> None:
    emo = _by_id(load_audiobench(DATA / "audiobench" / "iemocap_emotion", "iemocap_emotion"))
    assert sorted(emo) == ["iemocap_emotion-iemo_0", "iemocap_emotion-iemo_1"]  # iemo_2 is missing
    assert emo["iemocap_emotion-iemo_0"].labels == {"emotion": "happy"}
    assert emo["iemocap_emotion-iemo_1"].labels == {"emotion": "angry"}  # from other_attributes 'ang'
    assert emo["iemocap_emotion-iemo_0"].meta["answer"] == "The speaker sounds happy and excited."
    gen = _by_id(load_audiobench(DATA / "audiobench" / "voxceleb_gender", "voxceleb_gender"))
    assert gen["voxceleb_gender-vox_0"].labels == {"gender": "female"}
    assert gen["voxceleb_gender-vox_1"].labels == {"gender": "male"}  # 'male' is not read in 'female'
    with pytest.raises(ValueError, match="task"):
        load_audiobench(DATA / "audiobench", "librispeech")


def test_every_loader_gives_known_tracks_and_existing_files() -> None:
    recs = [
        *load_folder(DATA / "folder"),
        *load_wavcaps(DATA / "wavcaps" / "json_files" / "fsd_final.json", DATA / "wavcaps" / "audio"),
        *load_iemocap(DATA / "iemocap" / "IEMOCAP_full_release"), *load_fsd50k(DATA / "fsd50k"),
        *load_sakura(DATA / "sakura"),
        *load_audiobench(DATA / "audiobench" / "voxceleb_gender", "voxceleb_gender"),
    ]
    for r in recs:
        assert set(r.labels) <= set(TRACKS), r
        assert r.path.is_absolute() and r.path.is_file(), r
        assert r.caption, r


# ---------------------------------------------------------------- the stage, kind = "sources"


def test_stage_merges_sources(tmp_path: Path) -> None:
    from precompute.dataset import DatasetConfig, main

    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(f"""
[run]
name = "t"
out_dir = "{tmp_path / 'run'}"
[dataset]
kind = "sources"
[[dataset.sources]]
loader = "iemocap"
root = "{DATA / 'iemocap' / 'IEMOCAP_full_release'}"
[[dataset.sources]]
loader = "fsd50k"
root = "{DATA / 'fsd50k'}"
subset = "eval"
""")
    assert main(argparse.Namespace(config=cfg_path, decode=False)) == 0
    recs = load_manifest(tmp_path / "run" / "dataset" / "manifest.csv")
    assert len(recs) == 5 and {r.dataset for r in recs} == {"iemocap", "fsd50k"}
    summary = json.loads((tmp_path / "run" / "dataset" / "summary.json").read_text())
    assert summary["tracks"]["emotion"] == {"angry": {"test": 1}, "happy": {"train": 1}, "neutral": {"train": 1}}
    assert summary["tracks"]["sound_event"]["dog"] == {"test": 1}
    cfg = RunConfig.load(cfg_path)
    assert cfg.section("dataset", DatasetConfig).sources[1]["subset"] == "eval"


@pytest.mark.parametrize("table, message", [
    ('kind = "sources"', "at least one"),
    ('kind = "huge"', "kind 'huge'"),
    ('kind = "sources"\n[[dataset.sources]]\nloader = "librispeech"', "loader 'librispeech'"),
    ('kind = "sources"\n[[dataset.sources]]\nloader = "fsd50k"\nroot = "x"\nsubsett = "eval"', "subsett"),
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
