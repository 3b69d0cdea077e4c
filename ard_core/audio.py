"""Audio I/O: the one loader every stage uses.

:func:`load_audio` returns float32 mono at the requested rate (16 kHz by default)
or raises :class:`AudioError` naming the file; :func:`iter_audio` walks a list of
clip records and skips (and logs) the clips that fail, so one bad file never
stops a dataset-level pass. :func:`save_audio` writes the formats the corpus
uses (WAV, FLAC, OGG/Vorbis) from float arrays.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, NamedTuple

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ard_core.datasets import ClipRecord

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
"""The rate every model in the project reads (Whisper / Qwen2-Audio front ends)."""


class AudioError(ValueError):
    """A file could not be used as audio; the message names the file and why."""


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """Read ``path`` with soundfile (libsndfile reads WAV/FLAC/OGG and, >= 1.1, MP3)."""
    import soundfile as sf

    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/TypeError
        raise AudioError(f"audio file '{path}' could not be decoded ({exc}); "
                         "is it a truncated or non-audio file?") from exc
    return data, int(sr)


def load_audio(path: str | Path, sr: int = SAMPLE_RATE, *, mono: bool = True) -> np.ndarray:
    """Load ``path`` as float32 samples at rate ``sr``.

    Stereo (or more channels) is averaged to mono. Raises :class:`AudioError`
    when the file is missing, empty, truncated, not audio, or holds NaN/inf.
    Returns shape ``(n_samples,)`` (or ``(n_samples, channels)`` with mono=False).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file '{path}' does not exist")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file '{path}' is empty (0 bytes)")
    data, file_sr = _decode(path)  # (n, channels)
    if data.shape[0] == 0:
        raise AudioError(f"audio file '{path}' has 0 samples")
    if not np.isfinite(data).all():
        raise AudioError(f"audio file '{path}' contains NaN or inf samples")
    out = data.mean(axis=1) if mono else data
    if file_sr != sr:
        import librosa

        # librosa resamples along the last axis; channels-first for the multichannel case.
        out = librosa.resample(out if mono else out.T, orig_sr=file_sr, target_sr=sr,
                               res_type="soxr_hq")
        out = out if mono else out.T
    return np.ascontiguousarray(out, dtype=np.float32)


def audio_info(path: str | Path) -> tuple[int, int, int]:
    """(sample_rate, channels, frames) of ``path`` without decoding it; AudioError on failure."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise AudioError(f"audio file '{path}' could not be opened ({exc})") from exc
    return int(info.samplerate), int(info.channels), int(info.frames)


def save_audio(path: str | Path, audio: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write mono float audio; the format follows the suffix (.wav 16-bit, .flac, .ogg Vorbis)."""
    import soundfile as sf

    path = Path(path)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise AudioError(f"cannot write '{path}': expected non-empty mono audio, got shape {audio.shape}")
    if not np.isfinite(audio).all():
        raise AudioError(f"cannot write '{path}': audio contains NaN or inf")
    suffix = path.suffix.lower()
    kwargs = {
        ".wav": dict(format="WAV", subtype="PCM_16"),
        ".flac": dict(format="FLAC", subtype="PCM_16"),
        ".ogg": dict(format="OGG", subtype="VORBIS"),
    }.get(suffix)
    if kwargs is None:
        raise AudioError(f"cannot write '{path}': unsupported suffix {suffix!r} (use .wav, .flac or .ogg)")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(audio, -1.0, 1.0), sr, **kwargs)


class LoadedClip(NamedTuple):
    """A clip record with its decoded samples (float32, mono, at ``sr``)."""

    record: "ClipRecord"
    audio: np.ndarray  # (n_samples,)


def iter_audio(records: Iterable["ClipRecord"], sr: int = SAMPLE_RATE) -> Iterator[LoadedClip]:
    """Yield (record, audio) for every record whose file loads; log and skip the rest."""
    n_bad = 0
    for rec in records:
        try:
            audio = load_audio(rec.path, sr=sr)
        except AudioError as exc:
            n_bad += 1
            log.warning("clip %r skipped: %s", rec.clip_id, exc)
            continue
        yield LoadedClip(rec, audio)
    if n_bad:
        log.warning("%d clip(s) skipped because their audio could not be loaded", n_bad)
