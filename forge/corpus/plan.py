"""The plan of the mini corpus: every clip's id, split and labels, and how to render it.

Four groups of clips, each with the labels of the tracks that apply:

- speech (gender, language, emotion): espeak-ng, see :mod:`forge.corpus.speech`;
  one cell per (language, gender, emotion), ``speech_per_cell`` clips each; the
  test split reads only held-out sentences (:mod:`forge.corpus.sentences`) in
  held-out voices.
- animal: real CC0 recordings (``sources/animals``) cropped, re-pitched,
  stretched, filtered and mixed with noise; recordings longer than 4 s give
  their last 35 % only to the test split.
- sound_event: six synthesized classes (:mod:`forge.corpus.synth`) and six
  classes of CC0 game sound effects (``sources/sfx``), whose last variant file
  is held out for the test split when a class has three or more.
- composite (:mod:`forge.corpus.composite`): a labelled sound that fills only a
  part of its clip (a bark inside speech, an event inside background noise, an
  animal then a sound event), so that coverage and mean activation can differ.

Every clip records, per labelled track, where in the clip its sound is (``spans``).
A clip is a pure function of (seed, clip id): :func:`clip_rng` gives its random
generator, so builds are deterministic and one clip can be re-rendered alone.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from ard_core.audio import SAMPLE_RATE, load_audio
from forge.corpus import augment as aug
from forge.corpus import sentences, speech, synth
from forge.corpus.config import MiniCorpusConfig

ANIMAL_CAPTIONS: dict[str, str] = {
    "cat": "a cat meowing", "cow": "a cow mooing", "dog": "dogs barking", "duck": "ducks quacking",
    "frog": "frogs croaking", "horse": "a horse neighing", "owl": "an owl hooting",
    "pig": "a pig grunting", "rooster": "a rooster crowing", "sheep": "a sheep bleating",
}
# label -> (caption, file stems under sources/sfx) for the game sound effects.
SFX_CLASSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "coin": ("a video-game coin chime", tuple(f"coin{i}" for i in range(1, 6))),
    "explosion": ("an explosion", ("explosion1", "explosion2")),
    "laser": ("a laser zap", tuple(f"laser{i}" for i in range(1, 6))),
    "jump": ("a cartoon jump sound", tuple(f"jump{i}" for i in range(1, 6))),
    "buzzer": ("an error buzzer", tuple(f"error{i}" for i in range(1, 6))),
    "powerup": ("a video-game power-up jingle", tuple(f"upgrade{i}" for i in range(1, 6))),
}
EVENT_CLASSES: tuple[str, ...] = (*synth.GENERATORS, *SFX_CLASSES)


class Rendered(NamedTuple):
    """What rendering one clip gives."""

    audio: np.ndarray
    caption: str
    meta: dict[str, str]
    spans: dict[str, tuple[tuple[float, float], ...]]
    """Track -> where its label sounds in the clip (:func:`forge.corpus.augment.active_segments`)."""


class ClipPlan(NamedTuple):
    """One clip to make: its id, split, labels, and the function that renders it."""

    clip_id: str
    group: str
    split: str
    labels: dict[str, str]
    render: Callable[[np.random.Generator], Rendered]


class Sources(NamedTuple):
    """The real recordings, already cut by split: what the train/probe and the test splits may hear."""

    animals: dict[tuple[str, bool], np.ndarray]
    """(label, is_test) -> the part of the recording that split may use."""
    sfx: dict[tuple[str, bool], dict[str, np.ndarray]]
    """(label, is_test) -> {variant stem: audio} that split may use."""


def split_counts(sizes: list[int], probe_frac: float, test_frac: float) -> list[tuple[int, int]]:
    """(n_test, n_probe) per stratum, rounding the running totals so the overall
    fractions are exact even when each stratum is small."""
    out, done_t, done_p, total = [], 0, 0, 0
    for n in sizes:
        total += n
        t = int(math.floor(total * test_frac + 0.5)) - done_t
        p = int(math.floor(total * probe_frac + 0.5)) - done_p
        t, p = max(0, min(t, n)), max(0, min(p, n - max(0, min(t, n))))
        out.append((t, p))
        done_t, done_p = done_t + t, done_p + p
    return out


def splits_for(n: int, counts: tuple[int, int]) -> list[str]:
    n_test, n_probe = counts
    return ["test"] * n_test + ["probe"] * n_probe + ["train"] * (n - n_test - n_probe)


def clip_rng(seed: int, clip_id: str) -> np.random.Generator:
    """The generator of one clip: a function of (seed, clip id) only, not of build order."""
    digest = hashlib.sha256(f"{seed}:{clip_id}".encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def finish(x: np.ndarray, rng: np.random.Generator, cfg: MiniCorpusConfig,
           snr_range: tuple[float, float]) -> tuple[np.ndarray, float]:
    """Common tail of non-speech clips: EQ, level, background noise, length, no clipping."""
    x = aug.random_eq(aug.fade(x), rng)
    x = aug.normalize_peak(x, rng.uniform(-12.0, -1.0))
    snr = float(rng.uniform(*snr_range))
    noise = aug.colored_noise(len(x), rng, str(rng.choice(["white", "pink", "brown"])))
    x = aug.fit_length(aug.mix_at_snr(x, noise, snr), cfg.min_duration_s, cfg.max_duration_s)
    return aug.no_clip(x), snr


def _source_instances(src: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """1-3 re-pitched copies of a short source to scatter over a clip of n samples."""
    k = int(rng.integers(1, 4))
    return [aug.normalize_peak(aug.resample_ratio(src, rng.uniform(0.85, 1.2)), rng.uniform(-6, 0))
            for _ in range(k)] if len(src) < n else [src]


def animal_audio(src: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of an animal recording: a crop (or scattered copies) at a random tape speed."""
    ratio = float(rng.uniform(0.88, 1.14))  # tape speed: pitch and tempo together
    want = int(n * ratio)
    if len(src) >= want:
        return aug.resample_ratio(aug.fade(aug.random_crop(src, want, rng)), ratio)
    return aug.place([aug.resample_ratio(c, ratio) for c in _source_instances(src, n, rng)], n, rng)


