"""AudioLens Table I prompts, the neutral-emotion rule, and the label-token rule."""

from __future__ import annotations

import pytest

from ard_core.prompts import (
    CAPTION_QUESTION, FORMATS, TRACK_PROMPTS, attribute_prompt, candidate_labels, label_token_ids,
    p3_options, questions_for,
)

# Table I of the AudioLens paper, typeset apostrophes written as ASCII.
TABLE_I = {
    ("gender", "P1"): ("", "The speaker's gender is"),
    ("gender", "P2"): ("What is the gender of the speaker in the speech?", "The speaker's gender is"),
    ("gender", "P3"): ("What is the gender of the speaker in the speech? Possible options: male, female.",
                       "The speaker's gender is"),
    ("language", "P1"): ("", "The speech's spoken language is"),
    ("language", "P2"): ("What is the language spoken in the speech?", "The speech's spoken language is"),
    ("language", "P3"): ("What is the language spoken in the speech? Possible options: English, German, "
                         "Spanish, French, Italian, Chinese, Japanese, Korean.", "The speech's spoken language is"),
    ("emotion", "P1"): ("", "The speaker's emotion is"),
    ("emotion", "P2"): ("What is the emotion of the speaker in the speech?", "The speaker's emotion is"),
    ("emotion", "P3"): ("What is the emotion of the speaker in the speech? Possible options: angry, disgust, "
                        "fear, happy, sad.", "The speaker's emotion is"),
    ("animal", "P1"): ("", "The sound file's animal is"),
    ("animal", "P2"): ("What animal makes the sound?", "The sound file's animal is"),
    ("animal", "P3"): ("What animal makes the sound? Possible options: dog, cat, pig, cow, frog, hen, rooster, "
                       "sheep, crow.", "The sound file's animal is"),
}


@pytest.mark.parametrize("key", sorted(TABLE_I))
def test_table_one_verbatim(key: tuple[str, str]) -> None:
    track, fmt = key
    p = attribute_prompt(track, fmt)
    assert (p.question, p.prefix) == TABLE_I[key]
    assert p.prefix.endswith(" is") and p.fmt == fmt


def test_every_track_has_three_formats_ending_in_is() -> None:
    for track in TRACK_PROMPTS:
        opts = ("a", "b")
        for fmt in FORMATS:
            p = attribute_prompt(track, fmt, opts)
            assert p.prefix.endswith(" is")
        assert attribute_prompt(track, "P3", opts).question.endswith("Possible options: a, b.")
    assert CAPTION_QUESTION == "Generate a detailed caption for the audio clip"


def test_sound_event_p3_needs_options_and_unknown_things_raise() -> None:
    with pytest.raises(ValueError, match="needs options"):
        attribute_prompt("sound_event", "P3")
    with pytest.raises(KeyError, match="no prompts for track"):
        attribute_prompt("colour", "P1")
    with pytest.raises(ValueError, match="unknown prompt format"):
        attribute_prompt("gender", "P4")
    with pytest.raises(ValueError, match="emotion track only"):
        attribute_prompt("gender", "P3n")


def test_p3_options_keep_table_order_then_sort_the_rest() -> None:
    got = p3_options("animal", ["sheep", "owl", "dog", "duck", "cat"])
    assert got == ("dog", "cat", "sheep", "duck", "owl")
    langs = ["Korean", "English", "French"]
    assert p3_options("language", langs) == ("English", "French", "Korean")
    assert p3_options("sound_event", ["siren", "beep"]) == ("beep", "siren")


EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "neutral")


def test_neutral_clips_never_see_an_options_list_that_gives_them_away() -> None:
    neutral = questions_for("emotion", "neutral", EMOTIONS)
    assert [p.fmt for p in neutral] == ["P1", "P2", "P3n"]
    happy = questions_for("emotion", "happy", EMOTIONS)
    assert [p.fmt for p in happy] == ["P1", "P2", "P3", "P3n"]
    p3 = next(p for p in happy if p.fmt == "P3")
    assert p3.question == TABLE_I[("emotion", "P3")][0]  # Table I exactly, no 'neutral'
    p3n = next(p for p in happy if p.fmt == "P3n")
    assert p3n.question.endswith("angry, disgust, fear, happy, sad, neutral.")
    # The same P3n text for every clip, whatever its label.
    assert p3n.question == next(p for p in neutral if p.fmt == "P3n").question
    assert candidate_labels("emotion", "P3", EMOTIONS) == EMOTIONS[:5]
    assert candidate_labels("emotion", "P3n", EMOTIONS) == EMOTIONS
    assert [p.fmt for p in questions_for("gender", "male", ("male", "female"))] == list(FORMATS)


@pytest.fixture(scope="module")
def bpe_tokenizer():
    from forge.tiny_audiollm.recipe import train_tokenizer

    texts = ["The speaker's gender is male", "The speaker's gender is female", "a dog barking",
             " male female dog cat"] * 50 + ["1 2 3"]
    return train_tokenizer(texts, vocab_size=600)


def test_label_token_ids_prefer_the_leading_space_token(bpe_tokenizer) -> None:
    ids = label_token_ids(bpe_tokenizer, ["male", "female", "dog"])
    for label, i in zip(["male", "female", "dog"], ids):
        assert bpe_tokenizer.convert_ids_to_tokens(i) == "Ġ" + label  # 'Ġ' is byte-level BPE's space
        assert bpe_tokenizer.encode(" " + label, add_special_tokens=False) == [i]


def test_label_token_ids_first_subtoken_and_bare_fallback(bpe_tokenizer) -> None:
    # A longer word splits into pieces: its first piece (with the space) stands for it.
    spaced = bpe_tokenizer.encode(" dogs", add_special_tokens=False)
    assert len(spaced) == 2
    assert label_token_ids(bpe_tokenizer, ["dogs"]) == [spaced[0]]
    # When the spaced form starts with a bare space token (Qwen2's pre-tokenizer splits
    # " 1" into " " + "1"; an unseen " zebra" has no "Ġz" merge), the space cannot stand
    # for the label and the rule falls back to the label without its space.
    for label in ("1", "zebra"):
        first = bpe_tokenizer.encode(" " + label, add_special_tokens=False)[0]
        assert bpe_tokenizer.decode([first]) == " "
        assert label_token_ids(bpe_tokenizer, [label]) == [bpe_tokenizer.encode(label, add_special_tokens=False)[0]]


def test_label_token_ids_reject_labels_sharing_a_token(bpe_tokenizer) -> None:
    with pytest.raises(ValueError, match="share first token"):
        label_token_ids(bpe_tokenizer, ["zebra", "zeppelin"])
