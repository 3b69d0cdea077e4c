"""The typed ``[section]`` tables of a run config, one dataclass per pipeline stage.

They live here, not in the stage modules, because a later stage reads an earlier
stage's settings from the copy that stage saved next to its artifacts (describe
reads ``top_c`` from ``score/score_cfg.json``, evaluate the CLAP settings, ...), and a
stage module never imports another: both sides import this module instead.
:mod:`precompute.handover` saves and loads those copies; ``stage`` and ``saved_as``
name the stage that writes each copy and where under ``[run].out_dir``.

The ``[dataset]`` table belongs to ``precompute.dataset``, and ``[sae]`` to the
library's trainer (:class:`ard_core.sae.train.SaeSection`): no other stage reads
their copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ard_core.config import ConfigError
from ard_core.datasets import TRACKS
from ard_core.detection import JUDGES
from ard_core.evaluation import DEFAULT_GAMMA, REFERENCE_TEXTS, TextEmbedder
from ard_core.fidelity import POSITION_SETS
from ard_core.monosemanticity import DEFAULT_EPS
from ard_core.naming import SummarizerConfig
from ard_core.prompts import CAPTION_QUESTION, FORMATS
from ard_core.retrieval import METHODS


@dataclass
class ExtractConfig:
    """The ``[extract]`` table. The clips are the dataset stage's ``<out_dir>/dataset/manifest.csv``."""

    stage: ClassVar[str] = "extract"
    saved_as: ClassVar[str] = "activations/extract_cfg.json"

    layers: list[int] = field(default_factory=lambda: [2, 4, 6])
    """0-based decoder layers whose output (residual stream) is stored; layer l = HF hidden_states[l+1]."""
    positions: str = "audio"
    """'audio': keep only audio-token positions (the paper); 'all': every non-padding position."""
    splits: list[str] = field(default_factory=lambda: ["train", "probe", "test"])
    """Manifest splits to extract."""
    prompt: str = CAPTION_QUESTION
    """User question placed after the audio. Audio positions precede it, so it does not change them."""
    batch_size: int = 8
    """Clips per forward pass."""
    clips_per_shard: int = 256
    """Clips per shard; the unit of resumption (and of work split between torchrun ranks)."""
    store_dtype: str = "float16"
    """On-disk dtype: 'float16' (default, half the disk) or 'float32'."""
    drop_sinks: bool = False
    """Drop high-norm 'attention sink' tokens (norm > sink_norm_factor x the clip's median norm)."""
    sink_norm_factor: float = 10.0
    """Threshold for drop_sinks, as a multiple of the clip's median token norm."""
    max_clips: int | None = None
    """Only the first N clips of the selected splits (quick runs); None = all."""

    def __post_init__(self) -> None:
        if not self.layers or any(l < 0 for l in self.layers) or len(set(self.layers)) != len(self.layers):
            raise ConfigError(f"[extract].layers {self.layers} must be distinct non-negative layer indices")
        if self.positions not in ("audio", "all"):
            raise ConfigError(f"[extract].positions {self.positions!r}: use 'audio' or 'all'")
        if self.store_dtype not in ("float16", "float32"):
            raise ConfigError(f"[extract].store_dtype {self.store_dtype!r}: use 'float16' or 'float32'")
        for key in ("batch_size", "clips_per_shard"):
            if getattr(self, key) < 1:
                raise ConfigError(f"[extract].{key} must be >= 1")
        if self.sink_norm_factor <= 1:
            raise ConfigError("[extract].sink_norm_factor must be > 1")
        if self.max_clips is not None and self.max_clips < 1:
            raise ConfigError("[extract].max_clips must be >= 1 (or left out for all clips)")
        self.layers = sorted(self.layers)


