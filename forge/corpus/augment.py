"""Signal helpers of the mini-corpus builder: augmentation, noise, placement.

Every function takes its randomness from a ``numpy.random.Generator`` passed in,
so a clip is a pure function of its own seed. Signals are float32 mono arrays
at :data:`ard_core.audio.SAMPLE_RATE`.
"""

from __future__ import annotations

import numpy as np
from scipy import signal as sps

from ard_core.audio import SAMPLE_RATE

SR = SAMPLE_RATE


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


def colored_noise(n: int, rng: np.random.Generator, color: str) -> np.ndarray:
    """Unit-RMS noise of ``color`` 'white' (flat), 'pink' (1/f) or 'brown' (1/f^2)."""
    white = rng.standard_normal(n)
    if color == "white":
        out = white
    else:
        exponent = {"pink": 0.5, "brown": 1.0}[color]
        spec = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n, 1.0 / SR)
        freqs[0] = freqs[1] if n > 1 else 1.0
        out = np.fft.irfft(spec / freqs**exponent, n)
    out = out - out.mean()
    return (out / (rms(out) + 1e-12)).astype(np.float32)


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Add ``noise`` scaled so that RMS(clean)/RMS(noise) equals ``snr_db``."""
    scale = rms(clean) / (rms(noise) * db_to_gain(snr_db))
    return (clean + scale * noise[: len(clean)]).astype(np.float32)


def random_eq(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random gentle colouring: a low-pass, a high-pass, or none (a different 'microphone')."""
    choice = rng.integers(3)
    if choice == 0:
        cutoff = rng.uniform(2500, 7000)
        sos = sps.butter(2, cutoff, btype="lowpass", fs=SR, output="sos")
    elif choice == 1:
        cutoff = rng.uniform(60, 300)
        sos = sps.butter(2, cutoff, btype="highpass", fs=SR, output="sos")
    else:
        return x
    return sps.sosfilt(sos, x).astype(np.float32)


def resample_ratio(x: np.ndarray, ratio: float) -> np.ndarray:
    """Play ``x`` ``ratio`` times faster (pitch and tempo together, like tape speed)."""
    if abs(ratio - 1.0) < 1e-4:
        return x
    n_out = max(1, int(round(len(x) / ratio)))
    return sps.resample(x, n_out).astype(np.float32)


def pitch_shift(x: np.ndarray, semitones: float) -> np.ndarray:
    """Shift pitch keeping duration (librosa's phase vocoder)."""
    if abs(semitones) < 1e-3:
        return x
    import librosa

    return librosa.effects.pitch_shift(x, sr=SR, n_steps=float(semitones)).astype(np.float32)


def time_stretch(x: np.ndarray, rate: float) -> np.ndarray:
    """Change tempo keeping pitch; rate > 1 is faster."""
    if abs(rate - 1.0) < 1e-3:
        return x
    import librosa

    return librosa.effects.time_stretch(x, rate=float(rate)).astype(np.float32)


def fade(x: np.ndarray, fade_s: float = 0.01) -> np.ndarray:
    """Short raised-cosine fade in and out, so crops do not click."""
    n = min(len(x) // 2, int(fade_s * SR))
    if n < 2:
        return x
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n))).astype(np.float32)
    y = x.copy()
    y[:n] *= ramp
    y[-n:] *= ramp[::-1]
    return y


def trim_silence(x: np.ndarray, top_db: float = 40.0) -> np.ndarray:
    """Drop leading and trailing silence (relative to the peak)."""
    import librosa

    y, _ = librosa.effects.trim(x, top_db=top_db, frame_length=512, hop_length=128)
    return y if len(y) else x


def random_crop(x: np.ndarray, n: int, rng: np.random.Generator, energy_floor: float = 0.2) -> np.ndarray:
    """A window of ``n`` samples from ``x`` whose RMS is at least ``energy_floor`` of the loudest window.

    Tries a few random offsets and keeps the first loud enough one, so crops of
    a long recording do not land on its silences.
    """
    if len(x) <= n:
        return x
    hop = max(1, n // 4)
    starts = np.arange(0, len(x) - n + 1, hop)
    energies = np.array([rms(x[s : s + n]) for s in starts])
    good = starts[energies >= energy_floor * energies.max()]
    start = int(rng.choice(good)) + int(rng.integers(0, hop))
    start = min(start, len(x) - n)
    return x[start : start + n]


def place(events: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """Lay ``events`` one after another at random gaps into a buffer of ``n`` samples.

    Events that would not fit are dropped (the first one is cropped to fit), so
    the result always has exactly ``n`` samples.
    """
    out = np.zeros(n, dtype=np.float32)
    pos = int(rng.uniform(0.0, 0.25) * SR)
    for i, ev in enumerate(events):
        if i == 0 and pos + len(ev) > n:
            pos = int(rng.integers(0, max(1, n - len(ev) + 1))) if len(ev) < n else 0
            ev = ev[: n - pos]
        if pos + len(ev) > n:
            break
        out[pos : pos + len(ev)] += ev
        pos += len(ev) + int(rng.uniform(0.05, 0.5) * SR)
    return out


def normalize_peak(x: np.ndarray, peak_db: float) -> np.ndarray:
    """Scale so the absolute peak sits at ``peak_db`` dBFS."""
    peak = float(np.max(np.abs(x))) + 1e-9
    return (x * (db_to_gain(peak_db) / peak)).astype(np.float32)


def fit_length(x: np.ndarray, min_s: float, max_s: float) -> np.ndarray:
    """Crop to ``max_s`` (with a fade-out) or pad with silence to ``min_s``."""
    max_n, min_n = int(round(max_s * SR)), int(round(min_s * SR))
    if len(x) > max_n:
        x = fade(x[:max_n], 0.03)
    if len(x) < min_n:
        x = np.concatenate([x, np.zeros(min_n - len(x), dtype=np.float32)])
    return x.astype(np.float32)


def active_segments(x: np.ndarray, top_db: float = 30.0, min_gap_s: float = 0.3,
                    min_len_s: float = 0.05) -> list[tuple[float, float]]:
    """Where ``x`` sounds: (start_s, end_s) segments of its 20 ms RMS envelope within ``top_db`` of
    the loudest frame, gaps shorter than ``min_gap_s`` bridged and blips shorter than ``min_len_s``
    dropped. Called on a clip's clean component before noise is mixed in, so each label's span is
    where its sound is, not where the background is."""
    hop, win = int(0.01 * SR), int(0.02 * SR)
    if len(x) < win:
        return [(0.0, round(len(x) / SR, 2))] if len(x) else []
    frames = np.lib.stride_tricks.sliding_window_view(np.asarray(x, np.float64), win)[::hop]
    env = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    on = env >= env.max() - top_db
    segs: list[list[int]] = []
    for i in np.flatnonzero(on):
        if segs and i - segs[-1][1] <= min_gap_s / 0.01:
            segs[-1][1] = int(i)
        else:
            segs.append([int(i), int(i)])
    out = []
    for a, b in segs:
        start, end = a * hop / SR, min(len(x), b * hop + win) / SR
        if end - start >= min_len_s:
            out.append((round(start, 2), round(end, 2)))
    return out


def no_clip(x: np.ndarray, peak: float = 0.98) -> np.ndarray:
    """Scale down a clip whose peak would clip at ``peak``; leave any other alone."""
    top = float(np.max(np.abs(x))) if len(x) else 0.0
    return (x * (peak / top) if top > peak else x).astype(np.float32)
