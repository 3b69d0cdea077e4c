"""How a label is said in words: the reference phrase of every (track, label).

Evaluation matches feature names against a clip's labels through CLAP text embeddings,
so a label needs a phrase, not a bare class name ("male" says nothing about sound; "a man
speaking" does). For the mini corpus's labels the phrase is written here, once; for the
labels of real datasets (FSD50K class names, IEMOCAP emotions, ...) it is the label text
itself, made readable (``Dog_and_bark`` -> "Dog and bark"), as the paper does with FSD50K.
"""

from __future__ import annotations

LABEL_PHRASES: dict[str, dict[str, str]] = {
    "gender": {"male": "a man speaking", "female": "a woman speaking"},
    "language": {lang: f"someone speaking {lang}" for lang in
                 ("English", "German", "Spanish", "French", "Italian", "Chinese", "Japanese", "Korean")},
    "emotion": {"angry": "an angry voice", "disgust": "a disgusted voice", "fear": "a fearful voice",
                "happy": "a happy voice", "sad": "a sad voice", "neutral": "a neutral voice"},
    "animal": {"cat": "a cat meowing", "cow": "a cow mooing", "dog": "a dog barking", "duck": "a duck quacking",
               "frog": "a frog croaking", "horse": "a horse neighing", "owl": "an owl hooting",
               "pig": "a pig grunting", "rooster": "a rooster crowing", "sheep": "a sheep bleating"},
    "sound_event": {"siren": "a siren wailing", "engine": "an engine running", "rain": "rain falling",
                    "beep": "electronic beeping", "chirp": "electronic chirps", "knocking": "knocking on a door",
                    "coin": "a video-game coin chime", "explosion": "an explosion", "laser": "a laser zap",
                    "jump": "a cartoon jump sound", "buzzer": "an error buzzer",
                    "powerup": "a video-game power-up jingle"},
}
"""The reference phrase of each label of the mini corpus (the tracks of ``ard_core.datasets.TRACKS``)."""


def label_phrase(track: str, label: str) -> str:
    """The words for (track, label): the table above, else the label itself made readable."""
    phrase = LABEL_PHRASES.get(track, {}).get(label)
    if phrase is not None:
        return phrase
    return " ".join(label.replace("_", " ").split())