@dataclass
class ScoreConfig:
    """The ``[score]`` table."""

    stage: ClassVar[str] = "score"
    saved_as: ClassVar[str] = "score/score_cfg.json"

    p: int = 4
    """Top and bottom clips kept per feature (the paper's p)."""
    top_c: int = 5000
    """Features kept by monosemanticity (the paper's C); scale it to the SAE size."""
    splits: list[str] = field(default_factory=lambda: ["train", "probe"])
    """Manifest splits forming the probing dataset."""
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    """Scoring methods over SAE latents: 'ard' (mu x c), 'mean_act', 'coverage'."""
    poly: bool = True
    """Also score the raw neurons of x (the 'Poly. Feats.' baseline)."""
    random_seeds: int = 10
    """Draws of the 'Rand. Rep.' baseline (the paper averages 10)."""
    batch_clips: int = 64
    """Clips per scoring step."""
    encode_tokens: int = 4096
    """Tokens per SAE encode call. Bounds the dense (tokens, d_z) pre-activations whatever
    the clips' length: 4096 x 32,768 float32 is 512 MiB."""
    clap_backend: str = "hf"
    """CLAP backend for monosemanticity: 'hf' (transformers ClapModel) or 'msclap'."""
    clap_model: str = "assets/models/tiny-clap"
    """ClapModel folder or hub id (hf), or msclap version."""
    eps: float = DEFAULT_EPS
    """epsilon of eq. 4."""

    def __post_init__(self) -> None:
        if self.p < 2:
            raise ConfigError("[score].p must be >= 2 (monosemanticity needs pairs)")
        if self.top_c < 1 or self.batch_clips < 1 or self.encode_tokens < 1 or self.random_seeds < 0:
            raise ConfigError("[score].top_c, batch_clips and encode_tokens must be >= 1, random_seeds >= 0")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or "ard" not in self.methods:
            raise ConfigError(f"[score].methods must include 'ard' and only use {list(METHODS)}; got {self.methods}")
        if self.clap_backend not in ("hf", "msclap"):
            raise ConfigError(f"[score].clap_backend {self.clap_backend!r}: use 'hf' or 'msclap'")


@dataclass
class SimilarConfig:
    """The ``[similar]`` table: each feature's nearest features, within its SAE by decoder cosine and in
    the other layers' SAEs by the correlation of clip mean activations over the score stage's probing clips."""

    stage: ClassVar[str] = "similar"
    saved_as: ClassVar[str] = "similar/similar_cfg.json"

    top_decoder: int = 10
    """Neighbours kept per feature within its own SAE."""
    top_other: int = 3
    """Neighbours kept per feature in each SAE of another layer."""

    def __post_init__(self) -> None:
        if self.top_decoder < 0 or self.top_other < 0 or self.top_decoder + self.top_other == 0:
            raise ConfigError("[similar].top_decoder and top_other must be >= 0, and not both 0")


@dataclass
class DescribeConfig:
    """The ``[describe]`` table."""

    stage: ClassVar[str] = "describe"
    saved_as: ClassVar[str] = "describe/describe_cfg.json"

    summarizer: SummarizerConfig = field(default_factory=SummarizerConfig)
    """How captions become a concept name ([describe.summarizer])."""
    caption_max_new_tokens: int = 24
    """Token budget of each caption."""
    caption_batch: int = 16
    """Clips captioned per generate() call."""
    table1_sae: str | None = None
    """SAE id whose baselines are named for Table 1; None = the deepest layer, expansion nearest 8."""

    def __post_init__(self) -> None:
        if self.caption_max_new_tokens < 1 or self.caption_batch < 1:
            raise ConfigError("[describe].caption_max_new_tokens and caption_batch must be >= 1")


