"""Settings of the mini-corpus build: the ``[corpus]`` table of ``configs/forge.toml``.

:class:`MiniCorpusConfig` is what decides the clips (counts, durations, splits,
seed); ``build.json`` records it, so a built corpus says how it was made.
:class:`CorpusConfig` adds where the build reads its recordings from and where
it writes; those are not part of the record (moving the folder changes no clip).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ard_core.config import ConfigError, from_dict

DATASET_NAME = "mini"
"""The ``dataset`` column of every clip, and ``build.json``'s ``dataset``."""
GROUPS: tuple[str, ...] = ("speech", "animal", "sound_event", "composite")


@dataclass
class MiniCorpusConfig:
    """Build settings of the mini corpus (the ``[corpus.build]`` table; recorded in build.json)."""

    seed: int = 0
    """Seed of every random choice in the build (independent of the models' training seed, so
    that training seeds can change without rebuilding the committed corpus)."""
    speech_per_cell: int = 10
    """Speech clips per (language, gender, emotion) cell: 8 x 2 x 6 cells."""
    animal_per_class: int = 40
    """Clips per animal class (10 classes)."""
    event_per_class: int = 40
    """Clips per sound-event class (12 classes)."""
    speech_event_per_class: int = 12
    """Composite clips per animal or sound-event class in which the event sounds inside speech."""
    noise_event_per_class: int = 10
    """Composite clips per animal or sound-event class in which a short event sits in background noise."""
    sequence_per_class: int = 22
    """Composite clips per animal class in which the animal and then a sound event (or the reverse) sound."""
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
    compression_level: float = 0.8
    """Vorbis compression of the ogg clips, 0 (best quality) .. 1 (smallest); 0.8 is about 48 kbit/s."""
    groups: tuple[str, ...] = GROUPS
    """Which clip groups to build: any of 'speech', 'animal', 'sound_event', 'composite'."""

    def __post_init__(self) -> None:
        for key in ("speech_per_cell", "animal_per_class", "event_per_class", "speech_event_per_class",
                    "noise_event_per_class", "sequence_per_class"):
            if getattr(self, key) < 0:
                raise ConfigError(f"[corpus.build].{key} must be >= 0")
        if not 0.5 <= self.min_duration_s <= self.max_duration_s <= 30.0:
            raise ConfigError("[corpus.build] needs 0.5 <= min_duration_s <= max_duration_s <= 30")
        if self.probe_frac < 0 or self.test_frac < 0 or self.probe_frac + self.test_frac >= 1:
            raise ConfigError("[corpus.build] probe_frac and test_frac must be >= 0 and sum below 1")
        if not 0.0 <= self.compression_level <= 1.0:
            raise ConfigError(f"[corpus.build].compression_level {self.compression_level}: use 0 .. 1")
        if self.audio_format not in ("ogg", "flac", "wav"):
            raise ConfigError(f"[corpus.build].audio_format {self.audio_format!r}: use 'ogg', 'flac' or 'wav'")
        self.groups = tuple(self.groups)
        bad = [g for g in self.groups if g not in GROUPS]
        if bad or not self.groups:
            raise ConfigError(f"[corpus.build].groups {list(self.groups)}: choose from {list(GROUPS)}")


@dataclass
class CorpusConfig:
    """The ``[corpus]`` table: where ``python -m forge corpus`` reads and writes."""

    out_dir: Path = Path("assets/corpus")
    """Folder that receives clips/, manifest.csv and build.json (the pipeline's [dataset].corpus_dir)."""
    sources_dir: Path = Path("assets/corpus/sources")
    """Real recordings the corpus is made from (animals/*.mp3, sfx/*.wav; see assets/corpus/DATA.md)."""
    build: MiniCorpusConfig = field(default_factory=MiniCorpusConfig)
    """What the clips are ([corpus.build])."""

    def __post_init__(self) -> None:
        self.out_dir, self.sources_dir = Path(self.out_dir), Path(self.sources_dir)
        if isinstance(self.build, dict):
            self.build = from_dict(MiniCorpusConfig, self.build, where="corpus.build")
