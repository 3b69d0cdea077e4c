"""Loaders for the real datasets, each returning :class:`ClipRecord` lists.

Every loader reads its dataset's own metadata as distributed, resolves the
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

from ard_core.datasets.manifest import LABEL_VOCAB, MULTI_LABEL_SEP, SPLITS, TRACKS, ClipRecord, load_manifest
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


def load_wavcaps(json_path: str | Path, audio_dir: str | Path, *, dataset: str = "wavcaps",
                 split: str = "train") -> list[ClipRecord]:
    """WavCaps: a ``json_files/<Source>/*_final.json`` file (``{"data": [{"id", "caption",
    "duration", ...}]}``) and the folder its audio was unpacked into (``<id>.flac``
    or ``.wav``; ids that already end in '.wav', as in AudioSet_SL, are matched by stem)."""
    json_path, audio_dir = Path(json_path), Path(audio_dir)
    if not json_path.is_file():
        raise DatasetFormatError(f"WavCaps metadata '{json_path}' does not exist")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"WavCaps metadata '{json_path}' is not JSON: {exc}") from exc
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise DatasetFormatError(f"'{json_path}' has no 'data' list (WavCaps json_files format)")
    index = AudioIndex(audio_dir)

    def items():
        for i, entry in enumerate(entries):
            if "id" not in entry or "caption" not in entry:
                raise DatasetFormatError(f"'{json_path}' entry {i} lacks 'id' or 'caption'")
            clip_id = Path(str(entry["id"])).stem if str(entry["id"]).endswith(AUDIO_SUFFIXES) else str(entry["id"])
            meta = {k: str(entry[k]) for k in ("description", "title", "category", "author", "href")
                    if entry.get(k)}
            audio = str(entry.get("audio") or "")  # some subsets hold a placeholder 'wav_path'
            path = index.find(audio) if audio and audio != "wav_path" else None
            yield (clip_id, path or index.find(clip_id),
                   dict(split=split, duration_s=float(entry.get("duration") or 0.0), labels={},
                        caption=str(entry["caption"]), meta=meta))

    return collect_records(dataset, items())


# ---------------------------------------------------------------- IEMOCAP

IEMOCAP_EMOTIONS = {
    "neu": "neutral", "hap": "happy", "exc": "excited", "ang": "angry", "sad": "sad",
    "fru": "frustrated", "fea": "fear", "sur": "surprised", "dis": "disgust", "oth": "other",
}
_IEMOCAP_LINE = re.compile(r"^\[(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\]\s+(?P<utt>Ses\S+)\s+(?P<emo>\w+)")


def load_iemocap(root: str | Path, *, dataset: str = "iemocap", merge_excited: bool = True,
                 test_sessions: tuple[int, ...] = (5,), keep_unlabelled: bool = False) -> list[ClipRecord]:
    """IEMOCAP_full_release: ``Session*/dialog/EmoEvaluation/*.txt`` give each utterance's
    majority emotion; audio is ``Session*/sentences/wav/<dialog>/<utt>.wav``.

    Gender is the utterance speaker's (the letter in ``..._F000`` / ``..._M012``).
    ``merge_excited`` maps 'exc' to happy (the usual 4-class setup); 'xxx' (no
    agreement) gets no emotion label and is dropped unless ``keep_unlabelled``.
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
        raise ValueError(f"FSD50K subset {subset!r}: use 'eval' or 'dev'")
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


# ---------------------------------------------------------------- SAKURA

SAKURA_TRACKS = {"Gender": "gender", "Language": "language", "Emotion": "emotion", "Animal": "animal"}


def _sakura_label(track: str, label: str) -> str:
    label = label.strip()
    if track in ("gender", "emotion", "animal"):
        label = label.lower()
    if track == "emotion":
        label = {"fearful": "fear", "disgusted": "disgust", "angry": "angry", "happiness": "happy",
                 "sadness": "sad", "anger": "angry"}.get(label, label)
    if track == "language":
        vocab = {v.lower(): v for v in LABEL_VOCAB["language"]}
        label = vocab.get(label.lower(), label)
    return label


