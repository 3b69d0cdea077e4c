"""Synthesized sound events of the mini corpus (no source files, no licenses).

Each generator takes a generator ``rng`` and a length in samples and returns
float32 audio at 16 kHz; every parameter (frequencies, rates, counts, timing)
is drawn from ``rng`` so two clips of a class differ the way two recordings of
one kind of sound would.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import signal as sps

from forge.corpus import augment as aug

SR = aug.SR


def _harmonic_tone(freq: np.ndarray, n_harm: int, rng: np.random.Generator) -> np.ndarray:
    """A tone following the instantaneous frequency ``freq`` (Hz per sample) with 1/k harmonics."""
    phase = 2 * np.pi * np.cumsum(freq) / SR
    out = np.zeros_like(phase)
    for k in range(1, n_harm + 1):
        if np.max(freq) * k < SR / 2 - 500:
            out += np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k
    return out.astype(np.float32)


def siren(rng: np.random.Generator, n: int) -> np.ndarray:
    """A wail (slow sweep) or yelp (fast sweep) between two pitches."""
    t = np.arange(n) / SR
    low, high = rng.uniform(450, 800), rng.uniform(1000, 1600)
    rate = rng.uniform(0.25, 0.8) if rng.random() < 0.5 else rng.uniform(2.5, 5.0)
    sweep = 0.5 - 0.5 * np.cos(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    x = _harmonic_tone(low + (high - low) * sweep, int(rng.integers(2, 6)), rng)
    return x * (1.0 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t)).astype(np.float32)


def engine(rng: np.random.Generator, n: int) -> np.ndarray:
    """Idling or revving engine: a low firing-rate harmonic series plus rumble."""
    t = np.arange(n) / SR
    f0 = rng.uniform(22, 60)
    drift = 1.0 + rng.uniform(0.0, 0.4) * np.clip(t / (n / SR) - rng.uniform(0, 0.6), 0, None)
    wobble = 1.0 + 0.02 * np.sin(2 * np.pi * rng.uniform(0.5, 3.0) * t)
    x = _harmonic_tone(f0 * drift * wobble, 25, rng)
    rumble = aug.colored_noise(n, rng, "brown")
    sos = sps.butter(2, rng.uniform(300, 1500), btype="lowpass", fs=SR, output="sos")
    x = sps.sosfilt(sos, x + rng.uniform(0.2, 1.5) * rumble * aug.rms(x))
    # a resonance of the body/exhaust at a random frequency: engines differ in timbre
    res = sps.butter(2, sorted(rng.uniform(80, 600) * np.array([0.8, 1.25])), btype="bandpass",
                     fs=SR, output="sos")
    x = x + rng.uniform(1.0, 4.0) * sps.sosfilt(res, x)
    return x.astype(np.float32)


def rain(rng: np.random.Generator, n: int) -> np.ndarray:
    """Rain-like noise: a filtered hiss and a random shower of short drop transients."""
    hiss = aug.colored_noise(n, rng, str(rng.choice(["white", "pink"])))
    sos = sps.butter(2, [rng.uniform(400, 1500), rng.uniform(5000, 7500)], btype="bandpass",
                     fs=SR, output="sos")
    hiss = sps.sosfilt(sos, hiss) * rng.uniform(0.2, 0.6)
    drops = np.zeros(n)
    n_drops = int(rng.uniform(40, 250) * n / SR)
    idx = rng.integers(0, n, n_drops)
    drops[idx] = rng.uniform(0.2, 1.0, n_drops) * rng.choice([-1, 1], n_drops)
    decay = np.exp(-np.arange(int(0.004 * SR)) / (0.0008 * SR))
    drops = np.convolve(drops, decay)[:n]
    sos_d = sps.butter(2, rng.uniform(1500, 4000), btype="highpass", fs=SR, output="sos")
    x = hiss + 3.0 * sps.sosfilt(sos_d, drops)
    return x.astype(np.float32)


def beep(rng: np.random.Generator, n: int) -> np.ndarray:
    """A run of electronic beeps (sine or square tone bursts) of one or two pitches."""
    pitches = rng.uniform(500, 2500, size=int(rng.integers(1, 3)))
    square = rng.random() < 0.4
    length = rng.uniform(0.06, 0.3)
    events = []
    for _ in range(int(rng.integers(2, 9))):
        m = int(length * SR)
        t = np.arange(m) / SR
        ph = 2 * np.pi * rng.choice(pitches) * t
        tone = np.sign(np.sin(ph)) * 0.5 if square else np.sin(ph)
        events.append(aug.fade(tone.astype(np.float32), 0.005))
    return aug.place(events, n, rng)


def chirp(rng: np.random.Generator, n: int) -> np.ndarray:
    """Rapid rising (or falling) electronic frequency sweeps."""
    events = []
    rising = rng.random() < 0.75
    for _ in range(int(rng.integers(3, 11))):
        m = int(rng.uniform(0.04, 0.2) * SR)
        f1, f2 = rng.uniform(800, 2500), rng.uniform(3000, 7000)
        if not rising:
            f1, f2 = f2, f1
        t = np.arange(m) / SR
        sw = sps.chirp(t, f0=f1, t1=t[-1], f1=f2, method="logarithmic")
        events.append(aug.fade((sw * np.hanning(m)).astype(np.float32), 0.003))
    return aug.place(events, n, rng)


def knocking(rng: np.random.Generator, n: int) -> np.ndarray:
    """Knocks on a door: short noise strikes exciting two damped wooden resonances."""
    modes = [(rng.uniform(90, 250), rng.uniform(0.02, 0.06)), (rng.uniform(500, 1200), rng.uniform(0.01, 0.03))]
    m = int(0.15 * SR)
    t = np.arange(m) / SR
    events = []
    for _ in range(int(rng.integers(2, 7))):
        body = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.28)) * np.exp(-t / d) for f, d in modes)
        strike = rng.standard_normal(m) * np.exp(-t / 0.003)
        events.append((body + 0.5 * strike).astype(np.float32) * rng.uniform(0.6, 1.0))
    # knocks come in quick groups: place with short gaps
    out = np.zeros(n, dtype=np.float32)
    pos = int(rng.uniform(0.0, 0.3) * SR)
    for ev in events:
        if pos + m > n:
            break
        out[pos : pos + m] += ev
        pos += int(rng.uniform(0.12, 0.35) * SR)
    return out


GENERATORS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "siren": siren, "engine": engine, "rain": rain, "beep": beep, "chirp": chirp, "knocking": knocking,
}
CAPTIONS: dict[str, str] = {
    "siren": "a siren wailing", "engine": "an engine running", "rain": "rain falling",
    "beep": "electronic beeping", "chirp": "rapid electronic chirps", "knocking": "knocking on a door",
}
