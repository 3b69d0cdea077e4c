"""Audio I/O: the one loader every stage uses.

:func:`load_audio` returns float32 mono at the requested rate (16 kHz by default)
or raises :class:`AudioError` naming the file; :func:`iter_audio` walks a list of
clip records and skips (and logs) the clips that fail, so one bad file never
stops a dataset-level pass. :func:`save_audio` writes the formats the corpus
uses (WAV, FLAC, OGG/Vorbis) from float arrays.

Files from users (the app's uploads) go through :func:`load_upload` instead: it
checks the file against :class:`AudioLimits` before decoding anything (size, type
by magic bytes, header, channels, sample rate), decodes at most ``max_seconds``
in blocks so memory stays bounded whatever the header claims, and returns the
notices to show (a clip cut to the cap).

:func:`log_mel` is the project's one mel spectrogram (the app's clip plots, the
mini corpus's quality check).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
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
    return _resample(data.mean(axis=1) if mono else data, file_sr, sr)


def _resample(x: np.ndarray, file_sr: int, sr: int) -> np.ndarray:
    """``x`` (n,) or (n, channels) from ``file_sr`` to ``sr``, as contiguous float32."""
    if file_sr != sr:
        import librosa

        # librosa resamples along the last axis; channels-first for the multichannel case.
        x = librosa.resample(x if x.ndim == 1 else x.T, orig_sr=file_sr, target_sr=sr, res_type="soxr_hq")
        x = x if x.ndim == 1 else x.T
    return np.ascontiguousarray(x, dtype=np.float32)


def audio_info(path: str | Path) -> tuple[int, int, int]:
    """(sample_rate, channels, frames) of ``path`` without decoding it; AudioError on failure."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise AudioError(f"audio file '{path}' could not be opened ({exc})") from exc
    return int(info.samplerate), int(info.channels), int(info.frames)


# -- files from users ------------------------------------------------------------------
READABLE = "WAV, FLAC, OGG, MP3 or AIFF"
"""The containers :func:`load_upload` accepts (what libsndfile >= 1.1 decodes)."""


@dataclass(frozen=True)
class AudioLimits:
    """What a user's audio file may be; checked before any decoding."""

    max_bytes: int = 50 * 1024 * 1024
    """Largest file accepted, in bytes (the app also hands it to Gradio as its upload limit)."""
    max_seconds: float = 30.0
    """Longer clips are cut to their first ``max_seconds``, with a notice (bounds memory and model time)."""
    max_channels: int = 64
    """More channels than this are refused: mixing to mono reads every one of them."""
    max_sample_rate: int = 384_000
    """Higher rates are refused: no recording needs more, and a forged header could claim anything."""

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ValueError(f"AudioLimits.max_bytes must be >= 1, got {self.max_bytes}")
        if not (np.isfinite(self.max_seconds) and self.max_seconds > 0):
            raise ValueError(f"AudioLimits.max_seconds must be a positive number of seconds, got {self.max_seconds}")
        if self.max_channels < 1 or self.max_sample_rate < 1:
            raise ValueError("AudioLimits.max_channels and max_sample_rate must be >= 1")


class AudioFile(NamedTuple):
    """What the header of a checked file says."""

    name: str
    format: str  # one of READABLE, from the magic bytes
    sample_rate: int
    channels: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


class LoadedUpload(NamedTuple):
    """A user's file decoded for the model."""

    audio: np.ndarray  # (n_samples,) float32 mono at the requested rate
    file: AudioFile
    notices: tuple[str, ...]
    """Things the user should be told (a clip cut to the cap), one sentence each."""


def sniff_format(head: bytes) -> str | None:
    """The container named by a file's first bytes, or None when it is not one of :data:`READABLE`."""
    if head[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "WAV"
    if head[:4] == b"fLaC":
        return "FLAC"
    if head[:4] == b"OggS":
        return "OGG"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF"
    # ID3 tag, or an MPEG audio frame sync whose layer bits are set (layer 00 is AAC/ADTS, not MP3)
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06):
        return "MP3"
    return None


def _unreadable(name: str, head: bytes) -> AudioError:
    if head[:4] == b"\x1aE\xdf\xa3":
        what = "a WebM/Matroska recording"
    elif head[4:8] == b"ftyp":
        what = "an MP4/M4A (AAC) file"
    else:
        what = f"not an audio file this app reads (it starts with {head[:12]!r})"
    return AudioError(f"'{name}' is {what}; upload {READABLE} instead (any audio editor or ffmpeg converts it)")


def check_upload(path: str | Path, limits: AudioLimits = AudioLimits(), name: str | None = None) -> AudioFile:
    """Check a user's file without decoding its samples: size, type by magic bytes, header.

    ``name`` is the name to show in messages (default: the file's own name; never
    the server-side folder). Raises :class:`AudioError` saying what is wrong and
    how to fix it.
    """
    import soundfile as sf

    path = Path(path)
    name = name or path.name
    if not path.is_file():
        raise AudioError(f"'{name}' did not arrive on the server; upload it again")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(f"'{name}' is empty (0 bytes); upload the audio file itself")
    if size > limits.max_bytes:
        raise AudioError(f"'{name}' is {size / 2**20:.1f} MB, over the {limits.max_bytes / 2**20:g} MB limit; "
                         "upload a shorter clip or a compressed one (FLAC, OGG or MP3)")
    with path.open("rb") as fh:
        head = fh.read(16)
    fmt = sniff_format(head)
    if fmt is None:
        raise _unreadable(name, head)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # LibsndfileError, RuntimeError
        why = str(exc).replace(str(path), name)  # the server's folders are none of the user's business
        raise AudioError(f"'{name}' starts like a {fmt} file but its header cannot be read ({why}); "
                         "it is truncated or damaged: export it again") from exc
    out = AudioFile(name, fmt, int(info.samplerate), int(info.channels), int(info.frames))
    if not 1 <= out.channels <= limits.max_channels:
        raise AudioError(f"'{name}' has {out.channels} channels; at most {limits.max_channels} are accepted: "
                         "mix it down to mono or stereo first")
    if not 1 <= out.sample_rate <= limits.max_sample_rate:
        raise AudioError(f"'{name}' has a sample rate of {out.sample_rate} Hz; at most {limits.max_sample_rate} Hz "
                         "is accepted: resample it first")
    if out.frames <= 0:
        raise AudioError(f"'{name}' holds no audio (0 samples); upload a clip with sound in it")
    return out


