"""What every real-dataset loader shares: reading metadata, finding audio, writing records.

A loader (:mod:`ard_core.datasets.loaders`) reads its dataset's own metadata
with :func:`read_csv` / :func:`require_columns`, finds each clip's file with
:class:`AudioIndex`, and hands (clip id, path, fields) to :func:`collect_records`,
which fills missing durations from the file header and warns once about
missing audio. Datasets without captions get one written from their labels
(:func:`caption_from_labels`).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Iterable

from ard_core.audio import AudioError, audio_info
from ard_core.datasets.manifest import MULTI_LABEL_SEP, ClipRecord

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")


class DatasetFormatError(ValueError):
    """A dataset's metadata is not in the expected format; the message names the file."""


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV with stripped keys and values (a BOM is dropped); a missing file is named."""
    if not path.is_file():
        raise DatasetFormatError(f"metadata file '{path}' does not exist")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in rows]


def require_columns(rows: list[dict[str, str]], columns: Iterable[str], path: Path) -> None:
    """Raise :class:`DatasetFormatError` naming ``path`` unless ``rows`` exist and have ``columns``."""
    cols = list(columns)
    have = set(rows[0]) if rows else set()
    missing = [c for c in cols if c not in have]
    if not rows or missing:
        raise DatasetFormatError(f"'{path}' needs column(s) {cols}; missing {missing or 'all rows'}")


class AudioIndex:
    """Find an audio file by relative path, or by stem anywhere under a folder."""

    def __init__(self, root: Path):
        self.root = root
        self._by_stem: dict[str, Path] | None = None

    def find(self, name: str) -> Path | None:
        direct = self.root / name
        if direct.is_file():
            return direct.resolve()
        for suffix in AUDIO_SUFFIXES:
            if direct.with_suffix(suffix).is_file():
                return direct.with_suffix(suffix).resolve()
        if self._by_stem is None:  # one recursive scan, only when direct lookups fail
            self._by_stem = {}
            for p in sorted(self.root.rglob("*")):
                if p.suffix.lower() in AUDIO_SUFFIXES:
                    self._by_stem.setdefault(p.stem, p.resolve())
        return self._by_stem.get(Path(name).stem) or self._by_stem.get(Path(name).name)


def collect_records(dataset: str, items: Iterable[tuple[str, Path | None, dict]]) -> list[ClipRecord]:
    """Turn (clip_id, path or None, record kwargs) into records, warning once about missing audio.

    A duration the metadata does not give is read from the file's header; a
    file whose header cannot be read keeps 0.0 and is skipped later by
    :func:`ard_core.audio.iter_audio`.
    """
    records, missing = [], []
    for clip_id, path, kw in items:
        if path is None:
            missing.append(clip_id)
            continue
        if not kw.get("duration_s"):
            try:
                sr, _, frames = audio_info(path)
                kw["duration_s"] = round(frames / sr, 4)
            except AudioError:
                kw["duration_s"] = 0.0
        records.append(ClipRecord(clip_id=clip_id, path=path, dataset=dataset, **kw))
    if missing:
        log.warning("%s: %d clip(s) skipped because their audio file is missing (e.g. %s)",
                    dataset, len(missing), ", ".join(missing[:3]))
    return records


def caption_from_labels(labels: dict[str, str]) -> str:
    """A reference caption written from a clip's labels.

    Speech tracks give 'a woman speaking English in an angry voice'; an animal
    gives 'the sound of a dog'; sound events are listed ('rain, thunder').
    """
    if any(t in labels for t in ("gender", "language", "emotion")):
        return speech_caption(labels)
    if "animal" in labels:
        return f"the sound of a {labels['animal']}"
    return ", ".join(labels.get("sound_event", "").split(MULTI_LABEL_SEP))


def speech_caption(labels: dict[str, str]) -> str:
    """A caption from speech labels, e.g. 'a woman speaking English in an angry voice'."""
    who = {"male": "a man", "female": "a woman"}.get(labels.get("gender", ""), "a person")
    text = f"{who} speaking"
    if labels.get("language"):
        text += f" {labels['language']}"
    emo = labels.get("emotion")
    if emo:
        adjective = {"fear": "fearful", "disgust": "disgusted", "neutral": "neutral"}.get(emo, emo)
        article = "an" if adjective[0] in "aeiou" else "a"
        text += f" in {article} {adjective} voice"
    return text
