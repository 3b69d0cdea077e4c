"""Loaders for the real datasets, each returning :class:`ClipRecord` lists.

WavCaps, IEMOCAP and FSD50K are here; the two benchmarks, SAKURA and AudioBench, in
:mod:`ard_core.datasets.benchmarks`. Every loader reads its dataset's own metadata as distributed, resolves the
audio files under ``root``, and maps labels onto the project's tracks
(``gender``, ``language``, ``emotion``, ``animal``, ``sound_event``).
Clips whose audio file is missing are skipped with one warning per dataset, so
a partial download still loads; a malformed metadata file raises
:class:`~ard_core.datasets.metadata.DatasetFormatError` naming the file and
what is wrong. The helpers they share are :mod:`ard_core.datasets.metadata`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Iterable

from ard_core.config import ConfigError
from ard_core.datasets.benchmarks import load_audiobench, load_sakura
from ard_core.datasets.manifest import MULTI_LABEL_SEP, SPLITS, TRACKS, ClipRecord, load_manifest
from ard_core.datasets.metadata import (
    AUDIO_SUFFIXES, AudioIndex, DatasetFormatError, caption_from_labels, collect_records, read_csv,
    require_columns, speech_caption,
)


# ---------------------------------------------------------------- generic folder


def load_folder(root: str | Path, metadata: str = "metadata.csv", *, dataset: str = "folder",
                split: str = "train") -> list[ClipRecord]:
    """A folder of audio files plus a CSV.

    The CSV needs a file column (``path``, ``file_name`` or ``filename``, relative
    to ``root``); columns named like a track (``gender``, ``emotion``, ...) become
    labels, ``caption``/``split``/``duration_s``/``clip_id`` are used when present,
    and the rest go to ``meta``. A CSV that is already a full manifest is read
    with :func:`load_manifest`.
    """
    root = Path(root)
    path = root / metadata
    rows = read_csv(path)
    if rows and "clip_id" in rows[0] and "dataset" in rows[0] and "duration_s" in rows[0]:
        return load_manifest(path)
    file_col = next((c for c in ("path", "file_name", "filename") if rows and c in rows[0]), None)
    if file_col is None:
        raise DatasetFormatError(f"'{path}' needs a file column: 'path', 'file_name' or 'filename'")
    index = AudioIndex(root)
    reserved = {file_col, "clip_id", "split", "caption", "duration_s", *TRACKS}

    def items():
        for i, row in enumerate(rows):
            labels = {t: row[t] for t in TRACKS if row.get(t)}
            row_split = row.get("split") or split
            if row_split not in SPLITS:
                raise DatasetFormatError(f"'{path}' row {i + 2}: split {row_split!r} not in {SPLITS}")
            yield (row.get("clip_id") or Path(row[file_col]).stem, index.find(row[file_col]), dict(
                split=row_split, duration_s=float(row.get("duration_s") or 0.0), labels=labels,
                caption=row.get("caption") or caption_from_labels(labels),
                meta={k: v for k, v in row.items() if k not in reserved and v}))

    return collect_records(dataset, items())


# ---------------------------------------------------------------- WavCaps


WAVCAPS_SOURCES = {"as_final": "AudioSet_SL", "bbc_final": "BBC_Sound_Effects", "fsd_final": "FreeSound",
                   "sb_final": "SoundBible"}
"""WavCaps's four sources, by the stem of their metadata file (json_files/<Source>/<stem>.json)."""


def wavcaps_source(json_path: Path) -> str:
    """'FreeSound' for json_files/FreeSound/fsd_final.json: the folder, else the file's known stem, else the stem."""
    if json_path.parent.name in WAVCAPS_SOURCES.values():
        return json_path.parent.name
    return WAVCAPS_SOURCES.get(json_path.stem, json_path.stem)


def load_wavcaps(json_path: str | Path, audio_dir: str | Path, *, dataset: str = "wavcaps", split: str = "train",
                 source: str | None = None) -> list[ClipRecord]:
    """WavCaps (huggingface.co/datasets/cvssp/WavCaps): one source's ``json_files/<Source>/*_final.json``
    (``{"data": [{"id", "caption", "duration", ...}]}``) and the folder its zip was unpacked into,
    where the audio sits at any depth as ``<id>.flac`` (ids that end in '.wav', as in AudioSet_SL,
    are matched by stem).

    Clip ids are prefixed by the source in lower case ('freesound-180913', 'soundbible-2149'):
    FreeSound, BBC and SoundBible all number their clips with bare integers, so one config can
    list every source. ``source`` overrides the name read from the JSON's path.
    """
    json_path, audio_dir = Path(json_path), Path(audio_dir)
    if split not in SPLITS:
        raise ConfigError(f"WavCaps split {split!r}: use one of {list(SPLITS)}")
    if not json_path.is_file():
        raise DatasetFormatError(f"WavCaps metadata '{json_path}' does not exist")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"WavCaps metadata '{json_path}' is not JSON: {exc}") from exc
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise DatasetFormatError(f"'{json_path}' has no 'data' list (WavCaps json_files format)")
    source = source or wavcaps_source(json_path)
    index = AudioIndex(audio_dir)

    def items():
        for i, entry in enumerate(entries):
            if "id" not in entry or "caption" not in entry:
                raise DatasetFormatError(f"'{json_path}' entry {i} lacks 'id' or 'caption'")
            raw_id = str(entry["id"])
            stem = Path(raw_id).stem if raw_id.endswith(AUDIO_SUFFIXES) else raw_id
            meta = {k: str(entry[k]) for k in ("description", "title", "category", "author", "href")
                    if entry.get(k)} | {"wavcaps_source": source}
            audio = str(entry.get("audio") or "")  # some subsets hold a placeholder 'wav_path'
            path = index.find(audio) if audio and audio != "wav_path" else None
            yield (f"{source.lower()}-{stem}", path or index.find(stem),
                   dict(split=split, duration_s=float(entry.get("duration") or 0.0), labels={},
                        caption=str(entry["caption"]), meta=meta))

    return collect_records(dataset, items())


