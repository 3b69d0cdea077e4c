"""Synthetic speech for the mini corpus: espeak-ng in 8 languages with acted prosody.

Each clip is one sentence (:mod:`forge.corpus.sentences`: hundreds per language from
templates) read by one of 46 male or 16 female espeak-ng voice variants at a random base
pitch and rate; the test split hears only sentences and variants that training never
does. The emotion is
*acted prosody*: espeak's pitch, rate, amplitude and SSML pitch range plus
post-processing (saturation for angry, a dark filter for sad, tremolo and
vibrato for fear, a creaky pulse modulation for disgust). It is not recorded
emotion, and the data card says so.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np
from scipy import signal as sps

from forge.corpus import augment as aug

ESPEAK = "espeak-ng"

# label -> espeak voice. Chinese needs the pinyin voice: the plain 'cmn' voice
# of espeak-ng 1.51 reads the tone digits of its own dictionary as English numbers.
ESPEAK_VOICES: dict[str, str] = {
    "English": "en-us", "German": "de", "Spanish": "es", "French": "fr-fr",
    "Italian": "it", "Chinese": "cmn-latn-pinyin", "Japanese": "ja", "Korean": "ko",
}
# espeak-ng voice variants (the `+name` of `-v LANG+name`; file names under espeak-ng-data/voices/!v),
# chosen by their measured pitch (median F0 of an English sentence at -p 50: male 77-129 Hz, female
# 173-264 Hz; variants whose gender is unclear, such as 'zac' (349 Hz) or 'shelby' (180 Hz, listed as
# male), and the robot/whisper/croak effects are left out). The test split speaks only with the
# "test" variants, so a test clip's voice is one the models never heard in training.
VOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "male": {
        "train": ("m1", "m2", "m3", "m4", "m5", "adam", "Alex", "Andy", "boris", "caleb", "david", "ed", "john",
                  "max", "paul", "robert", "Jacky", "Mario", "pablo", "marcelo", "miguel", "Henrique", "Gene",
                  "iven", "kaukovalta", "norbert", "travis", "edward"),
        "test": ("m6", "m7", "m8", "rob", "quincy", "pedro", "michel", "Denis", "Gene2", "Lee", "victor", "sandro",
                 "antonio", "benjamin", "gustave", "iven2", "Mike", "Michael"),
    },
    "female": {
        "train": ("f1", "f2", "f3", "Alicia", "Annie", "belinda", "steph", "steph3", "grandma"),
        "test": ("f4", "f5", "Andrea", "aunty", "anika", "linda", "steph2"),
    },
}
PITCH_RANGE: dict[str, tuple[int, int]] = {"male": (20, 70), "female": (30, 80)}
"""Base espeak pitch (-p, 0-99) per gender, drawn per clip before the emotion's offset."""
RATE_RANGE: tuple[float, float] = (120.0, 210.0)
"""Base speaking rate in words per minute, drawn per clip before the emotion's factor."""


def voice_pool(gender: str, split: str) -> tuple[str, ...]:
    """The voice variants ``split`` may use: the test split its own, train and probe the rest."""
    return VOICES[gender]["test" if split == "test" else "train"]


@dataclass(frozen=True)
class Prosody:
    """How one emotion is acted: espeak settings relative to the neutral voice, and a level."""

    pitch_delta: int
    """Added to the base espeak pitch (0-99 scale)."""
    rate_factor: float
    """Multiplies the base rate (words per minute)."""
    amplitude: int
    """espeak -a (0-200; drives its glottal source harder, not only the gain)."""
    pitch_range: str
    """SSML prosody range: x-low .. x-high (the width of the intonation contour)."""
    level_db: float
    """Target RMS of the finished clip in dBFS."""


