"""ard_core.audio: the one loader (rates, channels, formats) and its error handling."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ard_core.audio import AudioError, audio_info, iter_audio, load_audio, save_audio
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