@dataclass
class EvaluateConfig:
    """The ``[evaluate]`` table."""

    stage: ClassVar[str] = "evaluate"
    saved_as: ClassVar[str] = "evaluation/evaluate_cfg.json"

    gamma: float = DEFAULT_GAMMA
    """Similarity threshold for a match (0.7 in the paper)."""
    m: int = 5
    """Per-clip protocol: predictions per test clip, the m named features most active on it (mu > 0)."""
    splits: list[str] = field(default_factory=lambda: ["test"])
    """Per-clip protocol: splits whose clips are scored (held out from SAE training and probing)."""
    reference_text: str = "phrases"
    """How a label becomes reference text: 'phrases' ('a man speaking' for gender=male) or 'labels' (the label)."""
    reference_splits: list[str] | None = None
    """Vocabulary protocol: splits whose labels form the references; None = every split."""
    text_embedder: str = "clap"
    """'clap' (the score stage's CLAP text encoder) or 'hf-mean' (mean-pooled transformers encoder)."""
    text_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    """hf-mean: folder or hub id of the sentence encoder."""
    bootstrap: int = 1000
    """Bootstrap resamples over test clips behind each Table 1 figure's std and 95% interval."""
    detection_n: int = 20
    """Detection score: at most this many activating and as many non-activating probing clips per feature."""
    detection_judges: list[str] = field(default_factory=lambda: ["clap"])
    """Detection judges: 'clap' (the name as a CLAP text query), 'llm' (the [describe.summarizer] endpoint)."""

    def __post_init__(self) -> None:
        if not 0 < self.gamma <= 1:
            raise ConfigError("[evaluate].gamma must be in (0, 1]")
        if self.m < 1 or self.bootstrap < 1 or self.detection_n < 1:
            raise ConfigError("[evaluate].m, bootstrap and detection_n must be >= 1")
        if not self.splits:
            raise ConfigError("[evaluate].splits must name at least one split (e.g. ['test'])")
        if self.reference_text not in REFERENCE_TEXTS:
            raise ConfigError(f"[evaluate].reference_text {self.reference_text!r}: use one of {list(REFERENCE_TEXTS)} "
                              "(the old 'captions' worded references like the names; see docs/evaluation.md)")
        if self.text_embedder not in ("clap", "hf-mean"):
            raise ConfigError("[evaluate].text_embedder: use 'clap' or 'hf-mean'")
        bad = [j for j in self.detection_judges if j not in JUDGES]
        if bad:
            raise ConfigError(f"[evaluate].detection_judges {bad} unknown; use {list(JUDGES)}")

    def build_embedder(self, score: ScoreConfig, device: str) -> TextEmbedder:
        """The text embedder this table names; 'clap' is the CLAP model ``score`` (the score
        stage's saved settings) embedded the clips with."""
        return TextEmbedder(self.text_embedder, device, clap_backend=score.clap_backend,
                            clap_model=score.clap_model, text_model=self.text_model)


@dataclass
class QualityConfig:
    """The ``[quality]`` table: SAE quality on held-out clips (precompute/quality.py says what each figure is)."""

    stage: ClassVar[str] = "quality"
    saved_as: ClassVar[str] = "quality/quality_cfg.json"

    split: str = "test"
    """Clips every figure is measured on (held out from SAE training and from the probes' fits)."""
    tracks: list[str] | None = None
    """Tracks asked their P3 question when spliced; None = every track with one whose labels the split carries."""
    clips_per_track: int = 24
    """P3 clips per track (balanced over its labels, seeded order)."""
    caption_clips: int = 32
    """Clips whose reference caption is teacher-forced for the CE-loss score (seeded order)."""
    positions: list[str] = field(default_factory=lambda: list(POSITION_SETS))
    """Where the reconstruction is spliced in: 'audio' (audio tokens) and/or 'all' (every position)."""
    batch_size: int = 16
    """Prompts per forward pass."""
    heldout_tokens: int = 65_536
    """Explained variance and L0: at most this many tokens of the split's clips (seeded clip order)."""
    probe_splits: list[str] = field(default_factory=lambda: ["probe"])
    """Splits whose clips choose the probes' dimensions and fit them."""
    probe_ks: list[int] = field(default_factory=lambda: [1, 5])
    """k of the k-sparse probes."""
    bootstrap: int = 1000
    """Resamples over clips behind each accuracy's, KL's and CE score's std."""

    def __post_init__(self) -> None:
        bad = [t for t in self.tracks or [] if t not in TRACKS]
        if bad:
            raise ConfigError(f"[quality].tracks {bad} unknown; use {list(TRACKS)}")
        if self.split in self.probe_splits:
            raise ConfigError(f"[quality].split {self.split!r} is among probe_splits {self.probe_splits}: probes "
                              "must be scored on clips they were not fitted on")
        bad = [p for p in self.positions if p not in POSITION_SETS]
        if bad or not self.positions:
            raise ConfigError(f"[quality].positions {self.positions}: use {list(POSITION_SETS)}")
        for key in ("clips_per_track", "caption_clips", "batch_size", "heldout_tokens", "bootstrap"):
            if getattr(self, key) < 1:
                raise ConfigError(f"[quality].{key} must be >= 1")
        if not self.probe_ks or any(k < 1 for k in self.probe_ks) or not self.probe_splits:
            raise ConfigError("[quality].probe_ks must list k >= 1 and probe_splits at least one split")


