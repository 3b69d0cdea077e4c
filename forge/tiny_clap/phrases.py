"""Everyday paraphrases of every (track, label) of the mini corpus, for the tiny CLAP's text space.

Evaluation matches feature names ("angry voice", "dogs barking", "speaking French") to the
reference phrases of ``ard_core.datasets.labels.LABEL_PHRASES`` by CLAP text cosine, so the
text encoder must put every wording of one concept close together and different concepts
apart. :data:`TRAIN_PARAPHRASES` feed the contrastive loss (with the reference phrases);
:data:`HELDOUT_PARAPHRASES` are never trained on and only measure (:mod:`.separability`).

The held-out wordings are new *arrangements of known words* ("a dog is barking", "barking
dogs"): every word of them occurs in some training text (a test checks it). A model whose
BPE vocabulary and embeddings are learned from a few hundred texts cannot know a word it
never read ("canine", "hound"), so a held-out set with such words would measure the
vocabulary, not the text space.
"""

from __future__ import annotations

from ard_core.datasets.labels import LABEL_PHRASES

# animal / sound event with countable sources: (article, noun, plural, -ing verb, 3rd person verb, sound noun)
_Forms = tuple[str, str, str, str, str, str]
_ANIMALS: dict[str, _Forms] = {
    "cat": ("a", "cat", "cats", "meowing", "meows", "meow"),
    "cow": ("a", "cow", "cows", "mooing", "moos", "moo"),
    "dog": ("a", "dog", "dogs", "barking", "barks", "bark"),
    "duck": ("a", "duck", "ducks", "quacking", "quacks", "quack"),
    "frog": ("a", "frog", "frogs", "croaking", "croaks", "croak"),
    "horse": ("a", "horse", "horses", "neighing", "neighs", "neigh"),
    "owl": ("an", "owl", "owls", "hooting", "hoots", "hoot"),
    "pig": ("a", "pig", "pigs", "grunting", "grunts", "grunt"),
    "rooster": ("a", "rooster", "roosters", "crowing", "crows", "crow"),
    "sheep": ("a", "sheep", "sheep", "bleating", "bleats", "bleat"),
}
_ANIMAL_TRAIN = ("{a} {n} {ing}", "{a} {ing} {n}", "the sound of {a} {n}", "{pl} {ing}", "{a} {n} {s}",
                 "the {snd} of {a} {n}", "{n} {ing}", "{ing} {n}", "{a} {n} {s} loudly")
_ANIMAL_HELDOUT = ("{a} {n} is {ing}", "{ing} {pl}", "the sound of {pl} {ing}", "{pl} {ing} loudly")

_LANGUAGE_TRAIN = ("someone speaking {L}", "{L} speech", "a voice speaking in {L}", "a person talking in {L}",
                   "spoken {L}", "speaking {L}", "someone talks in {L}", "the {L} language")
_LANGUAGE_HELDOUT = ("speech in {L}", "someone is talking in {L}", "a person speaking {L}",
                     "a voice talking {L}")

_TRAIN: dict[str, dict[str, tuple[str, ...]]] = {
    "gender": {
        "male": ("a male voice", "a man talks", "a man talking", "a male speaker", "a man's voice",
                 "man speaking", "the voice of a man", "a man says something"),
        "female": ("a female voice", "a woman talks", "a woman talking", "a female speaker", "a woman's voice",
                   "woman speaking", "the voice of a woman", "a woman says something"),
    },
    "emotion": {
        "angry": ("someone speaking angrily", "an angry tone of voice", "angry voice", "in an angry voice",
                  "a voice full of anger", "someone who sounds angry", "angry speech", "the speaker is angry"),
        "disgust": ("someone speaking with disgust", "a disgusted tone of voice", "disgusted voice",
                    "in a disgusted voice", "a voice full of disgust", "someone who sounds disgusted",
                    "disgusted speech", "the speaker is disgusted"),
        "fear": ("someone speaking fearfully", "a fearful tone of voice", "fearful voice", "in a fearful voice",
                 "a voice full of fear", "someone who sounds afraid", "frightened speech", "the speaker is afraid"),
        "happy": ("someone speaking happily", "a happy tone of voice", "happy voice", "in a happy voice",
                  "a voice full of joy", "someone who sounds happy", "cheerful speech", "the speaker is happy"),
        "sad": ("someone speaking sadly", "a sad tone of voice", "sad voice", "in a sad voice",
                "a voice full of sadness", "someone who sounds sad", "sad speech", "the speaker is sad"),
        "neutral": ("someone speaking calmly", "a neutral tone of voice", "neutral voice", "in a neutral voice",
                    "a voice without emotion", "someone who sounds calm", "neutral speech", "the speaker is calm"),
    },
    "sound_event": {
        "siren": ("a wailing siren", "the sound of a siren", "sirens wailing", "siren wailing", "an emergency siren",
                  "a siren wails", "police siren"),
        "engine": ("a running engine", "the sound of an engine", "engine running", "an engine hum",
                   "a motor running", "an engine runs", "engine noise"),
        "rain": ("falling rain", "the sound of rain", "rain falls", "rainfall", "heavy rain", "rain pouring down",
                 "raining"),
        "beep": ("an electronic beep", "beeping", "beeps", "a beeping sound", "electronic beeps",
                 "the sound of a beep", "a device beeping"),
        "chirp": ("electronic chirping", "chirps", "a chirping sound", "an electronic chirp", "chirping",
                  "the sound of a chirp", "synthetic chirps"),
        "knocking": ("a knock on the door", "someone knocking", "door knocking", "knocking", "knocks on a door",
                     "the sound of knocking", "someone knocks on a door"),
        "coin": ("a coin sound from a video game", "a coin pickup chime", "a game coin sound", "coin chime",
                 "video-game coin", "the chime of a coin", "collecting a coin in a game"),
        "explosion": ("a loud explosion", "a blast", "something exploding", "the sound of an explosion",
                      "explosions", "a bomb exploding", "a big blast"),
        "laser": ("a laser shot", "a zapping laser", "the sound of a laser", "laser zaps", "laser zap",
                  "a laser gun firing", "zap of a laser"),
        "jump": ("a cartoon jump", "a jumping sound effect", "the sound of a cartoon jump", "cartoon jump sound",
                 "a cartoon character jumping", "a boing sound", "jump sound"),
        "buzzer": ("a buzzer", "an error sound", "a wrong-answer buzzer", "a buzzing error sound", "error buzzer",
                   "a buzzer going off", "the error buzz"),
        "powerup": ("a power-up sound", "a video-game power-up", "a power-up jingle from a game",
                    "a game power-up tune", "power-up jingle", "picking up a power-up in a game",
                    "a rising power-up melody"),
    },
}

