"""Loaders for the two benchmarks the papers evaluate on, read as their publishers release them.

- **SAKURA** (AudioLens's attribute tracks; github.com/ckyang1124/SAKURA, ``data/README.md``):
  ``data/<Track>/metadata.csv`` for the tracks Gender, Language, Emotion and Animal, with the
  columns ``file``, ``attribute_label``, ``single_instruction``, ``single_answer``,
  ``multi_instruction`` and ``multi_answer``; the audio of a track in ``data/<Track>/audio/``.
- **AudioBench** steering sets (AR&D's Table 3; the Hugging Face datasets
  ``AudioLLMs/iemocap_emotion_test`` and ``AudioLLMs/voxceleb_gender_test``): parquet files
  (``data/test-*.parquet``) with ``context`` (the audio, a struct of encoded ``bytes`` and
  ``path``), ``instruction``, ``answer`` and ``other_attributes``; the label is read from the
  reference answer. The audio bytes are written
  out once to ``extract_to`` (the dataset stage passes ``<out_dir>/dataset/audio/<task>``),
  because a manifest row points at a file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

from ard_core.config import ConfigError
from ard_core.datasets.manifest import LABEL_VOCAB, ClipRecord
from ard_core.datasets.metadata import (
    AUDIO_SUFFIXES, AudioIndex, DatasetFormatError, caption_from_labels, collect_records, read_csv,
    require_columns, speech_caption,
)
from ard_core.durable import write_bytes

# ---------------------------------------------------------------- SAKURA

SAKURA_TRACKS = {"Gender": "gender", "Language": "language", "Emotion": "emotion", "Animal": "animal"}
SAKURA_COLUMNS = ("file", "attribute_label", "single_instruction", "single_answer", "multi_instruction",
                  "multi_answer")


def _sakura_label(track: str, label: str) -> str:
    label = label.strip()
    if track in ("gender", "emotion", "animal"):
        label = label.lower()
    if track == "emotion":
        label = {"fearful": "fear", "disgusted": "disgust", "happiness": "happy", "sadness": "sad",
                 "anger": "angry"}.get(label, label)
    if track == "language":
        vocab = {v.lower(): v for v in LABEL_VOCAB["language"]}
        label = vocab.get(label.lower(), label)
    return label


def _sakura_data_dir(root: Path) -> Path:
    """``root`` is the repository's ``data`` folder, or the repository (holding ``data/``)."""
    if not (root / "Gender").is_dir() and (root / "data").is_dir():
        return root / "data"
    return root


def load_sakura(root: str | Path, attributes: Iterable[str] = tuple(SAKURA_TRACKS), *,
                dataset: str = "sakura") -> list[ClipRecord]:
    """SAKURA's ``<Track>/metadata.csv`` + ``<Track>/audio/`` per track. An evaluation set: every
    clip is in the test split; the instructions and golden answers are kept in ``meta``."""
    root = _sakura_data_dir(Path(root))
    records: list[ClipRecord] = []
    for attr in attributes:
        if attr not in SAKURA_TRACKS:
            raise ConfigError(f"SAKURA attribute {attr!r}: use one of {list(SAKURA_TRACKS)}")
        track, path = SAKURA_TRACKS[attr], root / attr / "metadata.csv"
        rows = read_csv(path)
        require_columns(rows, ("file", "attribute_label"), path)
        audio = root / attr / "audio"
        if not audio.is_dir():
            raise DatasetFormatError(f"SAKURA track {attr}: no audio folder '{audio}' (the release keeps each "
                                     "track's clips in <Track>/audio/)")
        index = AudioIndex(audio)

        def items(rows=rows, track=track, index=index, attr=attr):
            for row in rows:
                labels = {track: _sakura_label(track, row["attribute_label"])}
                meta = {k: row[k] for k in SAKURA_COLUMNS[2:] if row.get(k)}
                yield (f"sakura-{attr.lower()}-{Path(row['file']).stem}", index.find(row["file"]),
                       dict(split="test", duration_s=0.0, labels=labels, caption=caption_from_labels(labels), meta=meta))

        records += collect_records(dataset, items())
    return records


# ---------------------------------------------------------------- AudioBench

AUDIOBENCH_TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "iemocap_emotion_test": ("emotion", ("neutral", "happy", "angry", "sad", "frustrated", "excited",
                                         "surprised", "fear", "disgust")),
    "voxceleb_gender_test": ("gender", ("female", "male")),
}
"""AudioBench task -> (track, labels its answers name)."""

