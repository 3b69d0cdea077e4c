"""Attribute prompts (AudioLens Table I), the caption prompt, and label tokens.

AudioLens (Table I) asks each auditory attribute in three formats, all ending
with an assistant prefix whose last token is "is", so that the next token is the
attribute itself:

- **P1** (direct): no question; the assistant turn starts with the prefix.
- **P2** (QA): a user question, then the prefix.
- **P3** (MC): the question followed by ``Possible options: a, b, c.``, then the prefix.

The strings below are Table I's, with the paper's typeset apostrophe (’) written
as the ASCII ``'`` the models' chat data uses. The audio placeholder and the
``<USER>``/``<ASST>`` headers come from the model's chat template
(:meth:`ard_core.models.base.AudioLLM.build_prompt`), not from here.

Two choices the paper does not make:

- **sound_event** is not a Table I attribute. It is asked like the animal track:
  P2 "What sound event is heard in the audio?" and prefix
  "The sound file's sound event is".
- **neutral emotion.** Table I's P3 lists SAKURA's five emotions (angry, disgust,
  fear, happy, sad); the mini corpus also has 'neutral' (steering Neutral -> Happy
  needs it). Listing 'neutral' only when the clip is neutral would give the answer
  away, so there are two P3 variants: ``P3`` with Table I's five options, asked only
  of non-neutral clips, and ``P3n`` whose options add 'neutral', asked of every
  emotion clip. P1 and P2 are asked of every clip. :func:`questions_for` encodes
  this rule; training and evaluation both use it.

Label tokens: :func:`label_token_ids` maps each label to one vocabulary id by
the rule the logit lens documents: *a label maps to its first sub-token,
preferring the leading-space variant* (after "... is" the answer follows a space).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

FORMATS: tuple[str, ...] = ("P1", "P2", "P3")
"""AudioLens prompt formats: direct, question-answer, multiple-choice."""

EMOTION_NEUTRAL_FORMAT = "P3n"
"""The P3 variant whose emotion options add 'neutral' (see the module docstring)."""

CAPTION_QUESTION = "Generate a detailed caption for the audio clip"
"""The captioning instruction (AR&D's describe step and the tiny model's caption task)."""


@dataclass(frozen=True)
class TrackPrompt:
    """How one track is asked: Table I's question, prefix and P3 option list."""

    track: str
    """Track name (see :data:`ard_core.datasets.TRACKS`)."""
    question: str
    """The P2/P3 user question."""
    prefix: str
    """The assistant prefix, ending in 'is'; the next token is the answer."""
    paper_options: tuple[str, ...]
    """The option list Table I prints in P3 (SAKURA's labels); empty for sound_event."""


TRACK_PROMPTS: dict[str, TrackPrompt] = {
    "gender": TrackPrompt(
        "gender",
        "What is the gender of the speaker in the speech?",
        "The speaker's gender is",
        ("male", "female"),
    ),
    "language": TrackPrompt(
        "language",
        "What is the language spoken in the speech?",
        "The speech's spoken language is",
        ("English", "German", "Spanish", "French", "Italian", "Chinese", "Japanese", "Korean"),
    ),
    "emotion": TrackPrompt(
        "emotion",
        "What is the emotion of the speaker in the speech?",
        "The speaker's emotion is",
        ("angry", "disgust", "fear", "happy", "sad"),
    ),
    "animal": TrackPrompt(
        "animal",
        "What animal makes the sound?",
        "The sound file's animal is",
        ("dog", "cat", "pig", "cow", "frog", "hen", "rooster", "sheep", "crow"),
    ),
    # Not in Table I: worded like the animal track (module docstring).
    "sound_event": TrackPrompt(
        "sound_event",
        "What sound event is heard in the audio?",
        "The sound file's sound event is",
        (),
    ),
}

NEUTRAL = "neutral"


class Prompt(NamedTuple):
    """A prompt to hand to ``AudioLLM.build_prompt(question, assistant_prefix)``."""

    fmt: str
    """'P1', 'P2', 'P3' or 'P3n' (emotion with 'neutral' among the options)."""
    question: str
    """User-turn text after the audio ('' for P1)."""
    prefix: str
    """Assistant prefix; the next token is the answer."""