@dataclass
class LensConfig:
    """The ``[lens]`` table. The clips are the dataset stage's ``<out_dir>/dataset/manifest.csv``."""

    stage: ClassVar[str] = "lens"
    saved_as: ClassVar[str] = "lens/lens_cfg.json"

    tracks: list[str] = field(default_factory=lambda: list(TRACKS))
    """Tracks to analyse (labels from the manifest)."""
    formats: list[str] = field(default_factory=lambda: list(FORMATS))
    """Prompt formats of Table I."""
    splits: list[str] = field(default_factory=lambda: ["probe", "test"])
    """Manifest splits analysed (never the model's training split)."""
    max_per_track: int | None = None
    """Cap on clips per track (None = all), taken in manifest order."""
    batch_size: int = 16
    """Clips per forward pass."""
    alpha: float = 0.2
    """Critical-layer threshold (eq. 3): layers must beat (1 + alpha) / |Y|."""
    enrich_track: str | None = None
    """Track for the enrichment study; None = the track with the lowest P3 accuracy."""
    enrich_format: str = "P3"
    """Prompt format of the enrichment study (the paper uses P3)."""
    enrich_probe_fraction: float = 0.2
    """Share of the track's clips used to choose l-bar (the paper: 100 of 500)."""
    enrich_gap: int = 5
    """Eq. 5's layer gap (5 in the paper, for 32-layer models; scale it to the model)."""
    enrich_lambdas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0])
    """Lambda sweep of Fig. 5."""
    random_seeds: int = 5
    """Seeds of the random-layer baseline."""

    def __post_init__(self) -> None:
        bad = [t for t in self.tracks if t not in TRACKS]
        if bad:
            raise ConfigError(f"[lens].tracks {bad} unknown; use {list(TRACKS)}")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad:
            raise ConfigError(f"[lens].formats {bad} unknown; use {list(FORMATS)}")
        if self.enrich_track is not None and self.enrich_track not in self.tracks:
            raise ConfigError(f"[lens].enrich_track {self.enrich_track!r} must be one of [lens].tracks")
        if not 0 < self.enrich_probe_fraction < 1:
            raise ConfigError("[lens].enrich_probe_fraction must be in (0, 1)")
        if self.enrich_gap < 1 or self.batch_size < 1 or self.random_seeds < 0:
            raise ConfigError("[lens].enrich_gap and batch_size must be >= 1, random_seeds >= 0")


