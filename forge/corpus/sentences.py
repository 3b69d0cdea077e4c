"""Sentences for the speech clips, built from per-language templates.

A sentence is SUBJECT + (TIME) + VERB PHRASE in the word order of its language, e.g.
"My brother reads a book every morning." / "Mein Bruder liest jeden Morgen ein Buch." /
"我哥哥每天早上看书。" / "あにわ まいあさ ほんを よみます。". Subjects are third-person singular
noun phrases so that every verb phrase agrees with every subject. The lists are parallel in
meaning across languages (index i means the same thing everywhere).

Held-out vocabulary: the last ``HELD_OUT_VERBS`` verb phrases and the last ``HELD_OUT_TIMES``
time phrases of every language are read only by the test split, so a test sentence always
holds words the model never heard in training, not only a new combination.

Japanese is written in kana with the topic particle spelled as spoken (わ), because
espeak-ng reads kanji as "Chinese letter"; Chinese is read by the cmn-latn-pinyin voice.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

HELD_OUT_VERBS = 5
HELD_OUT_TIMES = 3


class Grammar(NamedTuple):
    subjects: tuple[str, ...]
    times: tuple[str, ...]
    verbs: tuple[str, ...]
    order: str  # "svt": subject verb time; "stv": subject time verb
    end: str  # sentence-final punctuation


GRAMMARS: dict[str, Grammar] = {
    "English": Grammar(
        subjects=("My brother", "My sister", "The teacher", "Our neighbour", "The old man", "A little girl",
                  "The doctor", "My friend", "The farmer", "His mother", "The young woman", "Her father"),
        times=("every morning", "in the evening", "after lunch", "on Sundays", "at night", "before work",
               "in the summer", "right now", "twice a week", "after school", "at noon"),
        verbs=("reads a book", "drinks hot tea", "walks to the station", "cooks rice", "plays the piano",
               "washes the car", "writes a letter", "waters the flowers", "buys fresh bread", "cleans the kitchen",
               "watches the news", "feeds the cat", "rides a bicycle", "sings a song", "opens the window",
               "calls the office", "paints the fence", "learns new words", "carries a heavy bag", "eats an apple",
               "fixes the old clock", "climbs the hill", "sells vegetables", "paints a picture"),
        order="svt", end="."),
    "German": Grammar(
        subjects=("Mein Bruder", "Meine Schwester", "Der Lehrer", "Unser Nachbar", "Der alte Mann",
                  "Ein kleines Mädchen", "Die Ärztin", "Mein Freund", "Der Bauer", "Seine Mutter",
                  "Die junge Frau", "Ihr Vater"),
        times=("jeden Morgen", "am Abend", "nach dem Mittagessen", "am Sonntag", "in der Nacht",
               "vor der Arbeit", "im Sommer", "gerade jetzt", "zweimal pro Woche", "nach der Schule", "am Mittag"),
        verbs=("liest ein Buch", "trinkt heißen Tee", "geht zum Bahnhof", "kocht Reis", "spielt Klavier",
               "wäscht das Auto", "schreibt einen Brief", "gießt die Blumen", "kauft frisches Brot",
               "putzt die Küche", "sieht die Nachrichten", "füttert die Katze", "fährt Fahrrad", "singt ein Lied",
               "öffnet das Fenster", "ruft das Büro an", "streicht den Zaun", "lernt neue Wörter",
               "trägt eine schwere Tasche", "isst einen Apfel", "repariert die alte Uhr", "steigt auf den Hügel",
               "verkauft Gemüse", "malt ein Bild"),
        order="svt", end="."),
    "Spanish": Grammar(
        subjects=("Mi hermano", "Mi hermana", "El profesor", "Nuestro vecino", "El anciano", "Una niña pequeña",
                  "La doctora", "Mi amigo", "El granjero", "Su madre", "La joven", "Su padre"),
        times=("cada mañana", "por la tarde", "después del almuerzo", "los domingos", "por la noche",
               "antes del trabajo", "en verano", "ahora mismo", "dos veces por semana", "después de clase",
               "al mediodía"),
        verbs=("lee un libro", "bebe té caliente", "camina a la estación", "cocina arroz", "toca el piano",
               "lava el coche", "escribe una carta", "riega las flores", "compra pan fresco", "limpia la cocina",
               "mira las noticias", "da de comer al gato", "monta en bicicleta", "canta una canción",
               "abre la ventana", "llama a la oficina", "pinta la valla", "aprende palabras nuevas",
               "lleva una bolsa pesada", "come una manzana", "arregla el reloj viejo", "sube la colina",
               "vende verduras", "pinta un cuadro"),
        order="svt", end="."),
    "French": Grammar(
        subjects=("Mon frère", "Ma sœur", "Le professeur", "Notre voisin", "Le vieil homme", "Une petite fille",
                  "Le médecin", "Mon ami", "Le fermier", "Sa mère", "La jeune femme", "Son père"),
        times=("chaque matin", "le soir", "après le déjeuner", "le dimanche", "la nuit", "avant le travail",
               "en été", "en ce moment", "deux fois par semaine", "après l'école", "à midi"),
        verbs=("lit un livre", "boit du thé chaud", "marche jusqu'à la gare", "cuisine du riz", "joue du piano",
               "lave la voiture", "écrit une lettre", "arrose les fleurs", "achète du pain frais",
               "nettoie la cuisine", "regarde les informations", "nourrit le chat", "fait du vélo",
               "chante une chanson", "ouvre la fenêtre", "appelle le bureau", "peint la clôture",
               "apprend de nouveaux mots", "porte un sac lourd", "mange une pomme", "répare la vieille horloge",
               "monte la colline", "vend des légumes", "peint un tableau"),
        order="svt", end="."),
    "Italian": Grammar(
        subjects=("Mio fratello", "Mia sorella", "Il maestro", "Il nostro vicino", "Il vecchio", "Una bambina",
                  "La dottoressa", "Il mio amico", "Il contadino", "Sua madre", "La ragazza", "Suo padre"),
        times=("ogni mattina", "la sera", "dopo pranzo", "la domenica", "di notte", "prima del lavoro",
               "d'estate", "proprio adesso", "due volte alla settimana", "dopo la scuola", "a mezzogiorno"),
        verbs=("legge un libro", "beve il tè caldo", "cammina fino alla stazione", "cucina il riso",
               "suona il pianoforte", "lava la macchina", "scrive una lettera", "annaffia i fiori",
               "compra il pane fresco", "pulisce la cucina", "guarda il telegiornale", "dà da mangiare al gatto",
               "va in bicicletta", "canta una canzone", "apre la finestra", "chiama l'ufficio",
               "dipinge il recinto", "impara parole nuove", "porta una borsa pesante", "mangia una mela",
               "ripara il vecchio orologio", "sale sulla collina", "vende le verdure", "dipinge un quadro"),
        order="svt", end="."),
    "Chinese": Grammar(
        subjects=("我哥哥", "我姐姐", "老师", "我们的邻居", "那位老人", "一个小女孩", "医生", "我的朋友",
                  "农民", "他的妈妈", "那位年轻女士", "她的爸爸"),
        times=("每天早上", "晚上", "午饭以后", "星期天", "夜里", "上班以前", "夏天", "现在", "一个星期两次",
               "放学以后", "中午"),
        verbs=("看书", "喝热茶", "走路去车站", "做米饭", "弹钢琴", "洗车", "写信", "浇花", "买新鲜的面包",
               "打扫厨房", "看新闻", "喂猫", "骑自行车", "唱歌", "开窗户", "给办公室打电话", "刷篱笆",
               "学新词", "提一个很重的包", "吃苹果", "修那个旧钟", "爬山", "卖蔬菜", "画画"),
        order="stv", end="。"),
    "Japanese": Grammar(
        subjects=("あにわ", "あねわ", "せんせいわ", "となりの ひとわ", "おじいさんわ", "ちいさな おんなのこわ",
                  "いしゃわ", "ともだちわ", "のうかの ひとわ", "かれの おかあさんわ", "わかい おんなの ひとわ",
                  "かのじょの おとうさんわ"),
        times=("まいあさ", "よるに", "ひるごはんの あとで", "にちようびに", "よなかに", "しごとの まえに",
               "なつに", "いま", "しゅうに にかい", "ほうかごに", "しょうごに"),
        verbs=("ほんを よみます", "あつい おちゃを のみます", "えきまで あるきます", "ごはんを つくります",
               "ピアノを ひきます", "くるまを あらいます", "てがみを かきます", "はなに みずを やります",
               "パンを かいます", "だいどころを そうじします", "ニュースを みます", "ねこに えさを やります",
               "じてんしゃに のります", "うたを うたいます", "まどを あけます", "かいしゃに でんわします",
               "へいを ぬります", "あたらしい ことばを おぼえます", "おもい かばんを もちます",
               "りんごを たべます", "ふるい とけいを なおします", "やまに のぼります", "やさいを うります",
               "えを かきます"),
        order="stv", end="。"),
    "Korean": Grammar(
        subjects=("제 형은", "제 누나는", "선생님은", "우리 이웃은", "할아버지는", "어린 여자아이는", "의사는",
                  "제 친구는", "농부는", "그의 어머니는", "젊은 여자는", "그녀의 아버지는"),
        times=("매일 아침", "저녁에", "점심 후에", "일요일에", "밤에", "일하기 전에", "여름에", "지금",
               "일주일에 두 번", "방과 후에", "정오에"),
        verbs=("책을 읽어요", "뜨거운 차를 마셔요", "역까지 걸어가요", "밥을 지어요", "피아노를 쳐요",
               "차를 닦아요", "편지를 써요", "꽃에 물을 줘요", "빵을 사요", "부엌을 청소해요", "뉴스를 봐요",
               "고양이에게 밥을 줘요", "자전거를 타요", "노래를 불러요", "창문을 열어요", "사무실에 전화해요",
               "울타리를 칠해요", "새 단어를 배워요", "무거운 가방을 들어요", "사과를 먹어요",
               "오래된 시계를 고쳐요", "언덕을 올라가요", "채소를 팔아요", "그림을 그려요"),
        order="stv", end="."),
}


def sentence(language: str, subject: int, time: int, verb: int) -> str:
    """The sentence of (subject, time, verb) indices in ``language``."""
    g = GRAMMARS[language]
    s, t, v = g.subjects[subject], g.times[time], g.verbs[verb]
    if g.order == "svt":
        # German keeps the verb second and puts the time before the object
        if language == "German":
            head, _, rest = v.partition(" ")
            body = f"{s} {head} {t} {rest}".strip()
        else:
            body = f"{s} {v} {t}"
    else:
        body = f"{s} {t} {v}" if language in ("Japanese", "Korean") else f"{s}{t}{v}"
    return body + g.end


@lru_cache(maxsize=None)
def sentence_pool(language: str, split: str) -> list[tuple[int, int, int]]:
    """Every (subject, time, verb) of ``language`` allowed in ``split``: the test split reads only
    held-out verbs and times; the others never read them."""
    g = GRAMMARS[language]
    nv, nt = len(g.verbs), len(g.times)
    test = split == "test"
    verbs = range(nv - HELD_OUT_VERBS, nv) if test else range(nv - HELD_OUT_VERBS)
    times = range(nt - HELD_OUT_TIMES, nt) if test else range(nt - HELD_OUT_TIMES)
    return [(s, t, v) for s in range(len(g.subjects)) for t in times for v in verbs]


def draw(language: str, split: str, rng: np.random.Generator) -> str:
    """A random sentence of ``language`` that ``split`` may read."""
    pool = sentence_pool(language, split)
    return sentence(language, *pool[int(rng.integers(len(pool)))])
