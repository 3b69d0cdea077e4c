"""Synthetic speech for the mini corpus: espeak-ng in 8 languages with acted prosody.

Each clip is one short sentence read by an espeak-ng voice variant (``+m1..+m7``
male, ``+f1..+f5`` female) at a random base pitch and rate; the emotion is
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

from ard_core.datasets import augment as aug

ESPEAK = "espeak-ng"

# label -> espeak voice. Chinese needs the pinyin voice: the plain 'cmn' voice
# of espeak-ng 1.51 reads the tone digits of its own dictionary as English numbers.
ESPEAK_VOICES: dict[str, str] = {
    "English": "en-us", "German": "de", "Spanish": "es", "French": "fr-fr",
    "Italian": "it", "Chinese": "cmn-latn-pinyin", "Japanese": "ja", "Korean": "ko",
}
VARIANTS: dict[str, tuple[str, ...]] = {
    "male": tuple(f"m{i}" for i in range(1, 8)),
    "female": tuple(f"f{i}" for i in range(1, 6)),
}

# Twelve short sentences per language (parallel in meaning). Japanese is written
# in kana with the particles spelled as spoken (espeak-ng reads kanji as English
# "Chinese letter"). The last HELD_OUT of each list are used only by the test split.
SENTENCES: dict[str, tuple[str, ...]] = {
    "English": (
        "The weather is nice today.", "Please close the door behind you.",
        "I left my keys on the table.", "We are going to the market.",
        "The train arrives at nine.", "My sister likes green apples.",
        "Can you hear the music?", "The children are playing outside.",
        "He bought a new bicycle.", "Dinner will be ready soon.",
        "The river is very cold.", "She reads a book every night.",
    ),
    "German": (
        "Das Wetter ist heute schön.", "Bitte mach die Tür zu.",
        "Ich habe meine Schlüssel vergessen.", "Wir gehen auf den Markt.",
        "Der Zug kommt um neun.", "Meine Schwester mag grüne Äpfel.",
        "Kannst du die Musik hören?", "Die Kinder spielen draußen.",
        "Er hat ein neues Fahrrad gekauft.", "Das Essen ist gleich fertig.",
        "Der Fluss ist sehr kalt.", "Sie liest jeden Abend ein Buch.",
    ),
    "Spanish": (
        "Hoy hace buen tiempo.", "Por favor, cierra la puerta.",
        "Dejé mis llaves en la mesa.", "Vamos al mercado.",
        "El tren llega a las nueve.", "A mi hermana le gustan las manzanas.",
        "¿Puedes oír la música?", "Los niños juegan afuera.",
        "Él compró una bicicleta nueva.", "La cena estará lista pronto.",
        "El río está muy frío.", "Ella lee un libro cada noche.",
    ),
    "French": (
        "Il fait beau aujourd'hui.", "Ferme la porte, s'il te plaît.",
        "J'ai laissé mes clés sur la table.", "Nous allons au marché.",
        "Le train arrive à neuf heures.", "Ma sœur aime les pommes vertes.",
        "Tu entends la musique ?", "Les enfants jouent dehors.",
        "Il a acheté un nouveau vélo.", "Le dîner sera bientôt prêt.",
        "La rivière est très froide.", "Elle lit un livre chaque soir.",
    ),
    "Italian": (
        "Oggi fa bel tempo.", "Per favore, chiudi la porta.",
        "Ho lasciato le chiavi sul tavolo.", "Andiamo al mercato.",
        "Il treno arriva alle nove.", "Mia sorella ama le mele verdi.",
        "Senti la musica?", "I bambini giocano fuori.",
        "Ha comprato una bicicletta nuova.", "La cena sarà pronta presto.",
        "Il fiume è molto freddo.", "Lei legge un libro ogni sera.",
    ),
    "Chinese": (
        "今天天气很好。", "请把门关上。", "我把钥匙放在桌子上了。", "我们去市场吧。",
        "火车九点到。", "我妹妹喜欢吃苹果。", "你听到音乐了吗？", "孩子们在外面玩。",
        "他买了一辆新自行车。", "晚饭马上就好。", "这条河很冷。", "她每天晚上看书。",
    ),
    "Japanese": (
        "きょうわ いい てんきです。", "どあを しめて ください。",
        "かぎを テーブルに おきました。", "いちばに いきましょう。",
        "でんしゃわ くじに つきます。", "いもうとわ りんごが すきです。",
        "おんがくが きこえますか。", "こどもたちわ そとで あそんで います。",
        "かれわ あたらしい じてんしゃを かいました。", "ばんごはんわ もうすぐ できます。",
        "かわわ とても つめたいです。", "かのじょわ まいばん ほんを よみます。",
    ),
    "Korean": (
        "오늘은 날씨가 좋아요.", "문을 닫아 주세요.", "열쇠를 탁자 위에 두었어요.",
        "우리는 시장에 가요.", "기차는 아홉 시에 도착해요.", "제 여동생은 사과를 좋아해요.",
        "음악이 들려요?", "아이들이 밖에서 놀아요.", "그는 새 자전거를 샀어요.",
        "저녁이 곧 준비돼요.", "강물이 아주 차가워요.", "그녀는 매일 밤 책을 읽어요.",
    ),
}
HELD_OUT = 2
"""How many sentences per language only the test split reads."""


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


def sample_spec(language: str, gender: str, emotion: str, sentence: str,
                rng: np.random.Generator) -> SpeechSpec:
    """Draw the voice variant, base pitch and base rate, then apply the emotion's offsets."""
    pros = PROSODY[emotion]
    variant = str(rng.choice(VARIANTS[gender]))
    base_pitch = int(rng.integers(35, 66))
    base_rate = float(rng.uniform(145.0, 185.0))
    return SpeechSpec(
        language=language, gender=gender, emotion=emotion, sentence=sentence, variant=variant,
        pitch=int(np.clip(base_pitch + pros.pitch_delta, 0, 99)),
        rate=int(round(base_rate * pros.rate_factor)),
    )