@dataclass
class SteerabilityConfig:
    """The ``[steerability]`` table (the stage's module docstring says how its cost is kept down)."""

    stage: ClassVar[str] = "steerability"
    saved_as: ClassVar[str] = "steerability/steerability_cfg.json"

    tracks: list[str] | None = None
    """Tracks to measure; None = every track with a P3 question whose labels the clips carry."""
    split: str = "probe"
    """Split whose clips the candidates and values are chosen on (never the test split)."""
    pool_clips: int = 24
    """Clips per track (balanced over its labels, seeded order) asked the track's P3 question."""
    clips_per_target: int = 16
    """Most pool clips judged per target: those whose unsteered answer is not the target."""
    named_per_sae: int = 1
    """Named candidates per SAE and target (name matching the target's reference phrase)."""
    contrast_per_sae: int = 1
    """Candidates per SAE and target by probe contrast (mean r on target clips minus on the others)."""
    multiples: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0])
    """Steering values: the decoder row adds this multiple of the layer's median token norm."""
    screen_clips: int = 3
    """Clips every candidate and value is judged on first."""
    finalists: int = 2
    """Candidates per target (best on the screen) judged on the rest of the clips."""
    positions: list[str] = field(default_factory=lambda: ["audio", "prompt"])
    """Where to steer (the label judge reads the prefill, so 'generated' adds nothing)."""
    batch_rows: int = 64
    """Steered variants (clip, feature, value) per forward."""

    def __post_init__(self) -> None:
        bad = [t for t in self.tracks or [] if t not in TRACKS]
        if bad:
            raise ConfigError(f"[steerability].tracks {bad} unknown; use {list(TRACKS)}")
        if self.split == "test":
            raise ConfigError("[steerability].split must not be 'test': steer-eval judges the chosen values there")
        for key in ("pool_clips", "clips_per_target", "screen_clips", "batch_rows"):
            if getattr(self, key) < 1:
                raise ConfigError(f"[steerability].{key} must be >= 1")
        if self.named_per_sae < 0 or self.contrast_per_sae < 0 or self.named_per_sae + self.contrast_per_sae < 1:
            raise ConfigError("[steerability].named_per_sae and contrast_per_sae must be >= 0, and not both 0")
        if self.finalists < 0:
            raise ConfigError("[steerability].finalists must be >= 0")
        if not self.multiples or any(not m > 0 for m in self.multiples):
            raise ConfigError(f"[steerability].multiples {self.multiples} must be positive numbers")
        bad = [p for p in self.positions if p not in ("audio", "prompt")]
        if bad or not self.positions:
            raise ConfigError(f"[steerability].positions {self.positions}: use 'audio' and/or 'prompt'")


@dataclass
class SteerEvalConfig:
    """The ``[steer_eval]`` table. The candidates, values and steering positions are the
    steerability stage's (its saved copy); steer-eval only judges its choices on ``split``."""

    stage: ClassVar[str] = "steer-eval"
    saved_as: ClassVar[str] = "steering/steer_eval_cfg.json"

    mappings: list[str] = field(default_factory=lambda: ["neutral->happy", "sad->happy", "happy->angry",
                                                         "female->male", "male->female"])
    """SOURCE->TARGET label pairs (one track each)."""
    split: str = "test"
    """Split whose source samples are steered with the (feature, value) chosen on the probe split."""
    max_samples: int | None = None
    """Cap on source samples per mapping (None = all)."""
    judge: str = "label_prob"
    """'label_prob' (offline) or 'llm' (the describe stage's [describe.summarizer] endpoint)."""
    batch_rows: int = 64
    """Steered clips per forward."""
    bootstrap: int = 1000
    """Resamples of the source samples behind each Table 3 figure's spread."""

    def __post_init__(self) -> None:
        for m in self.mappings:
            if m.count("->") != 1 or not all(m.split("->")):
                raise ConfigError(f"[steer_eval].mappings entry {m!r} must look like 'source->target'")
        if self.judge not in ("label_prob", "llm"):
            raise ConfigError("[steer_eval].judge: use 'label_prob' or 'llm'")
        if self.batch_rows < 1 or self.bootstrap < 1 or (self.max_samples is not None and self.max_samples < 1):
            raise ConfigError("[steer_eval] needs batch_rows >= 1, bootstrap >= 1 and max_samples >= 1 (or left out)")
