"""ard_core.audio: the one loader (rates, channels, formats) and its error handling."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ard_core.audio import (
    AudioError,
    AudioLimits,
    audio_info,
    check_upload,
    iter_audio,
    load_audio,
    load_upload,
    save_audio,
    sniff_format,
)
from ard_core.datasets import ClipRecord

ANIMALS = Path(__file__).resolve().parents[1] / "assets" / "corpus" / "sources" / "animals"


def _sine(freq: float, sr: int, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, sr: int = 16000) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)])


def test_stereo_44k_is_averaged_and_resampled(tmp_path: Path) -> None:
    left, right = _sine(1000, 44100), _sine(1000, 44100) * 0.5
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    got = load_audio(path)
    assert got.dtype == np.float32 and got.ndim == 1
    assert len(got) == 8000  # 0.5 s at 16 kHz
    assert abs(_peak_hz(got) - 1000) < 5
    # averaging the channels: amplitude 0.4 * (1 + 0.5) / 2 = 0.3 (away from the resampler's edges)
    assert np.max(np.abs(got[1000:-1000])) == pytest.approx(0.3, abs=0.01)


def test_16k_mono_passes_through_unchanged(tmp_path: Path) -> None:
    x = _sine(440, 16000)
    path = tmp_path / "m.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path), x)


def test_keep_channels(tmp_path: Path) -> None:
    x = np.stack([_sine(440, 16000), _sine(880, 16000)], axis=1)
    path = tmp_path / "s.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    got = load_audio(path, mono=False)
    assert got.shape == (8000, 2)
    np.testing.assert_allclose(got, x, atol=1e-7)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_save_load_round_trip(tmp_path: Path, suffix: str) -> None:
    x = _sine(600, 16000, 1.0)
    save_audio(tmp_path / f"x{suffix}", x)
    got = load_audio(tmp_path / f"x{suffix}")
    assert len(got) == len(x)  # Vorbis keeps the exact length through its granule positions
    tol = 0.05 if suffix == ".ogg" else 1e-3
    assert np.max(np.abs(got - x)) < tol
    assert audio_info(tmp_path / f"x{suffix}") == (16000, 1, 16000)


def test_mp3_decodes() -> None:
    got = load_audio(ANIMALS / "sheep.mp3")
    assert got.dtype == np.float32 and got.ndim == 1
    assert 0.8 < len(got) / 16000 < 1.1  # the file is 0.92 s at 48 kHz
    assert np.isfinite(got).all() and np.max(np.abs(got)) > 0.05


def _truncated_wav(path: Path) -> None:
    sf.write(path, _sine(440, 16000), 16000)
    path.write_bytes(path.read_bytes()[:30])  # the header is cut inside the fmt chunk


def _nan_wav(path: Path) -> None:
    x = _sine(440, 16000)
    x[100] = np.nan
    sf.write(path, x, 16000, subtype="FLOAT")


def _zero_samples(path: Path) -> None:
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)


@pytest.mark.parametrize("make, why", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_text("this is plainly not audio\n" * 20), "decoded"),
    (_truncated_wav, "decoded"),
    (_nan_wav, "NaN"),
    (_zero_samples, "0 samples"),
])
def test_bad_files_raise_naming_the_file(tmp_path: Path, make, why: str) -> None:
    path = tmp_path / "bad_clip.wav"
    make(path)
    with pytest.raises(AudioError, match=why) as info:
        load_audio(path)
    assert "bad_clip.wav" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="does not exist"):
        load_audio(tmp_path / "nope.wav")


def test_save_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="NaN"):
        save_audio(tmp_path / "a.wav", np.array([0.0, np.inf], dtype=np.float32))
    with pytest.raises(AudioError, match="suffix"):
        save_audio(tmp_path / "a.aiff", np.zeros(10, dtype=np.float32))


def test_iter_audio_skips_and_logs_bad_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = []
    for i in range(3):
        save_audio(tmp_path / f"g{i}.wav", _sine(300 + 100 * i, 16000))
        good.append(ClipRecord(f"g{i}", tmp_path / f"g{i}.wav", "t", "train", 0.5, {}, "tone"))
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEfmt ")
    bad = ClipRecord("bad", tmp_path / "bad.wav", "t", "train", 0.5, {}, "broken")
    with caplog.at_level(logging.WARNING, logger="ard_core.audio"):
        out = list(iter_audio([good[0], bad, good[1], good[2]]))
    assert [c.record.clip_id for c in out] == ["g0", "g1", "g2"]
    assert abs(_peak_hz(out[2].audio) - 500) < 5
    assert any("bad" in r.getMessage() and "bad.wav" in r.getMessage() for r in caplog.records)


# -- files from users: load_upload ------------------------------------------------------------
def _write(path: Path, x: np.ndarray, sr: int, **kw) -> Path:
    sf.write(path, x, sr, **kw)
    return path


def test_sniff_format_reads_magic_bytes_not_suffixes(tmp_path: Path) -> None:
    cases = {"WAV": dict(format="WAV"), "FLAC": dict(format="FLAC"), "OGG": dict(format="OGG", subtype="VORBIS"),
             "MP3": dict(format="MP3"), "AIFF": dict(format="AIFF")}
    for want, kw in cases.items():
        path = _write(tmp_path / "clip.bin", _sine(440, 16000), 16000, **kw)  # the suffix says nothing
        assert sniff_format(path.read_bytes()[:16]) == want
    assert sniff_format(b"this is not audio") is None
    assert sniff_format(b"\xff\xf1\x50\x80") is None  # AAC/ADTS frame sync (layer bits 00), not MP3
    assert sniff_format(b"") is None


def _all_nan_wav() -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, np.full(8000, np.nan, dtype=np.float32), 16000, format="WAV", subtype="FLOAT")
    return buf.getvalue()


@pytest.mark.parametrize("make, why", [
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.write_text("this is plainly not audio\n" * 20), "not an audio file"),
    (lambda p: p.write_bytes(b"\x1aE\xdf\xa3" + bytes(200)), "WebM"),
    (lambda p: p.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200)), "MP4"),
    (_truncated_wav, "header cannot be read"),
    (_zero_samples, "0 samples"),
    (lambda p: p.write_bytes(_all_nan_wav()), "NaN"),
])
def test_upload_refusals_name_the_file_and_the_fix(tmp_path: Path, make, why: str) -> None:
    path = tmp_path / "upload.wav"
    make(path)
    with pytest.raises(AudioError, match=why) as info:
        load_upload(path)
    msg = str(info.value)
    assert "'upload.wav'" in msg
    assert str(tmp_path) not in msg  # server folders never reach the user
    assert any(fix in msg for fix in ("upload", "export", "WAV"))


def test_upload_size_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    path = _write(tmp_path / "big.wav", _sine(440, 16000, 2.0), 16000)
    limits = AudioLimits(max_bytes=path.stat().st_size - 1)
    with pytest.raises(AudioError, match=r"'big.wav' is .* MB, over the .* MB limit"):
        check_upload(path, limits)
    assert load_upload(path, limits=AudioLimits(max_bytes=path.stat().st_size)).audio.size == 32000


def test_long_upload_is_cut_to_the_cap_with_a_notice(tmp_path: Path) -> None:
    sr = 8000
    x = _sine(300, sr, 600.0)  # a 10-minute clip
    path = _write(tmp_path / "lecture.wav", x, sr)
    got = load_upload(path, limits=AudioLimits(max_seconds=30))
    assert got.file.seconds == pytest.approx(600.0)
    assert got.audio.size == 30 * 16000  # only the first 30 s, at the model's rate
    assert got.notices == ("'lecture.wav' is 600.0 s long; only its first 30 s are used.",)
    # the decoded part equals the plain loader's first 30 s (reference: whole file, then cut)
    np.testing.assert_allclose(got.audio[16000:-16000], load_audio(path)[16000:30 * 16000 - 16000], atol=1e-4)
    short = load_upload(_write(tmp_path / "short.wav", _sine(300, sr, 2.0), sr))
    assert short.notices == ()


def test_upload_channels_and_rate_are_normalised_like_load_audio(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    eight = rng.uniform(-0.5, 0.5, (16000, 8)).astype(np.float32)
    path = _write(tmp_path / "eight.wav", eight, 16000, subtype="FLOAT")
    got = load_upload(path)
    assert (got.file.channels, got.file.sample_rate) == (8, 16000)
    np.testing.assert_allclose(got.audio, eight.mean(axis=1), atol=1e-6)
    hi = _write(tmp_path / "hi.wav", _sine(1000, 192000, 1.0), 192000)
    got = load_upload(hi)
    assert got.file.sample_rate == 192000 and got.audio.size == 16000
    np.testing.assert_allclose(got.audio, load_audio(hi), atol=1e-5)
    assert _peak_hz(got.audio) == pytest.approx(1000, abs=5)


def test_upload_over_the_channel_or_rate_limit_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "wide.wav", np.zeros((100, 3), dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="3 channels; at most 2"):
        check_upload(path, AudioLimits(max_channels=2))
    with pytest.raises(AudioError, match="16000 Hz; at most 8000 Hz"):
        check_upload(path, AudioLimits(max_sample_rate=8000))


def test_mp3_upload_decodes(tmp_path: Path) -> None:
    path = _write(tmp_path / "tone.mp3", _sine(440, 16000, 1.0), 16000, format="MP3")
    got = load_upload(path)
    assert got.file.format == "MP3" and abs(got.audio.size - 16000) < 1200
    assert _peak_hz(got.audio[: 8192]) == pytest.approx(440, abs=10)


def test_audio_limits_validate() -> None:
    for bad in (dict(max_bytes=0), dict(max_seconds=0), dict(max_seconds=float("nan")), dict(max_channels=0)):
        with pytest.raises(ValueError, match="AudioLimits"):
            AudioLimits(**bad)


def test_log_mel_equals_librosa() -> None:
    """The one mel spectrogram, against librosa's: the app's window (512) and the corpus check's (400, 25 ms)."""
    import librosa

    from ard_core.audio import log_mel

    rng = np.random.default_rng(1)
    t = np.arange(16000 * 2) / 16000
    y = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    for n_fft in (None, 400):
        spec = log_mel(y, n_fft=n_fft)
        ref = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=16000, n_fft=n_fft or 512, hop_length=160,
                                                                 n_mels=64, fmax=8000), ref=np.max, top_db=80.0)
        assert spec.hop_s == 0.01 and spec.db.shape == ref.shape and spec.db.dtype == np.float32
        np.testing.assert_allclose(spec.db, ref, atol=1e-2)
        assert spec.db.max() == 0.0 and spec.db.min() >= -80.0
    long = log_mel(np.tile(y, 10), max_frames=600)  # 20 s: a longer hop keeps the frame count bounded
    assert long.db.shape[1] <= 601 and long.hop_s * long.db.shape[1] == pytest.approx(20.0, abs=2 * long.hop_s)

