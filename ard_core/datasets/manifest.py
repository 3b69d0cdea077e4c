"""The clip record and the manifest file that lists a probing dataset.

A manifest is a CSV (or Parquet) table with one row per clip and the columns
:data:`MANIFEST_COLUMNS`; ``path`` is relative to the manifest's folder, a
label column is empty where its track does not apply, and any further columns
(the spoken text, the voice, the source file) are kept in ``ClipRecord.meta``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ard_core.durable import atomic_path, write_bytes

TRACKS: tuple[str, ...] = ("gender", "language", "emotion", "animal", "sound_event")
"""The label tracks, mirroring SAKURA's attributes plus sound events."""

SPLITS: tuple[str, ...] = ("train", "probe", "test")
"""train: fits models and SAEs; probe: finds representative clips; test: held out for evaluation."""

MANIFEST_COLUMNS: tuple[str, ...] = (
    "clip_id", "path", "dataset", "split", "duration_s", *TRACKS, "caption",
)

LABEL_VOCAB: dict[str, tuple[str, ...]] = {
    "gender": ("male", "female"),
    "language": ("English", "German", "Spanish", "French", "Italian", "Chinese", "Japanese", "Korean"),
    "emotion": ("angry", "disgust", "fear", "happy", "sad", "neutral"),
}
"""Closed vocabularies (exact strings) of the tracks that have one; animal and
sound_event labels are open lowercase names."""

SPANS_COLUMN = "spans"
"""Optional column: JSON {track: [[start_s, end_s], ...]}, where in the clip each labelled track's
sound is (a bark inside speech covers a part of the clip, the speech all of it). Empty or absent
when the dataset does not say (the loaders of real datasets)."""

MULTI_LABEL_SEP = ";"
"""Separator inside one label cell when a clip has several labels of a track (FSD50K)."""


class ManifestError(ValueError):
    """A manifest file is malformed; the message names the file, row and fix."""


