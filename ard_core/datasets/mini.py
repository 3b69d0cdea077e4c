"""The embedded mini corpus: build it, or verify a built one.

Three groups of clips, each with the labels of the tracks that apply:

- speech (gender, language, emotion): espeak-ng, see :mod:`ard_core.datasets.speech`;
  one cell per (language, gender, emotion), ``speech_per_cell`` clips each; the
  test split reads only held-out sentences.
- animal: real CC0 recordings (``sources/animals``) cropped, re-pitched,
  stretched, filtered and mixed with noise; recordings longer than 4 s give
  their last 35 % only to the test split.
- sound_event: six synthesized classes (:mod:`ard_core.datasets.synth`) and six
  classes of CC0 game sound effects (``sources/sfx``), whose last variant file
  is held out for the test split when a class has three or more.

A clip is a pure function of (seed, clip id), so builds are deterministic and a
smaller build (fewer clips per class) is quick to test.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from ard_core.audio import SAMPLE_RATE, AudioError, audio_info, load_audio, save_audio
from ard_core.config import ConfigError, from_dict, to_dict
from ard_core.datasets import augment as aug
from ard_core.datasets import speech, synth
from ard_core.datasets.manifest import ClipRecord, load_manifest, manifest_hash, save_manifest

log = logging.getLogger(__name__)

DATASET_NAME = "mini"
GROUPS: tuple[str, ...] = ("speech", "animal", "sound_event")

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


@dataclass
class MiniCorpusConfig:
    """Build settings of the mini corpus (the ``[dataset.mini]`` table)."""

    seed: int = 0
    """Seed of every random choice in the build (independent of [run].seed, so that
    training seeds can change without rebuilding the committed corpus)."""
    speech_per_cell: int = 10
    """Speech clips per (language, gender, emotion) cell: 8 x 2 x 6 cells."""
    animal_per_class: int = 40
    """Clips per animal class (10 classes)."""
    event_per_class: int = 40
    """Clips per sound-event class (12 classes)."""
    min_duration_s: float = 1.0
    """Shortest clip; shorter renders are padded with silence."""
    max_duration_s: float = 3.0
    """Longest clip; longer renders are cropped with a fade-out. The tiny models'
    audio encoders are sized to it."""
    probe_frac: float = 0.15
    """Fraction of each class in the probe split."""
    test_frac: float = 0.15
    """Fraction of each class in the test split."""
    audio_format: str = "ogg"
    """File format of the clips: 'ogg' (Vorbis, small; the committed corpus) or 'flac' / 'wav'."""
    groups: tuple[str, ...] = GROUPS
    """Which clip groups to build: any of 'speech', 'animal', 'sound_event'."""

    def __post_init__(self) -> None:
        for key in ("speech_per_cell", "animal_per_class", "event_per_class"):
            if getattr(self, key) < 0:
                raise ConfigError(f"[dataset.mini].{key} must be >= 0")
        if not 0.5 <= self.min_duration_s <= self.max_duration_s <= 30.0:
            raise ConfigError("[dataset.mini] needs 0.5 <= min_duration_s <= max_duration_s <= 30")
        if self.probe_frac < 0 or self.test_frac < 0 or self.probe_frac + self.test_frac >= 1:
            raise ConfigError("[dataset.mini] probe_frac and test_frac must be >= 0 and sum below 1")
        if self.audio_format not in ("ogg", "flac", "wav"):
            raise ConfigError(f"[dataset.mini].audio_format {self.audio_format!r}: use 'ogg', 'flac' or 'wav'")
        self.groups = tuple(self.groups)
        bad = [g for g in self.groups if g not in GROUPS]
        if bad or not self.groups:
            raise ConfigError(f"[dataset.mini].groups {list(self.groups)}: choose from {list(GROUPS)}")


class ClipPlan(NamedTuple):
    """One clip to make: its id, split, labels, and the function that renders it."""

    clip_id: str
    group: str
    split: str
    labels: dict[str, str]
    render: Callable[[np.random.Generator], tuple[np.ndarray, str, dict[str, str]]]
    """rng -> (audio, caption, meta)."""


def _split_counts(sizes: list[int], probe_frac: float, test_frac: float) -> list[tuple[int, int]]:
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


def _splits_for(n: int, counts: tuple[int, int]) -> list[str]:
    n_test, n_probe = counts
    return ["test"] * n_test + ["probe"] * n_probe + ["train"] * (n - n_test - n_probe)


def _clip_rng(seed: int, clip_id: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{clip_id}".encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def _finish(x: np.ndarray, rng: np.random.Generator, cfg: MiniCorpusConfig,
            snr_range: tuple[float, float]) -> tuple[np.ndarray, float]:
    """Common tail of non-speech clips: EQ, level, background noise, length, no clipping."""
    x = aug.random_eq(aug.fade(x), rng)
    x = aug.normalize_peak(x, rng.uniform(-12.0, -1.0))
    snr = float(rng.uniform(*snr_range))
    noise = aug.colored_noise(len(x), rng, str(rng.choice(["white", "pink", "brown"])))
    x = aug.fit_length(aug.mix_at_snr(x, noise, snr), cfg.min_duration_s, cfg.max_duration_s)
    peak = float(np.max(np.abs(x)))
    return (x * (0.98 / peak) if peak > 0.98 else x).astype(np.float32), snr


def _source_instances(src: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """1-3 re-pitched copies of a short source to scatter over a clip of n samples."""
    k = int(rng.integers(1, 4))
    return [aug.normalize_peak(aug.resample_ratio(src, rng.uniform(0.85, 1.2)), rng.uniform(-6, 0))
            for _ in range(k)] if len(src) < n else [src]


def _animal_render(src: np.ndarray, label: str, cfg: MiniCorpusConfig, source_name: str):
    def render(rng: np.random.Generator) -> tuple[np.ndarray, str, dict[str, str]]:
        n = int(rng.uniform(max(1.5, cfg.min_duration_s), cfg.max_duration_s) * SAMPLE_RATE)
        ratio = float(rng.uniform(0.88, 1.14))  # tape speed: pitch and tempo together
        want = int(n * ratio)
        if len(src) >= want:
            x = aug.resample_ratio(aug.fade(aug.random_crop(src, want, rng)), ratio)
        else:
            x = aug.place([aug.resample_ratio(c, ratio) for c in _source_instances(src, n, rng)], n, rng)
        if rng.random() < 0.5:
            x = aug.time_stretch(x, rng.uniform(0.85, 1.15))
        x, snr = _finish(x, rng, cfg, (5.0, 30.0))
        caption = ANIMAL_CAPTIONS[label] + (" with background noise" if snr < 12 else "")
        return x, caption, {"source": source_name, "snr_db": f"{snr:.1f}"}
    return render


def _sfx_render(variants: dict[str, np.ndarray], label: str, cfg: MiniCorpusConfig):
    def render(rng: np.random.Generator) -> tuple[np.ndarray, str, dict[str, str]]:
        n = int(rng.uniform(cfg.min_duration_s, cfg.max_duration_s) * SAMPLE_RATE)
        names = sorted(variants)
        picks = [str(rng.choice(names)) for _ in range(int(rng.integers(1, 5)))]
        events = [aug.normalize_peak(aug.resample_ratio(variants[p], rng.uniform(0.85, 1.2)),
                                     rng.uniform(-6, 0)) for p in picks]
        x, snr = _finish(aug.place(events, n, rng), rng, cfg, (10.0, 40.0))
        return x, SFX_CLASSES[label][0], {"source": ";".join(f"sfx/{p}.wav" for p in picks),
                                          "snr_db": f"{snr:.1f}"}
    return render


def _synth_render(label: str, cfg: MiniCorpusConfig):
    def render(rng: np.random.Generator) -> tuple[np.ndarray, str, dict[str, str]]:
        n = int(rng.uniform(cfg.min_duration_s, cfg.max_duration_s) * SAMPLE_RATE)
        x, snr = _finish(synth.GENERATORS[label](rng, n), rng, cfg, (10.0, 40.0))
        return x, synth.CAPTIONS[label], {"source": "synthesized", "snr_db": f"{snr:.1f}"}
    return render


def _speech_render(language: str, gender: str, emotion: str, sentence: str, cfg: MiniCorpusConfig):
    def render(rng: np.random.Generator) -> tuple[np.ndarray, str, dict[str, str]]:
        spec = speech.sample_spec(language, gender, emotion, sentence, rng)
        x = speech.make_speech_clip(spec, rng, cfg.min_duration_s, cfg.max_duration_s)
        meta = {"source": "espeak-ng", "text": sentence, "voice": f"{speech.ESPEAK_VOICES[language]}+{spec.variant}",
                "espeak_pitch": str(spec.pitch), "espeak_rate": str(spec.rate)}
        return x, speech.speech_caption(spec), meta
    return render


def _plan_speech(cfg: MiniCorpusConfig) -> list[ClipPlan]:
    # Cell order matters for the split counts (running-total rounding): emotion-major,
    # then language, with the gender order flipped on alternate (emotion, language)
    # pairs, so each emotion, language and gender gets its exact share of every split.
    cells = [(lang, g, e) for ei, e in enumerate(speech.EMOTIONS)
             for li, lang in enumerate(speech.SENTENCES)
             for g in (("male", "female") if (ei + li) % 2 == 0 else ("female", "male"))]
    counts = _split_counts([cfg.speech_per_cell] * len(cells), cfg.probe_frac, cfg.test_frac)
    plans = []
    for c, ((lang, gender, emotion), cnt) in enumerate(zip(cells, counts, strict=True)):
        seen = speech.SENTENCES[lang][: -speech.HELD_OUT]
        held = speech.SENTENCES[lang][-speech.HELD_OUT:]
        for i, split in enumerate(_splits_for(cfg.speech_per_cell, cnt)):
            pool = held if split == "test" else seen
            sentence = pool[(c * 7 + i) % len(pool)]  # cycle so every sentence is used evenly
            code = speech.ESPEAK_VOICES[lang].split("-")[0]
            plans.append(ClipPlan(
                f"speech-{code}-{gender}-{emotion}-{i:03d}", "speech", split,
                {"gender": gender, "language": lang, "emotion": emotion},
                _speech_render(lang, gender, emotion, sentence, cfg)))
    return sorted(plans, key=lambda p: p.clip_id)  # manifest order: by language, gender, emotion


def _load_source(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"corpus source '{path}' is missing; restore assets/corpus/sources "
                                "(see assets/corpus/DATA.md) or run scripts/fetch_corpus_sources.py")
    return load_audio(path)


def _plan_animals(cfg: MiniCorpusConfig, sources: Path) -> list[ClipPlan]:
    labels = sorted(ANIMAL_CAPTIONS)
    counts = _split_counts([cfg.animal_per_class] * len(labels), cfg.probe_frac, cfg.test_frac)
    plans = []
    for label, cnt in zip(labels, counts, strict=True):
        src = aug.trim_silence(_load_source(sources / "animals" / f"{label}.mp3"))
        # Long recordings: the test split hears a part of the recording training never does.
        cut = int(0.65 * len(src)) if len(src) > 4 * SAMPLE_RATE else None
        for i, split in enumerate(_splits_for(cfg.animal_per_class, cnt)):
            part = src if cut is None else (src[cut:] if split == "test" else src[:cut])
            plans.append(ClipPlan(f"animal-{label}-{i:03d}", "animal", split, {"animal": label},
                                  _animal_render(part, label, cfg, f"animals/{label}.mp3")))
    return plans


def _plan_events(cfg: MiniCorpusConfig, sources: Path) -> list[ClipPlan]:
    counts = _split_counts([cfg.event_per_class] * len(EVENT_CLASSES), cfg.probe_frac, cfg.test_frac)
    plans = []
    for label, cnt in zip(EVENT_CLASSES, counts, strict=True):
        splits = _splits_for(cfg.event_per_class, cnt)
        if label in SFX_CLASSES:
            stems = SFX_CLASSES[label][1]
            loaded = {s: aug.trim_silence(_load_source(sources / "sfx" / f"{s}.wav")) for s in stems}
            held = {stems[-1]: loaded[stems[-1]]} if len(stems) >= 3 else loaded
            seen = {k: v for k, v in loaded.items() if k not in held} if len(stems) >= 3 else loaded
            renders = {"test": _sfx_render(held, label, cfg), "other": _sfx_render(seen, label, cfg)}
        else:
            renders = {"test": _synth_render(label, cfg), "other": _synth_render(label, cfg)}
        for i, split in enumerate(splits):
            plans.append(ClipPlan(f"event-{label}-{i:03d}", "sound_event", split, {"sound_event": label},
                                  renders["test" if split == "test" else "other"]))
    return plans


def plan_corpus(cfg: MiniCorpusConfig, sources: Path) -> list[ClipPlan]:
    """Every clip of the corpus, in manifest order, without rendering any."""
    plans: list[ClipPlan] = []
    if "speech" in cfg.groups and cfg.speech_per_cell:
        plans += _plan_speech(cfg)
    if "animal" in cfg.groups and cfg.animal_per_class:
        plans += _plan_animals(cfg, sources)
    if "sound_event" in cfg.groups and cfg.event_per_class:
        plans += _plan_events(cfg, sources)
    return plans


def build_info(cfg: MiniCorpusConfig) -> dict:
    """What build.json records about the settings (compared on verify)."""
    return {"dataset": DATASET_NAME, "config": to_dict(cfg)}


def build_corpus(cfg: MiniCorpusConfig, out_dir: str | Path, sources: str | Path) -> list[ClipRecord]:
    """Render every clip into ``out_dir/clips``, write ``manifest.csv`` and ``build.json``.

    ``sources`` holds the real recordings (``animals/*.mp3``, ``sfx/*.wav``).
    Needs espeak-ng when the speech group is built. The old ``clips`` folder is
    removed first, so no stale file survives a rebuild.
    """
    out_dir, sources = Path(out_dir), Path(sources)
    if "speech" in cfg.groups and cfg.speech_per_cell and not speech.espeak_available():
        raise speech.SpeechSynthError(
            "espeak-ng is not installed; the speech clips need it (Debian/Ubuntu: "
            "sudo apt-get install espeak-ng), or build only groups = ['animal', 'sound_event']")
    t0 = time.perf_counter()
    plans = plan_corpus(cfg, sources)
    # Render into a staging folder and swap it in at the end, so a failed or
    # interrupted build never leaves a half-written corpus (readers keep the old one).
    clips_dir, staging = out_dir / "clips", out_dir / "clips.partial"
    if staging.exists():
        shutil.rmtree(staging)
    records = []
    for k, plan in enumerate(plans):
        audio, caption, meta = plan.render(_clip_rng(cfg.seed, plan.clip_id))
        rel = Path(plan.group) / f"{plan.clip_id}.{cfg.audio_format}"
        save_audio(staging / rel, audio)
        records.append(ClipRecord(plan.clip_id, clips_dir / rel, DATASET_NAME, plan.split,
                                  round(len(audio) / SAMPLE_RATE, 3), plan.labels, caption, meta))
        if (k + 1) % 200 == 0:
            log.info("built %d/%d clips (%.0f s)", k + 1, len(plans), time.perf_counter() - t0)
    if clips_dir.exists():
        shutil.rmtree(clips_dir)
    staging.rename(clips_dir)
    manifest = save_manifest(records, out_dir / "manifest.csv")
    info = build_info(cfg) | {
        "espeak_ng": speech.espeak_version() if "speech" in cfg.groups else "not used",
        "n_clips": len(records),
        "manifest_sha256": manifest_hash(records, out_dir),
        "build_seconds": round(time.perf_counter() - t0, 1),
    }
    (out_dir / "build.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    log.info("mini corpus: %d clips in %.0f s -> %s", len(records), info["build_seconds"], manifest)
    return records


class CorpusMismatch(ValueError):
    """A built corpus does not match the config or its files are broken; the message says how."""


def verify_corpus(cfg: MiniCorpusConfig, corpus_dir: str | Path, *, decode: bool = False) -> list[ClipRecord]:
    """Check a built corpus against ``cfg`` and its own manifest; return its records.

    Checks that build.json's settings equal ``cfg``, that the manifest hash is
    the recorded one, and that every file is 16 kHz mono of the stated duration
    (header only, or fully decoded with ``decode=True``).
    """
    corpus_dir = Path(corpus_dir)
    info_path, manifest_path = corpus_dir / "build.json", corpus_dir / "manifest.csv"
    if not info_path.is_file() or not manifest_path.is_file():
        raise CorpusMismatch(f"no built corpus in '{corpus_dir}' (manifest.csv and build.json); "
                             "build it with `python -m precompute dataset --config ... --rebuild`")
    info = json.loads(info_path.read_text())
    want = build_info(cfg)
    if {k: info.get(k) for k in want} != want:
        raise CorpusMismatch(
            f"corpus '{corpus_dir}' was built with {info.get('config')}, the config asks for "
            f"{want['config']}; rebuild with --rebuild (needs espeak-ng) or set [dataset].corpus_dir "
            "to another folder")
    records = load_manifest(manifest_path)
    got = manifest_hash(records, corpus_dir)
    if got != info.get("manifest_sha256"):
        raise CorpusMismatch(f"'{manifest_path}' was edited after the build (hash {got[:12]} != "
                             f"{str(info.get('manifest_sha256'))[:12]}); rebuild it")
    for rec in records:
        try:
            if decode:
                sr, ch, frames = SAMPLE_RATE, 1, len(load_audio(rec.path))
            else:
                sr, ch, frames = audio_info(rec.path)
        except AudioError as exc:
            raise CorpusMismatch(f"clip {rec.clip_id!r}: {exc}") from exc
        if sr != SAMPLE_RATE or ch != 1 or abs(frames / sr - rec.duration_s) > 0.002:
            raise CorpusMismatch(f"clip {rec.clip_id!r} ('{rec.path}') is {sr} Hz x {ch} ch, "
                                 f"{frames / sr:.3f} s; the manifest says 16000 Hz mono {rec.duration_s} s")
    return records


def corpus_config_from_info(corpus_dir: str | Path) -> MiniCorpusConfig:
    """The settings a built corpus was made with (from its build.json)."""
    info = json.loads((Path(corpus_dir) / "build.json").read_text())
    return from_dict(MiniCorpusConfig, info["config"], strict=False, where="build.json")


def log_mel(audio: np.ndarray, n_mels: int = 64) -> np.ndarray:
    """(n_mels, frames) log-mel in dB (25 ms window, 10 ms hop, 80 dB floor below the peak)."""
    import librosa

    mel = librosa.feature.melspectrogram(y=audio, sr=SAMPLE_RATE, n_fft=400, hop_length=160,
                                         n_mels=n_mels, power=2.0)
    return librosa.power_to_db(mel, ref=np.max, top_db=80.0)


def mean_pairwise_correlation(specs: list[np.ndarray]) -> float:
    """Mean Pearson correlation over all pairs of log-mel spectrograms.

    Each pair is compared over its common length (the shorter clip's frames),
    never over padding, so silence added to fit a length cannot inflate it.
    """
    vals = []
    for i in range(len(specs)):
        for j in range(i + 1, len(specs)):
            t = min(specs[i].shape[1], specs[j].shape[1])
            a, b = specs[i][:, :t].ravel(), specs[j][:, :t].ravel()
            vals.append(float(np.corrcoef(a, b)[0, 1]))
    return float(np.mean(vals)) if vals else float("nan")


def within_class_correlation(records: list[ClipRecord], track: str, max_per_class: int = 30,
                             seed: int = 0) -> dict[str, float]:
    """Label -> mean pairwise log-mel correlation of up to ``max_per_class`` clips of that label."""
    by_label: dict[str, list[ClipRecord]] = {}
    for rec in records:
        if track in rec.labels:
            by_label.setdefault(rec.labels[track], []).append(rec)
    rng = np.random.default_rng(seed)
    out = {}
    for label, recs in sorted(by_label.items()):
        if len(recs) > max_per_class:
            recs = [recs[i] for i in sorted(rng.choice(len(recs), max_per_class, replace=False))]
        out[label] = mean_pairwise_correlation([log_mel(load_audio(r.path)) for r in recs])
    return out