PROSODY: dict[str, Prosody] = {
    "neutral": Prosody(0, 1.00, 100, "medium", -22.0),
    "angry": Prosody(8, 1.22, 180, "x-high", -13.0),
    "sad": Prosody(-14, 0.72, 55, "x-low", -31.0),
    "happy": Prosody(16, 1.12, 120, "x-high", -18.0),
    "fear": Prosody(22, 1.30, 90, "high", -24.0),
    "disgust": Prosody(-10, 0.82, 110, "low", -20.0),
}
EMOTIONS: tuple[str, ...] = tuple(PROSODY)


class SpeechSynthError(RuntimeError):
    """espeak-ng is missing or failed; the message says how to install it."""


def espeak_available() -> bool:
    return shutil.which(ESPEAK) is not None


def espeak_version() -> str:
    if not espeak_available():
        return "missing"
    out = subprocess.run([ESPEAK, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip().split(" Data at")[0]


@dataclass(frozen=True)
class SpeechSpec:
    """Everything that decides one speech clip (stored in the manifest's meta columns)."""

    language: str
    gender: str
    emotion: str
    sentence: str
    variant: str
    pitch: int
    rate: int


def espeak_render(spec: SpeechSpec) -> np.ndarray:
    """Run espeak-ng for ``spec``; float32 mono at 16 kHz (espeak writes 22.05 kHz)."""
    import soundfile as sf

    if not espeak_available():
        raise SpeechSynthError(
            "espeak-ng is not installed; rebuilding the corpus's speech needs it "
            "(Debian/Ubuntu: sudo apt-get install espeak-ng). The committed corpus "
            "under assets/corpus does not.")
    pros = PROSODY[spec.emotion]
    ssml = f'<speak><prosody range="{pros.pitch_range}">{escape(spec.sentence)}</prosody></speak>'
    cmd = [ESPEAK, "--stdout", "-m", "-v", f"{ESPEAK_VOICES[spec.language]}+{spec.variant}",
           "-p", str(spec.pitch), "-s", str(spec.rate), "-a", str(pros.amplitude), ssml]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0 or len(proc.stdout) < 100:
        raise SpeechSynthError(f"espeak-ng failed for {spec}: {proc.stderr.decode(errors='replace')}")
    audio, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    g = np.gcd(int(sr), aug.SR)
    return sps.resample_poly(audio, aug.SR // g, int(sr) // g).astype(np.float32)


def _tremolo_vibrato(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fear: 5-9 Hz amplitude tremolo and a jittery pitch wobble (a modulated delay line)."""
    t = np.arange(len(x)) / aug.SR
    f_trem = rng.uniform(5.0, 9.0)
    depth = rng.uniform(0.35, 0.6)
    trem = 1.0 - depth * (0.5 + 0.5 * np.sin(2 * np.pi * f_trem * t + rng.uniform(0, 2 * np.pi)))
    f_vib = rng.uniform(5.0, 8.0)
    jitter = np.cumsum(rng.standard_normal(len(x))) / np.sqrt(aug.SR) * 0.002  # slow random walk
    delay = 0.0012 * np.sin(2 * np.pi * f_vib * t) + jitter - jitter.mean()
    src = np.clip(np.arange(len(x)) - (delay - delay.min()) * aug.SR, 0, len(x) - 1)
    return (np.interp(src, np.arange(len(x)), x) * trem).astype(np.float32)


def _creak(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Disgust: an irregular 30-60 Hz pulse envelope (vocal-fry-like roughness) and grit."""
    n = len(x)
    period = aug.SR / rng.uniform(30.0, 60.0)
    pulses = np.zeros(n, dtype=np.float32)
    pos = 0.0
    while pos < n:
        pulses[int(pos)] = 1.0
        pos += period * rng.uniform(0.7, 1.3)
    win = np.hanning(max(3, int(period * 0.6))).astype(np.float32)
    env = np.convolve(pulses, win, mode="same")
    env = 0.3 + 0.7 * env / (env.max() + 1e-9)
    y = x * env
    y = np.tanh(2.0 * y / (np.max(np.abs(y)) + 1e-9))
    sos = sps.butter(2, rng.uniform(2500, 3500), btype="lowpass", fs=aug.SR, output="sos")
    return sps.sosfilt(sos, y).astype(np.float32)


def act_emotion(x: np.ndarray, emotion: str, rng: np.random.Generator) -> np.ndarray:
    """Post-process espeak output into the emotion's voice quality."""
    x = aug.normalize_peak(x, 0.0)
    if emotion == "angry":  # pressed, saturated, bright
        x = np.tanh(rng.uniform(2.5, 4.0) * x).astype(np.float32)
        sos = sps.butter(2, 2000, btype="highpass", fs=aug.SR, output="sos")
        x = x + 0.5 * sps.sosfilt(sos, x).astype(np.float32)
    elif emotion == "sad":  # dark, breathy
        sos = sps.butter(4, rng.uniform(1800, 2800), btype="lowpass", fs=aug.SR, output="sos")
        x = sps.sosfilt(sos, x).astype(np.float32)
        x = aug.mix_at_snr(x, aug.colored_noise(len(x), rng, "pink") * np.abs(x).clip(0.05), 18.0)
    elif emotion == "happy":  # bright
        sos = sps.butter(2, 2500, btype="highpass", fs=aug.SR, output="sos")
        x = x + 0.3 * sps.sosfilt(sos, x).astype(np.float32)
    elif emotion == "fear":
        x = _tremolo_vibrato(x, rng)
    elif emotion == "disgust":
        x = _creak(x, rng)
    return x.astype(np.float32)


def sample_spec(language: str, gender: str, emotion: str, sentence: str, split: str,
                rng: np.random.Generator) -> SpeechSpec:
    """Draw the voice variant (from the split's pool), base pitch and base rate, then apply the
    emotion's offsets."""
    pros = PROSODY[emotion]
    variant = str(rng.choice(voice_pool(gender, split)))
    base_pitch = int(rng.integers(*PITCH_RANGE[gender], endpoint=True))
    base_rate = float(rng.uniform(*RATE_RANGE))
    return SpeechSpec(
        language=language, gender=gender, emotion=emotion, sentence=sentence, variant=variant,
        pitch=int(np.clip(base_pitch + pros.pitch_delta, 0, 99)),
        rate=int(round(base_rate * pros.rate_factor)),
    )


def make_speech_clip(spec: SpeechSpec, rng: np.random.Generator, min_s: float,
                     max_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Render, act, add a room (EQ + quiet noise) and fit into [min_s, max_s] seconds.

    Returns (clip, clean): ``clean`` is the same timeline before the noise, from which the
    clip's speech spans are read."""
    x = aug.trim_silence(espeak_render(spec))
    x = act_emotion(x, spec.emotion, rng)
    x = aug.random_eq(x, rng)
    lead = np.zeros(int(rng.uniform(0.05, 0.3) * aug.SR), dtype=np.float32)
    tail = np.zeros(int(rng.uniform(0.05, 0.3) * aug.SR), dtype=np.float32)
    x = aug.fit_length(np.concatenate([lead, x, tail]), min_s, max_s)
    level = PROSODY[spec.emotion].level_db + rng.uniform(-2.0, 2.0)
    clean = (x * (aug.db_to_gain(level) / aug.rms(x))).astype(np.float32)
    noise = aug.colored_noise(len(clean), rng, str(rng.choice(["white", "pink", "brown"])))
    return aug.no_clip(aug.mix_at_snr(clean, noise, rng.uniform(25.0, 45.0))), clean


def speech_caption(spec: SpeechSpec) -> str:
    """E.g. 'a woman speaking German slowly in a sad voice'."""
    who = {"male": "a man", "female": "a woman"}[spec.gender]
    pace = " slowly" if spec.rate < 130 else (" quickly" if spec.rate > 205 else "")
    voice = {
        "neutral": "in a neutral voice", "angry": "in an angry voice", "sad": "in a sad voice",
        "happy": "in a happy voice", "fear": "in a fearful voice", "disgust": "in a disgusted voice",
    }[spec.emotion]
    return f"{who} speaking {spec.language}{pace} {voice}"