def sfx_audio(variants: dict[str, np.ndarray], n: int, rng: np.random.Generator,
              max_events: int = 4) -> tuple[np.ndarray, list[str]]:
    """``n`` samples holding 1..max_events re-pitched game-sound variants, and which ones."""
    names = sorted(variants)
    picks = [str(rng.choice(names)) for _ in range(int(rng.integers(1, max_events + 1)))]
    events = [aug.normalize_peak(aug.resample_ratio(variants[p], rng.uniform(0.85, 1.2)), rng.uniform(-6, 0))
              for p in picks]
    return aug.place(events, n, rng), picks


def _spans_of(track: str, clean: np.ndarray) -> dict[str, tuple[tuple[float, float], ...]]:
    return {track: tuple(aug.active_segments(clean))}


def _animal_render(src: np.ndarray, label: str, cfg: MiniCorpusConfig, source_name: str):
    def render(rng: np.random.Generator) -> Rendered:
        n = int(rng.uniform(max(1.5, cfg.min_duration_s), cfg.max_duration_s) * SAMPLE_RATE)
        x = animal_audio(src, n, rng)
        if rng.random() < 0.5:
            x = aug.time_stretch(x, rng.uniform(0.85, 1.15))
        spans = _spans_of("animal", aug.fit_length(x, cfg.min_duration_s, cfg.max_duration_s))
        x, snr = finish(x, rng, cfg, (5.0, 30.0))
        caption = ANIMAL_CAPTIONS[label] + (" with background noise" if snr < 12 else "")
        return Rendered(x, caption, {"source": source_name, "snr_db": f"{snr:.1f}"}, spans)
    return render


def _sfx_render(variants: dict[str, np.ndarray], label: str, cfg: MiniCorpusConfig):
    def render(rng: np.random.Generator) -> Rendered:
        n = int(rng.uniform(cfg.min_duration_s, cfg.max_duration_s) * SAMPLE_RATE)
        clean, picks = sfx_audio(variants, n, rng)
        spans = _spans_of("sound_event", aug.fit_length(clean, cfg.min_duration_s, cfg.max_duration_s))
        x, snr = finish(clean, rng, cfg, (10.0, 40.0))
        return Rendered(x, SFX_CLASSES[label][0], {"source": ";".join(f"sfx/{p}.wav" for p in picks),
                                                   "snr_db": f"{snr:.1f}"}, spans)
    return render


def _synth_render(label: str, cfg: MiniCorpusConfig):
    def render(rng: np.random.Generator) -> Rendered:
        n = int(rng.uniform(cfg.min_duration_s, cfg.max_duration_s) * SAMPLE_RATE)
        clean = synth.GENERATORS[label](rng, n)
        spans = _spans_of("sound_event", aug.fit_length(clean, cfg.min_duration_s, cfg.max_duration_s))
        x, snr = finish(clean, rng, cfg, (10.0, 40.0))
        return Rendered(x, synth.CAPTIONS[label], {"source": "synthesized", "snr_db": f"{snr:.1f}"}, spans)
    return render


def speech_meta(spec: speech.SpeechSpec) -> dict[str, str]:
    return {"source": "espeak-ng", "text": spec.sentence, "voice": f"{speech.ESPEAK_VOICES[spec.language]}+{spec.variant}",
            "espeak_pitch": str(spec.pitch), "espeak_rate": str(spec.rate)}


def _speech_render(language: str, gender: str, emotion: str, split: str, cfg: MiniCorpusConfig):
    def render(rng: np.random.Generator) -> Rendered:
        sentence = sentences.draw(language, split, rng)
        spec = speech.sample_spec(language, gender, emotion, sentence, split, rng)
        x, clean = speech.make_speech_clip(spec, rng, cfg.min_duration_s, cfg.max_duration_s)
        segs = tuple(aug.active_segments(clean))
        spans = {t: segs for t in ("gender", "language", "emotion")}
        return Rendered(x, speech.speech_caption(spec), speech_meta(spec), spans)
    return render


