"""Composite clips: a labelled sound that fills only a part of its clip.

AR&D's representativeness score r = mu x c exists because a concept can be present in
only a part of a clip: high mean activation over a brief segment is not the same as a
feature expressed throughout (section 2.2). In a corpus where every clip is one sound
from start to end, coverage is close to 1 wherever a feature fires and r cannot differ
from mu. These clips put that situation in:

- ``mix-speech-LABEL-i``: speech (gender, language, emotion, from the split's sentences and
  voices) with an animal or sound event of 0.4-1.0 s inside it;
- ``mix-noise-LABEL-i``: an animal or sound event of 0.3-0.9 s inside 2-3 s of background noise;
- ``mix-seq-ANIMAL-i``: an animal and then a sound event (or the reverse), 0.8-1.4 s each.

Every track present is labelled, and ``spans`` say where each one sounds. Splits stay
disjoint by source material: a test clip takes its speech from the test sentences and
voices, its animal from the recording's test part and its game sound from the held-out
variant file, exactly as the single-sound clips do.
"""

from __future__ import annotations

import numpy as np

from ard_core.audio import SAMPLE_RATE
from forge.corpus import augment as aug
from forge.corpus import sentences, speech, synth
from forge.corpus.config import MiniCorpusConfig
from forge.corpus.plan import (ANIMAL_CAPTIONS, EVENT_CLASSES, SFX_CLASSES, ClipPlan, Rendered, Sources,
                               animal_audio, clip_rng, sfx_audio, speech_meta, split_counts, splits_for)

EVENT_LABELS: tuple[tuple[str, str], ...] = (*(("animal", a) for a in sorted(ANIMAL_CAPTIONS)),
                                             *(("sound_event", e) for e in EVENT_CLASSES))
"""(track, label) of every sound that can be placed inside another."""


def event_caption(track: str, label: str) -> str:
    if track == "animal":
        return ANIMAL_CAPTIONS[label]
    return SFX_CLASSES[label][0] if label in SFX_CLASSES else synth.CAPTIONS[label]