def make_speech_clip(spec: SpeechSpec, rng: np.random.Generator, min_s: float, max_s: float) -> np.ndarray:
    """Render, act, add a room (EQ + quiet noise) and fit into [min_s, max_s] seconds."""
    x = aug.trim_silence(espeak_render(spec))
    x = act_emotion(x, spec.emotion, rng)
    x = aug.random_eq(x, rng)
    lead = np.zeros(int(rng.uniform(0.05, 0.3) * aug.SR), dtype=np.float32)
    tail = np.zeros(int(rng.uniform(0.05, 0.3) * aug.SR), dtype=np.float32)
    x = aug.fit_length(np.concatenate([lead, x, tail]), min_s, max_s)
    level = PROSODY[spec.emotion].level_db + rng.uniform(-2.0, 2.0)
    x = x * (aug.db_to_gain(level) / aug.rms(x))
    noise = aug.colored_noise(len(x), rng, str(rng.choice(["white", "pink", "brown"])))
    x = aug.mix_at_snr(x, noise, rng.uniform(25.0, 45.0))
    peak = float(np.max(np.abs(x)))
    return (x * (0.98 / peak) if peak > 0.98 else x).astype(np.float32)


def speech_caption(spec: SpeechSpec) -> str:
    """E.g. 'a woman speaking German slowly in a sad voice'."""
    who = {"male": "a man", "female": "a woman"}[spec.gender]
    pace = " slowly" if spec.rate < 130 else (" quickly" if spec.rate > 205 else "")
    voice = {
        "neutral": "in a neutral voice", "angry": "in an angry voice", "sad": "in a sad voice",
        "happy": "in a happy voice", "fear": "in a fearful voice", "disgust": "in a disgusted voice",
    }[spec.emotion]
    return f"{who} speaking {spec.language}{pace} {voice}"