# How each label is written in free text: IEMOCAP's 3-letter codes and the usual word forms.
_LABEL_PATTERNS = {
    "neutral": r"\bneu(?:tral)?\b", "happy": r"\bhap\b|\bhapp(?:y|iness)", "angry": r"\bang\b|\bang(?:ry|er)",
    "sad": r"\bsad", "frustrated": r"\bfru\b|\bfrustrat", "excited": r"\bexc\b|\bexcit",
    "surprised": r"\bsur\b|\bsurpris", "fear": r"\bfea\b|\bfear|\bscared|\bafraid",
    "disgust": r"\bdis\b|\bdisgust", "female": r"\bfemale\b|\bwom[ae]n\b", "male": r"\bmale\b|\bm[ae]n\b",
}


def label_from_answer(answer: str, vocab: Iterable[str]) -> str | None:
    """The label of ``vocab`` mentioned first in ``answer`` ('sad, not happy' -> 'sad'), or None."""
    text, best = answer.lower(), None
    for word in vocab:
        m = re.search(_LABEL_PATTERNS.get(word, rf"\b{re.escape(word)}\b"), text)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), word)
    return None if best is None else best[1]


_MAGIC = ((b"RIFF", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"), (b"\xff\xfb", ".mp3"))


def _text(value: Any) -> str:
    """AudioBench stores some text fields as {'text': ...}."""
    return str(value.get("text", "")) if isinstance(value, dict) else ("" if value is None else str(value))


def _write_audio(context: Any, out: Path, stem: str, root: Path) -> Path | None:
    """The clip's file: its embedded bytes written once under ``out``, or the path it names."""
    if not isinstance(context, dict):
        raise DatasetFormatError(f"AudioBench 'context' is {type(context).__name__}, expected an audio struct "
                                 "with 'bytes' and 'path'")
    data, name = context.get("bytes"), str(context.get("path") or "")
    if not data:
        found = root / name if name else None
        return found.resolve() if found is not None and found.is_file() else None
    suffix = Path(name).suffix.lower()
    if suffix not in AUDIO_SUFFIXES:
        suffix = next((s for magic, s in _MAGIC if bytes(data[:4]).startswith(magic)), ".wav")
    path = out / f"{stem}{suffix}"
    if not (path.is_file() and path.stat().st_size == len(data)):
        write_bytes(path, bytes(data))
    return path.resolve()


def parquet_rows(root: Path) -> list[dict[str, Any]]:
    """Rows of every parquet file under ``root`` (``data/test-*.parquet`` first), in file order."""
    import pandas as pd

    files = sorted(root.glob("data/test-*.parquet")) or sorted(root.rglob("*.parquet"))
    if not files:
        raise DatasetFormatError(f"no parquet files under '{root}' (expected the Hugging Face layout "
                                 "data/test-00000-of-0000N.parquet of an AudioBench task)")
    rows: list[dict[str, Any]] = []
    for f in files:
        frame = pd.read_parquet(f)
        missing = [c for c in ("context", "answer") if c not in frame.columns]
        if missing:
            raise DatasetFormatError(f"'{f}' lacks column(s) {missing}; AudioBench tasks have context "
                                     f"(audio), instruction and answer (got {list(frame.columns)})")
        rows += frame.to_dict(orient="records")
    return rows


def load_audiobench(root: str | Path, task: str, *, extract_to: str | Path | None = None,
                    dataset: str | None = None) -> list[ClipRecord]:
    """An AudioBench task downloaded from the hub (``huggingface-cli download AudioLLMs/<task>
    --repo-type dataset --local-dir DIR``). The label is the first label the reference answer
    mentions ('The speaker sounds sad, not happy.' -> sad). Every clip is in the test split."""
    if task not in AUDIOBENCH_TASKS:
        raise ConfigError(f"AudioBench task {task!r}: use one of {list(AUDIOBENCH_TASKS)}")
    track, vocab = AUDIOBENCH_TASKS[task]
    root = Path(root)
    out = Path(extract_to) if extract_to is not None else root / "audio"
    rows = parquet_rows(root)

    def items():
        for i, row in enumerate(rows):
            answer = _text(row.get("answer"))
            label = label_from_answer(answer, vocab)
            labels = {track: label} if label else {}
            context = row.get("context")
            yield (f"{task}-{i:05d}", _write_audio(context, out, f"{i:05d}", root), dict(
                split="test", duration_s=0.0, labels=labels, caption=speech_caption(labels),
                meta={"instruction": _text(row.get("instruction")), "answer": answer,
                      "source_path": str(context.get("path") or "") if isinstance(context, dict) else ""}))

    return collect_records(dataset or task, items())