def event_audio(track: str, label: str, src: Sources, test: bool, seconds: float,
                rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A short event of about ``seconds`` of (track, label), from the split's source material;
    faded in and out, peak-normalised. Returns (audio, source description)."""
    n = max(int(seconds * SAMPLE_RATE), 1600)
    if track == "animal":
        x, source = animal_audio(src.animals[(label, test)], n, rng), f"animals/{label}.mp3"
    elif label in SFX_CLASSES:
        x, picks = sfx_audio(src.sfx[(label, test)], n, rng, max_events=2)
        source = ";".join(f"sfx/{p}.wav" for p in picks)
    else:
        x, source = synth.GENERATORS[label](rng, n), "synthesized"
    x = aug.fade(aug.random_eq(x, rng), 0.02)
    return aug.normalize_peak(x, 0.0), source


def _insert(base_len: int, event: np.ndarray, rng: np.random.Generator, margin_s: float = 0.15) -> np.ndarray:
    """``event`` at a random position of a zero timeline of ``base_len`` samples, away from the edges."""
    out = np.zeros(base_len, dtype=np.float32)
    margin = int(margin_s * SAMPLE_RATE)
    room = base_len - len(event) - 2 * margin
    start = margin + int(rng.integers(0, max(room, 0) + 1))
    event = event[: base_len - start]
    out[start : start + len(event)] = event
    return out


def _speech_event(track: str, label: str, split: str, src: Sources, cfg: MiniCorpusConfig,
                  talker: dict[str, str]):
    language, gender, emotion = talker["language"], talker["gender"], talker["emotion"]

    def render(rng: np.random.Generator) -> Rendered:
        spec = speech.sample_spec(language, gender, emotion, sentences.draw(language, split, rng), split, rng)
        _, talk = speech.make_speech_clip(spec, rng, max(2.0, cfg.min_duration_s), cfg.max_duration_s)
        ev, source = event_audio(track, label, src, split == "test", rng.uniform(0.4, 1.0), rng)
        placed = _insert(len(talk), ev, rng) * (aug.rms(talk) / aug.rms(ev) * aug.db_to_gain(rng.uniform(-3.0, 6.0)))
        noise = aug.colored_noise(len(talk), rng, str(rng.choice(["white", "pink", "brown"])))
        x = aug.no_clip(aug.mix_at_snr(talk + placed, noise, rng.uniform(25.0, 45.0)))
        segs = tuple(aug.active_segments(talk))
        spans = {"gender": segs, "language": segs, "emotion": segs, track: tuple(aug.active_segments(placed))}
        meta = speech_meta(spec) | {"source": f"espeak-ng;{source}"}
        return Rendered(x, f"{speech.speech_caption(spec)}, interrupted by {event_caption(track, label)}", meta, spans)
    return render


def _noise_event(track: str, label: str, split: str, src: Sources, cfg: MiniCorpusConfig,
                 talker: dict[str, str]):
    def render(rng: np.random.Generator) -> Rendered:
        n = int(rng.uniform(max(2.0, cfg.min_duration_s), cfg.max_duration_s) * SAMPLE_RATE)
        ev, source = event_audio(track, label, src, split == "test", rng.uniform(0.3, 0.9), rng)
        placed = _insert(n, aug.normalize_peak(ev, rng.uniform(-12.0, -1.0)), rng)
        noise = aug.colored_noise(n, rng, str(rng.choice(["white", "pink", "brown"])))
        x = aug.no_clip(placed + noise * (aug.rms(ev) / aug.db_to_gain(rng.uniform(6.0, 20.0))))
        spans = {track: tuple(aug.active_segments(placed))}
        return Rendered(x, f"{event_caption(track, label)} briefly, over background noise",
                        {"source": source}, spans)
    return render


def _sequence(parts: list[tuple[str, str]], split: str, src: Sources, cfg: MiniCorpusConfig):
    def render(rng: np.random.Generator) -> Rendered:
        gap = np.zeros(int(rng.uniform(0.1, 0.3) * SAMPLE_RATE), dtype=np.float32)
        lead = np.zeros(int(rng.uniform(0.05, 0.2) * SAMPLE_RATE), dtype=np.float32)
        sounds = [event_audio(t, l, src, split == "test", rng.uniform(0.8, 1.3), rng) for t, l in parts]
        pieces = [aug.normalize_peak(s, rng.uniform(-12.0, -1.0)) for s, _ in sounds]
        total = aug.fit_length(np.concatenate([lead, pieces[0], gap, pieces[1]]), cfg.min_duration_s,
                               cfg.max_duration_s)
        first = np.zeros_like(total)
        first[len(lead): len(lead) + len(pieces[0])] = total[len(lead): len(lead) + len(pieces[0])]
        spans = {parts[0][0]: tuple(aug.active_segments(first)),
                 parts[1][0]: tuple(aug.active_segments(total - first))}
        noise = aug.colored_noise(len(total), rng, str(rng.choice(["white", "pink", "brown"])))
        x = aug.no_clip(aug.mix_at_snr(total, noise, rng.uniform(15.0, 35.0)))
        caption = f"{event_caption(*parts[0])}, then {event_caption(*parts[1])}"
        return Rendered(x, caption, {"source": ";".join(s for _, s in sounds)}, spans)
    return render


def _label_rng(cfg: MiniCorpusConfig, clip_id: str) -> np.random.Generator:
    """Draws the labels a composite clip adds to its class (who speaks, which second event) at
    planning time, apart from the render's own generator, so the plan knows every label."""
    return clip_rng(cfg.seed, clip_id + "#labels")


def _talker(rng: np.random.Generator) -> dict[str, str]:
    return {"gender": str(rng.choice(["male", "female"])), "language": str(rng.choice(list(speech.ESPEAK_VOICES))),
            "emotion": str(rng.choice(speech.EMOTIONS))}


def plan_composites(cfg: MiniCorpusConfig, src: Sources) -> list[ClipPlan]:
    """Every composite clip, stratified by its event class so each class gets its split shares."""
    plans: list[ClipPlan] = []
    for kind, per_class, make in (("speech", cfg.speech_event_per_class, _speech_event),
                                  ("noise", cfg.noise_event_per_class, _noise_event)):
        if not per_class:
            continue
        counts = split_counts([per_class] * len(EVENT_LABELS), cfg.probe_frac, cfg.test_frac)
        for (track, label), cnt in zip(EVENT_LABELS, counts, strict=True):
            for i, split in enumerate(splits_for(per_class, cnt)):
                clip_id = f"mix-{kind}-{label}-{i:03d}"
                talker = _talker(_label_rng(cfg, clip_id)) if kind == "speech" else {}
                plans.append(ClipPlan(clip_id, "composite", split, talker | {track: label},
                                      make(track, label, split, src, cfg, talker)))
    if cfg.sequence_per_class:
        counts = split_counts([cfg.sequence_per_class] * len(ANIMAL_CAPTIONS), cfg.probe_frac, cfg.test_frac)
        for animal, cnt in zip(sorted(ANIMAL_CAPTIONS), counts, strict=True):
            for i, split in enumerate(splits_for(cfg.sequence_per_class, cnt)):
                clip_id = f"mix-seq-{animal}-{i:03d}"
                rng = _label_rng(cfg, clip_id)
                parts = [("animal", animal), ("sound_event", str(rng.choice(EVENT_CLASSES)))]
                if rng.random() < 0.5:
                    parts.reverse()
                plans.append(ClipPlan(clip_id, "composite", split, dict(parts), _sequence(parts, split, src, cfg)))
    return plans