# ---------------------------------------------------------------- IEMOCAP

IEMOCAP_EMOTIONS = {
    "neu": "neutral", "hap": "happy", "exc": "excited", "ang": "angry", "sad": "sad",
    "fru": "frustrated", "fea": "fear", "sur": "surprised", "dis": "disgust",
}
"""IEMOCAP's category codes. 'oth' (other) and 'xxx' (no majority) name no emotion: such
utterances get none, and are dropped unless ``keep_unlabelled``."""
_IEMOCAP_LINE = re.compile(r"^\[(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\]\s+(?P<utt>Ses\S+)\s+(?P<emo>\w+)")


def load_iemocap(root: str | Path, *, dataset: str = "iemocap", merge_excited: bool = True,
                 test_sessions: tuple[int, ...] = (5,), keep_unlabelled: bool = False) -> list[ClipRecord]:
    """IEMOCAP_full_release: ``Session*/dialog/EmoEvaluation/*.txt`` give each utterance's
    majority emotion; audio is ``Session*/sentences/wav/<dialog>/<utt>.wav``.

    Gender is the utterance speaker's (the letter in ``..._F000`` / ``..._M012``).
    ``merge_excited`` maps 'exc' to happy (the usual 4-class setup); 'xxx' (no
    agreement) and 'oth' (other) get no emotion label and are dropped unless ``keep_unlabelled``.
    Sessions in ``test_sessions`` form the test split, the rest train.
    """
    root = Path(root)
    files = sorted(root.glob("Session*/dialog/EmoEvaluation/*.txt"))
    if not files:
        raise DatasetFormatError(f"no 'Session*/dialog/EmoEvaluation/*.txt' under '{root}' "
                                 "(expected the IEMOCAP_full_release folder)")

    def items():
        for f in files:
            session = int(re.search(r"Session(\d+)", str(f)).group(1))
            for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
                m = _IEMOCAP_LINE.match(line.strip())
                if not m:
                    continue
                utt, code = m["utt"], m["emo"]
                emotion = "happy" if (merge_excited and code == "exc") else IEMOCAP_EMOTIONS.get(code)
                if emotion is None and not keep_unlabelled:
                    continue
                speaker = utt.rsplit("_", 1)[-1][:1]
                labels = {"gender": {"F": "female", "M": "male"}[speaker], "language": "English"}
                if emotion:
                    labels["emotion"] = emotion
                dialog = utt.rsplit("_", 1)[0]
                wav = root / f"Session{session}" / "sentences" / "wav" / dialog / f"{utt}.wav"
                yield (utt, wav.resolve() if wav.is_file() else None, dict(
                    split="test" if session in test_sessions else "train",
                    duration_s=round(float(m["end"]) - float(m["start"]), 4), labels=labels,
                    caption=speech_caption(labels),
                    meta={"session": str(session), "emotion_code": code}))

    return collect_records(dataset, items())


# ---------------------------------------------------------------- FSD50K


def fsd50k_label_text(label: str) -> str:
    """'Electric_guitar' -> 'electric guitar'; 'Walk_and_footsteps' -> 'walk and footsteps'."""
    return label.replace("_", " ").strip().lower()


def load_fsd50k(root: str | Path, subset: str = "eval", *, dataset: str = "fsd50k") -> list[ClipRecord]:
    """FSD50K: ``FSD50K.ground_truth/{eval,dev}.csv`` (fname, labels, mids[, split]) and
    ``FSD50K.{eval,dev}_audio/<fname>.wav``.

    All of a clip's labels (leaf and ancestors, as listed) become its
    ``sound_event`` label set (';'-separated, readable text); these are the
    evaluation references. eval -> test split; dev's train/val -> train/probe.
    """
    root = Path(root)
    if subset not in ("eval", "dev"):
        raise ConfigError(f"FSD50K subset {subset!r}: use 'eval' or 'dev'")
    path = root / "FSD50K.ground_truth" / f"{subset}.csv"
    rows = read_csv(path)
    require_columns(rows, ("fname", "labels"), path)
    audio_dir = root / f"FSD50K.{subset}_audio"

    def items():
        for row in rows:
            names = [fsd50k_label_text(x) for x in row["labels"].split(",") if x.strip()]
            split = "test" if subset == "eval" else {"train": "train", "val": "probe"}.get(row.get("split", ""), "train")
            wav = audio_dir / f"{row['fname']}.wav"
            yield (f"fsd50k-{row['fname']}", wav.resolve() if wav.is_file() else None, dict(
                split=split, duration_s=0.0, labels={"sound_event": MULTI_LABEL_SEP.join(names)},
                caption=", ".join(names), meta={"fsd50k_labels": row["labels"], "mids": row.get("mids", "")}))

    return collect_records(dataset, items())


def load_manifest_file(path: str | Path) -> list[ClipRecord]:
    """A manifest in this project's own format (see :mod:`ard_core.datasets.manifest`)."""
    return load_manifest(path)  # a named function so config validation can read its signature


LOADERS: dict[str, Callable[..., list[ClipRecord]]] = {
    "folder": load_folder, "manifest": load_manifest_file,
    "wavcaps": load_wavcaps, "iemocap": load_iemocap, "fsd50k": load_fsd50k,
    "sakura": load_sakura, "audiobench": load_audiobench,
}
"""Loader name (as used in a config's [[dataset.sources]]) -> function."""