def load_upload(path: str | Path, sr: int = SAMPLE_RATE, limits: AudioLimits = AudioLimits(),
                name: str | None = None) -> LoadedUpload:
    """A user's file as float32 mono at ``sr``, at most ``limits.max_seconds`` long.

    Checks it first (:func:`check_upload`), then decodes it in one-second blocks,
    mixing channels to mono as it goes, so memory never exceeds the capped clip.
    Raises :class:`AudioError` for NaN/inf samples or a file that breaks off.
    """
    import soundfile as sf

    f = check_upload(path, limits, name)
    cap = int(limits.max_seconds * f.sample_rate)
    blocks: list[np.ndarray] = []
    n = 0
    try:
        with sf.SoundFile(str(path)) as snd:
            while n < cap:
                block = snd.read(min(f.sample_rate, cap - n), dtype="float32", always_2d=True)  # (t, channels)
                if block.shape[0] == 0:
                    break
                if not np.isfinite(block).all():
                    t = (n + np.flatnonzero(~np.isfinite(block).all(axis=1))[0]) / f.sample_rate
                    raise AudioError(f"'{f.name}' contains NaN or infinite samples (the first at {t:.3f} s); "
                                     "export it again as 16-bit PCM WAV")
                blocks.append(block.mean(axis=1))
                n += block.shape[0]
    except AudioError:
        raise
    except Exception as exc:  # LibsndfileError mid-stream
        why = str(exc).replace(str(path), f.name)
        raise AudioError(f"'{f.name}' could not be decoded after {n / f.sample_rate:.1f} s ({why}); "
                         "it is damaged: export it again") from exc
    if n == 0:
        raise AudioError(f"'{f.name}' holds no audio (0 samples could be decoded); upload a clip with sound in it")
    notices = []
    if f.frames > cap:
        notices.append(f"'{f.name}' is {f.seconds:.1f} s long; only its first {limits.max_seconds:g} s are used.")
    return LoadedUpload(_resample(np.concatenate(blocks), f.sample_rate, sr), f, tuple(notices))


def save_audio(path: str | Path, audio: np.ndarray, sr: int = SAMPLE_RATE,
               compression_level: float | None = None) -> None:
    """Write mono float audio; the format follows the suffix (.wav 16-bit, .flac, .ogg Vorbis).
    ``compression_level`` (0 best .. 1 smallest) goes to libsndfile for .ogg and .flac."""
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
    if compression_level is not None and suffix != ".wav":
        kwargs["compression_level"] = float(compression_level)
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


# -- spectrograms ----------------------------------------------------------------------
class MelSpectrogram(NamedTuple):
    db: np.ndarray  # (n_mels, frames) float32 dB: 0 at the loudest bin, -top_db at the floor
    hop_s: float  # seconds between frames


@functools.lru_cache(maxsize=8)
def _mel_filters(n_fft: int, sr: int, n_mels: int) -> tuple[np.ndarray, np.ndarray]:
    """(periodic Hann window (n_fft,), mel filterbank (n_mels, n_fft // 2 + 1)), as librosa makes them."""
    import librosa

    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    return window, librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmax=sr / 2).astype(np.float32)


def log_mel(y: np.ndarray, sr: int = SAMPLE_RATE, n_mels: int = 64, hop_s: float = 0.01, n_fft: int | None = None,
            max_frames: int | None = None, top_db: float = 80.0) -> MelSpectrogram:
    """Power mel spectrogram of mono ``y`` in dB below its loudest bin, floored at ``-top_db``.

    Equals ``librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft,
    hop_length=hop, n_mels=n_mels), ref=np.max, top_db=top_db)`` (centred frames, zero
    padding, periodic Hann window of n_fft samples) to about 0.01 dB, and takes a quarter
    of its time: the STFT is done here, and a feature page draws eight of these.

    ``n_fft``: window and FFT length in samples (default: the smallest power of two
    >= max(512, hop)). ``max_frames``: for a clip that would need more frames, the hop
    grows to fit, and a default window with it, so that no sample is skipped.
    """
    import scipy.fft

    hop = int(sr * hop_s)
    if max_frames:
        hop = max(hop, -(-y.size // max_frames))
    n_fft = n_fft or max(512, 1 << (hop - 1).bit_length())
    window, filters = _mel_filters(n_fft, sr, n_mels)
    padded = np.pad(np.asarray(y, np.float32), n_fft // 2)  # centred frames, zero padding (librosa's default)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]  # (frames, n_fft)
    power = np.abs(scipy.fft.rfft(frames * window, axis=1)) ** 2
    db = 10.0 * np.log10(np.maximum(filters @ power.T, 1e-10))
    return MelSpectrogram(np.maximum(db - db.max(), -top_db).astype(np.float32), hop / sr)