@dataclass(frozen=True)
class ClipRecord:
    """One clip of a probing dataset."""

    clip_id: str
    """Unique id within the dataset (stable across rebuilds)."""
    path: Path
    """Absolute path of the audio file."""
    dataset: str
    """Name of the dataset the clip came from (e.g. 'mini', 'iemocap')."""
    split: str
    """One of :data:`SPLITS`."""
    duration_s: float
    """Duration in seconds (0.0 when the source metadata does not say)."""
    labels: dict[str, str]
    """Track -> label, only for the tracks that apply to this clip."""
    caption: str
    """Reference description written from the labels (or the dataset's own caption)."""
    meta: dict[str, str] = field(default_factory=dict)
    """Extra per-clip fields (spoken text, voice, source file, speaker, ...)."""
    spans: dict[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    """Track -> the (start_s, end_s) segments where its label sounds; {} when unknown."""

    def label_set(self, track: str) -> tuple[str, ...]:
        """The labels of ``track`` as a tuple (several for multi-label datasets, none if absent)."""
        value = self.labels.get(track, "")
        return tuple(v for v in value.split(MULTI_LABEL_SEP) if v)


def _read_rows(path: Path) -> list[dict[str, str]]:
    if path.suffix.lower() == ".parquet":
        import pandas as pd

        frame = pd.read_parquet(path).fillna("")
        return [{k: ("" if v is None else str(v)) for k, v in row.items()}
                for row in frame.to_dict(orient="records")]
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def load_manifest(path: str | Path) -> list[ClipRecord]:
    """Read a manifest (CSV or Parquet) into records with absolute paths.

    Raises :class:`ManifestError` on a missing column, an unknown split, a
    duplicate clip id or a non-numeric duration. Files are not opened here;
    use :func:`ard_core.audio.iter_audio` to decode them.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest '{path}' does not exist")
    rows = _read_rows(path)
    if not rows:
        raise ManifestError(f"manifest '{path}' has no rows")
    missing = [c for c in MANIFEST_COLUMNS if c not in rows[0]]
    if missing:
        raise ManifestError(f"manifest '{path}' lacks column(s) {missing}; "
                            f"expected {list(MANIFEST_COLUMNS)}")
    root = path.parent.resolve()
    records: list[ClipRecord] = []
    seen: set[str] = set()
    for i, row in enumerate(rows, start=2):  # row 1 is the header
        where = f"manifest '{path}' line {i}"
        clip_id = row["clip_id"].strip()
        if not clip_id:
            raise ManifestError(f"{where}: empty clip_id")
        if clip_id in seen:
            raise ManifestError(f"{where}: duplicate clip_id {clip_id!r}")
        seen.add(clip_id)
        if row["split"] not in SPLITS:
            raise ManifestError(f"{where}: split {row['split']!r} is not one of {SPLITS}")
        try:
            duration = float(row["duration_s"] or 0.0)
        except ValueError:
            raise ManifestError(f"{where}: duration_s {row['duration_s']!r} is not a number") from None
        if not math.isfinite(duration) or duration < 0:
            raise ManifestError(f"{where}: duration_s {duration} must be finite and >= 0")
        labels = {t: row[t].strip() for t in TRACKS if (row.get(t) or "").strip()}
        meta = {k: v for k, v in row.items() if k not in MANIFEST_COLUMNS and k != SPANS_COLUMN and k and v}
        spans = _parse_spans(row.get(SPANS_COLUMN) or "", labels, duration, where)
        records.append(ClipRecord(
            clip_id=clip_id,
            path=(root / row["path"]).resolve(),
            dataset=row["dataset"],
            split=row["split"],
            duration_s=duration,
            labels=labels,
            caption=row["caption"],
            meta=meta,
            spans=spans,
        ))
    return records


def _parse_spans(text: str, labels: dict[str, str], duration: float, where: str) -> dict[str, tuple]:
    """The ``spans`` cell: JSON {track: [[start, end], ...]} over the clip's labelled tracks."""
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
        spans = {t: tuple((float(a), float(b)) for a, b in segs) for t, segs in raw.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise ManifestError(f"{where}: spans {text[:80]!r} is not JSON {{track: [[start_s, end_s], ...]}} "
                            f"({exc})") from None
    for track, segs in spans.items():
        if track not in labels:
            raise ManifestError(f"{where}: spans names track {track!r}, which the clip has no label for")
        for a, b in segs:
            if not 0 <= a < b <= duration + 0.01:
                raise ManifestError(f"{where}: span {a}-{b} s of {track!r} is not inside the clip (0-{duration} s)")
    return spans


def _spans_cell(spans: dict[str, tuple[tuple[float, float], ...]]) -> str:
    return json.dumps({t: [[a, b] for a, b in segs] for t, segs in sorted(spans.items())},
                      separators=(",", ":")) if spans else ""


def _rows(records: Iterable[ClipRecord], root: Path) -> tuple[list[str], list[list[str]]]:
    records = list(records)
    meta_cols = sorted({k for r in records for k in r.meta})
    with_spans = any(r.spans for r in records)  # real datasets' manifests keep their old columns
    header = [*MANIFEST_COLUMNS, *([SPANS_COLUMN] if with_spans else []), *meta_cols]
    rows = []
    for r in records:
        # Relative even when the clip lies outside the manifest's folder (a run
        # dir's copy points back into assets/), so a checkout can move as a whole.
        rel = Path(os.path.relpath(Path(r.path).resolve(), root.resolve())).as_posix()
        rows.append([r.clip_id, rel, r.dataset, r.split, f"{r.duration_s:.3f}",
                     *(r.labels.get(t, "") for t in TRACKS), r.caption,
                     *([_spans_cell(r.spans)] if with_spans else []),
                     *(r.meta.get(k, "") for k in meta_cols)])
    return header, rows


def manifest_bytes(records: Iterable[ClipRecord], root: Path) -> bytes:
    """The CSV text of ``records`` with paths relative to ``root`` (what :func:`save_manifest` writes)."""
    header, rows = _rows(records, Path(root))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def save_manifest(records: Iterable[ClipRecord], path: str | Path) -> Path:
    """Write ``records`` as CSV (or Parquet by suffix) with paths relative to the file's folder, atomically."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        import pandas as pd

        header, rows = _rows(records, path.parent)
        with atomic_path(path) as tmp:
            pd.DataFrame(rows, columns=header).to_parquet(tmp, index=False)
    else:
        write_bytes(path, manifest_bytes(records, path.parent))
    return path


def manifest_hash(records: Iterable[ClipRecord], root: str | Path) -> str:
    """SHA-256 of the manifest CSV for ``records`` (paths relative to ``root``)."""
    return hashlib.sha256(manifest_bytes(records, Path(root))).hexdigest()
