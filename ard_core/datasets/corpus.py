"""Verify a built mini corpus against its own build record, before a run reads it.

``python -m forge corpus`` writes a corpus folder: ``clips/``, ``manifest.csv``
and ``build.json`` (the build settings, the clip count and the manifest's hash).
The pipeline never builds; it only checks that the folder is still what the
build wrote: the manifest hashes to the recorded value (no row was edited) and
every file it names is 16 kHz mono of the stated duration (none was replaced
or truncated). So a run needs neither the build settings nor espeak-ng.
"""

from __future__ import annotations

import json
from pathlib import Path

from ard_core.audio import SAMPLE_RATE, AudioError, audio_info, load_audio
from ard_core.datasets.manifest import ClipRecord, load_manifest, manifest_hash

BUILD_FILE = "build.json"
REBUILD = "rebuild it with `python -m forge corpus` (needs espeak-ng)"


class CorpusMismatch(ValueError):
    """A built corpus does not match its build record or its files are broken; the message says how."""


def read_build_info(corpus_dir: str | Path) -> dict:
    """``build.json`` of a built corpus: settings, ``n_clips``, ``manifest_sha256``, tool versions."""
    path = Path(corpus_dir) / BUILD_FILE
    if not path.is_file():
        raise CorpusMismatch(f"no built corpus in '{corpus_dir}' (manifest.csv and {BUILD_FILE}); "
                             "build it with `python -m forge corpus`")
    return json.loads(path.read_text())


def _check_file(rec: ClipRecord, decode: bool) -> None:
    try:
        if decode:
            sr, ch, frames = SAMPLE_RATE, 1, len(load_audio(rec.path))
        else:
            sr, ch, frames = audio_info(rec.path)
    except AudioError as exc:
        raise CorpusMismatch(f"clip {rec.clip_id!r}: {exc}; {REBUILD}") from exc
    if sr != SAMPLE_RATE or ch != 1 or abs(frames / sr - rec.duration_s) > 0.002:
        raise CorpusMismatch(f"clip {rec.clip_id!r} ('{rec.path}') is {sr} Hz x {ch} ch, "
                             f"{frames / sr:.3f} s; the manifest says 16000 Hz mono {rec.duration_s} s")


def verify_corpus(corpus_dir: str | Path, *, decode: bool = False) -> list[ClipRecord]:
    """Check a built corpus against its own ``build.json``; return its records.

    Checks that the manifest hash is the recorded one and that every file is
    16 kHz mono of the stated duration (header only, or fully decoded with
    ``decode=True``).
    """
    corpus_dir = Path(corpus_dir)
    manifest_path = corpus_dir / "manifest.csv"
    info = read_build_info(corpus_dir)
    if not manifest_path.is_file():
        raise CorpusMismatch(f"'{corpus_dir}' has {BUILD_FILE} but no manifest.csv; {REBUILD}")
    records = load_manifest(manifest_path)
    got = manifest_hash(records, corpus_dir)
    if got != info.get("manifest_sha256"):
        raise CorpusMismatch(f"'{manifest_path}' was edited after the build (hash {got[:12]} != "
                             f"{str(info.get('manifest_sha256'))[:12]}); {REBUILD}")
    for rec in records:
        _check_file(rec, decode)
    return records