_HELDOUT: dict[str, dict[str, tuple[str, ...]]] = {
    "gender": {
        "male": ("a man is speaking", "a male voice speaking", "the voice of a male speaker", "a man is talking"),
        "female": ("a woman is speaking", "a female voice speaking", "the voice of a female speaker",
                   "a woman is talking"),
    },
    "emotion": {
        "angry": ("someone who is angry", "speech in an angry tone", "an angry speaker", "angrily speaking"),
        "disgust": ("someone who is disgusted", "speech in a disgusted tone", "a disgusted speaker",
                    "speaking with disgust"),
        "fear": ("someone who is afraid", "speech in a fearful tone", "a fearful speaker", "fearfully speaking"),
        "happy": ("someone who is happy", "speech in a happy tone", "a happy speaker", "happily speaking"),
        "sad": ("someone who is sad", "speech in a sad tone", "a sad speaker", "sadly speaking"),
        "neutral": ("someone who is calm", "speech in a neutral tone", "a neutral speaker", "calmly speaking"),
    },
    "sound_event": {
        "siren": ("a siren is wailing", "wailing sirens", "the sound of sirens wailing", "a police siren wails"),
        "engine": ("an engine is running", "a motor is running", "the sound of an engine running", "a motor hum"),
        "rain": ("rain is falling", "the sound of falling rain", "heavy rainfall", "rain pouring"),
        "beep": ("a device is beeping", "a beeping device", "the sound of beeps", "the beeping of a device"),
        "chirp": ("an electronic chirping sound", "the sound of chirps", "chirps from a device", "synthetic chirping"),
        "knocking": ("someone is knocking on a door", "a door knock", "a knock", "the sound of a knock"),
        "coin": ("the chime of a video-game coin", "the coin sound of a video game", "a game coin chime",
                 "the sound of a coin"),
        "explosion": ("a loud blast", "the sound of a blast", "a bomb blast", "an explosion sound"),
        "laser": ("a laser is firing", "a laser zapping", "a laser gun zap", "a laser gun"),
        "jump": ("a cartoon character is jumping", "the jump sound of a cartoon", "a cartoon jumping sound",
                 "jumping sound"),
        "buzzer": ("an error buzzer sound", "a buzzer is going off", "the sound of a buzzer", "a buzzing sound"),
        "powerup": ("a power-up jingle in a game", "the power-up sound of a game", "a video-game power-up tune",
                    "power-up melody"),
    },
}


def _animal(forms: _Forms, templates: tuple[str, ...]) -> tuple[str, ...]:
    a, n, pl, ing, s, snd = forms
    return tuple(t.format(a=a, n=n, pl=pl, ing=ing, s=s, snd=snd) for t in templates)


def _languages(templates: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    return {lang: tuple(t.format(L=lang) for t in templates) for lang in LABEL_PHRASES["language"]}


def _assemble(table: dict[str, dict[str, tuple[str, ...]]], animal: tuple[str, ...], language: tuple[str, ...],
              exclude: frozenset[str] = frozenset()) -> dict[str, dict[str, tuple[str, ...]]]:
    """Every track of LABEL_PHRASES, each label's phrases without its reference phrase, repeats or
    ``exclude`` (the training phrases, when assembling the held-out ones: "bleating sheep" is both)."""
    full = {**table, "animal": {k: _animal(f, animal) for k, f in _ANIMALS.items()},
            "language": _languages(language)}
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for track, labels in LABEL_PHRASES.items():
        out[track] = {lab: tuple(p for p in dict.fromkeys(full[track][lab]) if p != ref and p not in exclude)
                      for lab, ref in labels.items()}
    return out


TRAIN_PARAPHRASES = _assemble(_TRAIN, _ANIMAL_TRAIN, _LANGUAGE_TRAIN)
"""Track -> label -> paraphrases that train the text space (the reference phrase excluded)."""
HELDOUT_PARAPHRASES = _assemble(_HELDOUT, _ANIMAL_HELDOUT, _LANGUAGE_HELDOUT, frozenset(
    p for labels in TRAIN_PARAPHRASES.values() for phrases in labels.values() for p in phrases))
"""Track -> label -> paraphrases never trained on: they only measure the text space."""


def concept_phrases(table: dict[str, dict[str, tuple[str, ...]]], with_reference: bool = True,
                    ) -> dict[tuple[str, str], tuple[str, ...]]:
    """(track, label) -> its phrases from ``table``, the reference phrase first when asked."""
    return {(track, lab): ((LABEL_PHRASES[track][lab],) if with_reference else ()) + phrases
            for track, labels in table.items() for lab, phrases in labels.items()}