def _plan_speech(cfg: MiniCorpusConfig) -> list[ClipPlan]:
    # Cell order matters for the split counts (running-total rounding): emotion-major,
    # then language, with the gender order flipped on alternate (emotion, language)
    # pairs, so each emotion, language and gender gets its exact share of every split.
    cells = [(lang, g, e) for ei, e in enumerate(speech.EMOTIONS)
             for li, lang in enumerate(speech.ESPEAK_VOICES)
             for g in (("male", "female") if (ei + li) % 2 == 0 else ("female", "male"))]
    counts = split_counts([cfg.speech_per_cell] * len(cells), cfg.probe_frac, cfg.test_frac)
    plans = []
    for (lang, gender, emotion), cnt in zip(cells, counts, strict=True):
        code = speech.ESPEAK_VOICES[lang].split("-")[0]
        for i, split in enumerate(splits_for(cfg.speech_per_cell, cnt)):
            plans.append(ClipPlan(
                f"speech-{code}-{gender}-{emotion}-{i:03d}", "speech", split,
                {"gender": gender, "language": lang, "emotion": emotion},
                _speech_render(lang, gender, emotion, split, cfg)))
    return sorted(plans, key=lambda p: p.clip_id)  # manifest order: by language, gender, emotion


def _load_source(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"corpus source '{path}' is missing; restore assets/corpus/sources "
                                "(see assets/corpus/DATA.md) or run `python -m forge fetch-sources`")
    return load_audio(path)


def load_sources(sources: Path) -> Sources:
    """Read the recordings once and cut them by split (long animal recordings: the last 35 % is the
    test split's; sound effects with >= 3 variant files: the last file is the test split's)."""
    animals: dict[tuple[str, bool], np.ndarray] = {}
    for label in sorted(ANIMAL_CAPTIONS):
        src = aug.trim_silence(_load_source(sources / "animals" / f"{label}.mp3"))
        cut = int(0.65 * len(src)) if len(src) > 4 * SAMPLE_RATE else None
        animals[(label, True)] = src if cut is None else src[cut:]
        animals[(label, False)] = src if cut is None else src[:cut]
    sfx: dict[tuple[str, bool], dict[str, np.ndarray]] = {}
    for label, (_, stems) in SFX_CLASSES.items():
        loaded = {s: aug.trim_silence(_load_source(sources / "sfx" / f"{s}.wav")) for s in stems}
        held = {stems[-1]: loaded[stems[-1]]} if len(stems) >= 3 else loaded
        sfx[(label, True)] = held
        sfx[(label, False)] = {k: v for k, v in loaded.items() if k not in held} if len(stems) >= 3 else loaded
    return Sources(animals, sfx)


def _plan_animals(cfg: MiniCorpusConfig, src: Sources) -> list[ClipPlan]:
    labels = sorted(ANIMAL_CAPTIONS)
    counts = split_counts([cfg.animal_per_class] * len(labels), cfg.probe_frac, cfg.test_frac)
    plans = []
    for label, cnt in zip(labels, counts, strict=True):
        for i, split in enumerate(splits_for(cfg.animal_per_class, cnt)):
            plans.append(ClipPlan(f"animal-{label}-{i:03d}", "animal", split, {"animal": label},
                                  _animal_render(src.animals[(label, split == "test")], label, cfg,
                                                 f"animals/{label}.mp3")))
    return plans


def _plan_events(cfg: MiniCorpusConfig, src: Sources) -> list[ClipPlan]:
    counts = split_counts([cfg.event_per_class] * len(EVENT_CLASSES), cfg.probe_frac, cfg.test_frac)
    plans = []
    for label, cnt in zip(EVENT_CLASSES, counts, strict=True):
        for i, split in enumerate(splits_for(cfg.event_per_class, cnt)):
            render = (_sfx_render(src.sfx[(label, split == "test")], label, cfg) if label in SFX_CLASSES
                      else _synth_render(label, cfg))
            plans.append(ClipPlan(f"event-{label}-{i:03d}", "sound_event", split, {"sound_event": label}, render))
    return plans


def plan_corpus(cfg: MiniCorpusConfig, sources: Path) -> list[ClipPlan]:
    """Every clip of the corpus, in manifest order, without rendering any."""
    from forge.corpus.composite import plan_composites

    plans: list[ClipPlan] = []
    if "speech" in cfg.groups and cfg.speech_per_cell:
        plans += _plan_speech(cfg)
    needs_sources = {"animal", "sound_event", "composite"} & set(cfg.groups)
    src = load_sources(sources) if needs_sources else None
    if "animal" in cfg.groups and cfg.animal_per_class:
        plans += _plan_animals(cfg, src)
    if "sound_event" in cfg.groups and cfg.event_per_class:
        plans += _plan_events(cfg, src)
    if "composite" in cfg.groups:
        plans += plan_composites(cfg, src)
    return plans
