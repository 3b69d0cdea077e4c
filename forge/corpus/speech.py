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

from forge.corpus import augment as aug

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

# Thirty-six short sentences per language (parallel in meaning). Japanese is written
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
        "The coffee is too hot.", "Open the window, please.", "My brother works in a hospital.",
        "The shop closes at six.", "I like to walk in the park.", "Where is the train station?",
        "The cat is sleeping on the sofa.", "We need more bread and milk.", "It is raining again.",
        "This song is very old.", "My phone is on the chair.", "They live near the sea.",
        "The bus is late today.", "I drink tea every morning.", "Our teacher is very kind.",
        "The flowers are red and yellow.", "He runs very fast.", "Tomorrow is my birthday.",
        "The soup needs more salt.", "I lost my umbrella.", "The moon is bright tonight.",
        "Let's eat together.", "The baby is laughing.", "My house has a small garden.",
    ),
    "German": (
        "Das Wetter ist heute schön.", "Bitte mach die Tür zu.",
        "Ich habe meine Schlüssel vergessen.", "Wir gehen auf den Markt.",
        "Der Zug kommt um neun.", "Meine Schwester mag grüne Äpfel.",
        "Kannst du die Musik hören?", "Die Kinder spielen draußen.",
        "Er hat ein neues Fahrrad gekauft.", "Das Essen ist gleich fertig.",
        "Der Fluss ist sehr kalt.", "Sie liest jeden Abend ein Buch.",
        "Der Kaffee ist zu heiß.", "Mach bitte das Fenster auf.", "Mein Bruder arbeitet im Krankenhaus.",
        "Der Laden schließt um sechs.", "Ich gehe gern im Park spazieren.", "Wo ist der Bahnhof?",
        "Die Katze schläft auf dem Sofa.", "Wir brauchen mehr Brot und Milch.", "Es regnet schon wieder.",
        "Dieses Lied ist sehr alt.", "Mein Handy liegt auf dem Stuhl.", "Sie wohnen am Meer.",
        "Der Bus hat heute Verspätung.", "Ich trinke jeden Morgen Tee.", "Unsere Lehrerin ist sehr nett.",
        "Die Blumen sind rot und gelb.", "Er läuft sehr schnell.", "Morgen habe ich Geburtstag.",
        "Die Suppe braucht mehr Salz.", "Ich habe meinen Schirm verloren.", "Der Mond ist heute hell.",
        "Lass uns zusammen essen.", "Das Baby lacht.", "Mein Haus hat einen kleinen Garten.",
    ),
    "Spanish": (
        "Hoy hace buen tiempo.", "Por favor, cierra la puerta.",
        "Dejé mis llaves en la mesa.", "Vamos al mercado.",
        "El tren llega a las nueve.", "A mi hermana le gustan las manzanas.",
        "¿Puedes oír la música?", "Los niños juegan afuera.",
        "Él compró una bicicleta nueva.", "La cena estará lista pronto.",
        "El río está muy frío.", "Ella lee un libro cada noche.",
        "El café está demasiado caliente.", "Abre la ventana, por favor.", "Mi hermano trabaja en un hospital.",
        "La tienda cierra a las seis.", "Me gusta caminar en el parque.", "¿Dónde está la estación?",
        "El gato duerme en el sofá.", "Necesitamos más pan y leche.", "Está lloviendo otra vez.",
        "Esta canción es muy antigua.", "Mi teléfono está en la silla.", "Ellos viven cerca del mar.",
        "El autobús llega tarde hoy.", "Bebo té cada mañana.", "Nuestra maestra es muy amable.",
        "Las flores son rojas y amarillas.", "Él corre muy rápido.", "Mañana es mi cumpleaños.",
        "La sopa necesita más sal.", "Perdí mi paraguas.", "La luna brilla esta noche.",
        "Comamos juntos.", "El bebé se está riendo.", "Mi casa tiene un jardín pequeño.",
    ),
    "French": (
        "Il fait beau aujourd'hui.", "Ferme la porte, s'il te plaît.",
        "J'ai laissé mes clés sur la table.", "Nous allons au marché.",
        "Le train arrive à neuf heures.", "Ma sœur aime les pommes vertes.",
        "Tu entends la musique ?", "Les enfants jouent dehors.",
        "Il a acheté un nouveau vélo.", "Le dîner sera bientôt prêt.",
        "La rivière est très froide.", "Elle lit un livre chaque soir.",
        "Le café est trop chaud.", "Ouvre la fenêtre, s'il te plaît.", "Mon frère travaille à l'hôpital.",
        "Le magasin ferme à six heures.", "J'aime me promener au parc.", "Où est la gare ?",
        "Le chat dort sur le canapé.", "Il nous faut du pain et du lait.", "Il pleut encore.",
        "Cette chanson est très vieille.", "Mon téléphone est sur la chaise.", "Ils habitent près de la mer.",
        "Le bus est en retard aujourd'hui.", "Je bois du thé chaque matin.", "Notre maîtresse est très gentille.",
        "Les fleurs sont rouges et jaunes.", "Il court très vite.", "Demain, c'est mon anniversaire.",
        "La soupe manque de sel.", "J'ai perdu mon parapluie.", "La lune brille ce soir.",
        "Mangeons ensemble.", "Le bébé rit.", "Ma maison a un petit jardin.",
    ),
    "Italian": (
        "Oggi fa bel tempo.", "Per favore, chiudi la porta.",
        "Ho lasciato le chiavi sul tavolo.", "Andiamo al mercato.",
        "Il treno arriva alle nove.", "Mia sorella ama le mele verdi.",
        "Senti la musica?", "I bambini giocano fuori.",
        "Ha comprato una bicicletta nuova.", "La cena sarà pronta presto.",
        "Il fiume è molto freddo.", "Lei legge un libro ogni sera.",
        "Il caffè è troppo caldo.", "Apri la finestra, per favore.", "Mio fratello lavora in ospedale.",
        "Il negozio chiude alle sei.", "Mi piace camminare nel parco.", "Dov'è la stazione?",
        "Il gatto dorme sul divano.", "Ci servono pane e latte.", "Piove di nuovo.",
        "Questa canzone è molto vecchia.", "Il mio telefono è sulla sedia.", "Abitano vicino al mare.",
        "L'autobus è in ritardo oggi.", "Bevo il tè ogni mattina.", "La nostra maestra è molto gentile.",
        "I fiori sono rossi e gialli.", "Lui corre molto veloce.", "Domani è il mio compleanno.",
        "La zuppa ha bisogno di sale.", "Ho perso l'ombrello.", "Stasera la luna è luminosa.",
        "Mangiamo insieme.", "Il bambino ride.", "La mia casa ha un piccolo giardino.",
    ),
    "Chinese": (
        "今天天气很好。", "请把门关上。", "我把钥匙放在桌子上了。", "我们去市场吧。",
        "火车九点到。", "我妹妹喜欢吃苹果。", "你听到音乐了吗？", "孩子们在外面玩。",
        "他买了一辆新自行车。", "晚饭马上就好。", "这条河很冷。", "她每天晚上看书。",
        "咖啡太烫了。", "请打开窗户。", "我哥哥在医院工作。",
        "商店六点关门。", "我喜欢在公园散步。", "火车站在哪里？",
        "猫在沙发上睡觉。", "我们需要面包和牛奶。", "又下雨了。",
        "这首歌很老。", "我的手机在椅子上。", "他们住在海边。",
        "公共汽车今天晚点了。", "我每天早上喝茶。", "我们的老师很好。",
        "花是红色和黄色的。", "他跑得很快。", "明天是我的生日。",
        "汤里要多放点盐。", "我的雨伞丢了。", "今晚月亮很亮。",
        "我们一起吃饭吧。", "宝宝在笑。", "我家有一个小花园。",
    ),
    "Japanese": (
        "きょうわ いい てんきです。", "どあを しめて ください。",
        "かぎを テーブルに おきました。", "いちばに いきましょう。",
        "でんしゃわ くじに つきます。", "いもうとわ りんごが すきです。",
        "おんがくが きこえますか。", "こどもたちわ そとで あそんで います。",
        "かれわ あたらしい じてんしゃを かいました。", "ばんごはんわ もうすぐ できます。",
        "かわわ とても つめたいです。", "かのじょわ まいばん ほんを よみます。",
        "コーヒーわ あつすぎます。", "まどを あけて ください。", "あにわ びょういんで はたらいて います。",
        "みせわ ろくじに しまります。", "こうえんを さんぽするのが すきです。", "えきわ どこですか。",
        "ねこわ ソファーで ねて います。", "パンと ぎゅうにゅうが ひつようです。", "また あめが ふって います。",
        "この うたわ とても ふるいです。", "けいたいわ いすの うえに あります。", "かれらわ うみの ちかくに すんで います。",
        "きょう バスが おくれて います。", "まいあさ おちゃを のみます。", "せんせいわ とても やさしいです。",
        "はなわ あかと きいろです。", "かれわ はしるのが はやいです。", "あしたわ わたしの たんじょうびです。",
        "スープに しおが もっと ひつようです。", "かさを なくしました。", "こんやわ つきが あかるいです。",
        "いっしょに たべましょう。", "あかちゃんが わらって います。", "わたしの いえにわ ちいさな にわが あります。",
    ),
    "Korean": (
        "오늘은 날씨가 좋아요.", "문을 닫아 주세요.", "열쇠를 탁자 위에 두었어요.",
        "우리는 시장에 가요.", "기차는 아홉 시에 도착해요.", "제 여동생은 사과를 좋아해요.",
        "음악이 들려요?", "아이들이 밖에서 놀아요.", "그는 새 자전거를 샀어요.",
        "저녁이 곧 준비돼요.", "강물이 아주 차가워요.", "그녀는 매일 밤 책을 읽어요.",
        "커피가 너무 뜨거워요.", "창문을 열어 주세요.", "제 형은 병원에서 일해요.",
        "가게는 여섯 시에 문을 닫아요.", "저는 공원에서 산책을 좋아해요.", "기차역이 어디예요?",
        "고양이가 소파에서 자요.", "빵과 우유가 필요해요.", "또 비가 와요.",
        "이 노래는 아주 오래됐어요.", "제 휴대폰은 의자 위에 있어요.", "그들은 바다 근처에 살아요.",
        "오늘 버스가 늦어요.", "저는 매일 아침 차를 마셔요.", "우리 선생님은 아주 친절해요.",
        "꽃이 빨갛고 노래요.", "그는 아주 빨리 달려요.", "내일은 제 생일이에요.",
        "수프에 소금이 더 필요해요.", "우산을 잃어버렸어요.", "오늘 밤 달이 밝아요.",
        "같이 먹어요.", "아기가 웃고 있어요.", "우리 집에는 작은 정원이 있어요.",
    ),
}
HELD_OUT = 6
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