def load_sakura(root: str | Path, attributes: Iterable[str] = tuple(SAKURA_TRACKS), *,
                dataset: str = "sakura") -> list[ClipRecord]:
    """SAKURA: ``{Attribute}/metadata.csv`` (file_name, attribute_label, ...) per attribute
    (Gender, Language, Emotion, Animal); audio under ``{Attribute}/audio/`` or next to
    the CSV. SAKURA is an evaluation set, so every clip is in the test split."""
    root = Path(root)
    records: list[ClipRecord] = []
    for attr in attributes:
        if attr not in SAKURA_TRACKS:
            raise ValueError(f"SAKURA attribute {attr!r}: use one of {list(SAKURA_TRACKS)}")
        track = SAKURA_TRACKS[attr]
        path = root / attr / "metadata.csv"
        rows = read_csv(path)
        require_columns(rows, ("file_name", "attribute_label"), path)
        audio_root = root / attr / "audio" if (root / attr / "audio").is_dir() else root / attr
        index = AudioIndex(audio_root)

        def items(rows=rows, track=track, index=index, attr=attr):
            for row in rows:
                labels = {track: _sakura_label(track, row["attribute_label"])}
                meta = {k: v for k, v in row.items() if k not in ("file_name", "attribute_label") and v}
                yield (f"sakura-{attr.lower()}-{Path(row['file_name']).stem}", index.find(row["file_name"]),
                       dict(split="test", duration_s=0.0, labels=labels, caption=caption_from_labels(labels), meta=meta))

        records += collect_records(dataset, items())
    return records


# ---------------------------------------------------------------- AudioBench

AUDIOBENCH_TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "iemocap_emotion": ("emotion", ("neutral", "happy", "angry", "sad", "frustrated", "excited",
                                    "surprised", "fear", "disgust")),
    "voxceleb_gender": ("gender", ("female", "male")),
}


# How each label is recognised in free text: IEMOCAP's 3-letter codes and the usual word forms.
_LABEL_PATTERNS = {
    "neutral": r"\bneu(?:tral)?\b", "happy": r"\bhap\b|\bhapp(?:y|iness)", "angry": r"\bang\b|\bang(?:ry|er)",
    "sad": r"\bsad", "frustrated": r"\bfru\b|\bfrustrat", "excited": r"\bexc\b|\bexcit",
    "surprised": r"\bsur\b|\bsurpris", "fear": r"\bfea\b|\bfear|\bscared|\bafraid",
    "disgust": r"\bdis\b|\bdisgust", "female": r"\bfemale\b|\bwom[ae]n\b", "male": r"\bmale\b|\bm[ae]n\b",
}


def _label_from_answer(answer: str, vocab: tuple[str, ...]) -> str | None:
    """The first label of ``vocab`` (in its order) that ``answer`` mentions, or None."""
    text = answer.lower()
    for word in vocab:
        if re.search(_LABEL_PATTERNS.get(word, rf"\b{word}\b"), text):
            return word
    return None


def load_audiobench(root: str | Path, task: str, metadata: str = "metadata.jsonl", *,
                    dataset: str | None = None) -> list[ClipRecord]:
    """AudioBench-style steering sets (IEMOCAP-Emotion, VoxCeleb1-Gender) exported to a folder.

    ``metadata.jsonl`` has one object per clip with ``audio`` (file path relative to
    ``root``), ``instruction``, ``answer`` and optionally ``other_attributes`` (a dict
    that may hold the label under 'emotion' / 'gender'). The label comes from
    ``other_attributes`` when present, else from the reference answer's wording.
    Every clip is in the test split.
    """
    if task not in AUDIOBENCH_TASKS:
        raise ValueError(f"AudioBench task {task!r}: use one of {list(AUDIOBENCH_TASKS)}")
    track, vocab = AUDIOBENCH_TASKS[task]
    root = Path(root)
    path = root / metadata
    if not path.is_file():
        raise DatasetFormatError(f"AudioBench metadata '{path}' does not exist")
    index = AudioIndex(root)
    entries = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DatasetFormatError(f"'{path}' line {n} is not JSON: {exc}") from exc

    def items():
        for n, e in enumerate(entries, start=1):
            if "audio" not in e or "answer" not in e:
                raise DatasetFormatError(f"'{path}' line {n} lacks 'audio' or 'answer'")
            attrs = e.get("other_attributes") or {}
            raw = str(attrs.get(track) or attrs.get(track.capitalize()) or "").lower()
            label = _label_from_answer(raw, vocab) if raw else _label_from_answer(str(e["answer"]), vocab)
            labels = {track: label} if label else {}
            yield (f"{task}-{Path(str(e['audio'])).stem}", index.find(str(e["audio"])), dict(
                split="test", duration_s=0.0, labels=labels, caption=speech_caption(labels),
                meta={"instruction": str(e.get("instruction", "")), "answer": str(e["answer"])}))

    return collect_records(dataset or task, items())


def load_manifest_file(path: str | Path) -> list[ClipRecord]:
    """A manifest in this project's own format (see :mod:`ard_core.datasets.manifest`)."""
    return load_manifest(path)  # a named function so config validation can read its signature


LOADERS: dict[str, Callable[..., list[ClipRecord]]] = {
    "folder": load_folder, "manifest": load_manifest_file,
    "wavcaps": load_wavcaps, "iemocap": load_iemocap, "fsd50k": load_fsd50k,
    "sakura": load_sakura, "audiobench": load_audiobench,
}
"""Loader name (as used in a config's [[dataset.sources]]) -> function."""