def _track(track: str) -> TrackPrompt:
    if track not in TRACK_PROMPTS:
        raise KeyError(f"no prompts for track {track!r}; known tracks: {sorted(TRACK_PROMPTS)}")
    return TRACK_PROMPTS[track]


def p3_options(track: str, labels: Sequence[str]) -> tuple[str, ...]:
    """Order ``labels`` for a P3 option list: Table I's order first, then the rest sorted.

    With SAKURA's labels this reproduces Table I exactly; a corpus with other
    animals keeps the shared ones where the paper puts them.
    """
    paper = _track(track).paper_options
    present = set(labels)
    head = [x for x in paper if x in present]
    return tuple(head + sorted(present - set(head)))


def attribute_prompt(track: str, fmt: str, options: Sequence[str] = ()) -> Prompt:
    """The ``fmt`` prompt for ``track``; ``options`` (P3/P3n only) default to Table I's list."""
    tp = _track(track)
    if fmt == "P1":
        return Prompt(fmt, "", tp.prefix)
    if fmt == "P2":
        return Prompt(fmt, tp.question, tp.prefix)
    if fmt in ("P3", EMOTION_NEUTRAL_FORMAT):
        opts = tuple(options) or tp.paper_options
        if fmt == EMOTION_NEUTRAL_FORMAT:
            if track != "emotion":
                raise ValueError(f"format {fmt!r} is for the emotion track only, not {track!r}")
            opts = tuple(o for o in opts if o != NEUTRAL) + (NEUTRAL,)
        if not opts:
            raise ValueError(f"P3 for track {track!r} needs options (Table I has none for it)")
        return Prompt(fmt, f"{tp.question} Possible options: {', '.join(opts)}.", tp.prefix)
    raise ValueError(f"unknown prompt format {fmt!r}; use one of {FORMATS + (EMOTION_NEUTRAL_FORMAT,)}")


def questions_for(track: str, label: str, options: Sequence[str]) -> list[Prompt]:
    """Every prompt a clip labelled ``label`` on ``track`` is asked.

    ``options`` is the track's label set (ordered with :func:`p3_options`). For
    emotion the P3 options are Table I's five without 'neutral' and neutral
    clips skip that P3 (they get P3n instead; see the module docstring).
    """
    if track != "emotion":
        return [attribute_prompt(track, f, options) for f in FORMATS]
    five = tuple(o for o in options if o != NEUTRAL)
    out = [attribute_prompt(track, "P1"), attribute_prompt(track, "P2")]
    if label != NEUTRAL:
        out.append(attribute_prompt(track, "P3", five))
    if NEUTRAL in options:
        out.append(attribute_prompt(track, EMOTION_NEUTRAL_FORMAT, options))
    return out


def candidate_labels(track: str, fmt: str, options: Sequence[str]) -> tuple[str, ...]:
    """The labels an answer is chosen among for ``fmt`` (P3 excludes 'neutral' for emotion)."""
    if track == "emotion" and fmt == "P3":
        return tuple(o for o in options if o != NEUTRAL)
    return tuple(options)


def label_token_ids(tokenizer: object, labels: Sequence[str]) -> list[int]:
    """One vocabulary id per label: its first sub-token, preferring the leading-space variant.

    " male" is tried first (after "... is" the answer follows a space); when that
    gives no token, or only a bare space token, the label without the space is
    used. Raises ValueError when two labels share an id, since the lens could not
    tell them apart.
    """
    ids: list[int] = []
    for label in labels:
        if not label:
            raise ValueError("empty label; every label needs at least one character")
        spaced = tokenizer.encode(" " + label, add_special_tokens=False)
        if spaced and tokenizer.decode([spaced[0]]).strip():
            ids.append(int(spaced[0]))
            continue
        bare = tokenizer.encode(label, add_special_tokens=False)
        if not bare:
            raise ValueError(f"label {label!r} encodes to no tokens")
        ids.append(int(bare[0]))
    seen: dict[int, str] = {}
    for label, i in zip(labels, ids):
        if i in seen:
            raise ValueError(
                f"labels {seen[i]!r} and {label!r} share first token {i} "
                f"({tokenizer.decode([i])!r}); the logit lens cannot tell them apart"
            )
        seen[i] = label
    return ids
