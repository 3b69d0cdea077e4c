"""One dataclass per catalog table: what the stages write and what :meth:`CatalogBase.rows` returns.

Field names and order are the table's columns (``schema.MIGRATIONS``); ``TABLE_OF``
maps each class to its table and ``PRIMARY_KEY`` gives every table's key, the
default (deterministic) order of reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from ard_core.catalog.refs import is_control

@dataclass
class ClipRow:
    clip_id: str
    dataset: str
    split: str
    path: str
    duration_s: float
    labels: dict[str, str]
    caption: str


@dataclass
class ModelRow:
    model: str
    path: str
    family: str
    n_layers: int
    d_model: int


@dataclass
class ActivationIndexRow:
    model: str
    layer: int
    clip_id: str
    shard: str
    offset: int
    n_tokens: int


@dataclass
class SaeRow:
    sae_id: str
    model: str
    layer: int
    expansion: int
    k: int
    d_in: int
    d_sae: int
    path: str
    fvu: float
    dead_frac: float
    l0: float

    @property
    def control(self) -> bool:
        """A frozen random-SAE control (its id ends in '-random'), not a trained SAE."""
        return is_control(self.sae_id)


@dataclass
class FeatureRow:
    sae_id: str
    feature: int
    name: str | None
    description: str | None
    monosemanticity: float | None
    rank: int | None
    density: float | None
    max_act: float | None


@dataclass
class FeatureExampleRow:
    method: str
    sae_id: str
    feature: int
    kind: str
    rank: int
    clip_id: str
    score: float
    mean_act: float
    coverage: float


@dataclass
class LensScoreRow:
    model: str
    track: str
    prompt_format: str
    position: str
    subset: str
    layer: int
    score: float
    n: int


@dataclass
class LensSummaryRow:
    model: str
    track: str
    prompt_format: str
    accuracy: float
    critical_layer: float | None
    n: int
    n_labels: int


@dataclass
class LensEnrichmentRow:
    model: str
    track: str
    method: str
    lam: float
    seed: int
    source_layer: int | None
    accuracy: float
    n: int


@dataclass
class ClipEmbeddingRow:
    embedder: str
    clip_id: str
    embedding: list[float]


@dataclass
class ClipCaptionRow:
    model: str
    clip_id: str
    caption: str


@dataclass
class MethodScoreRow:
    method: str
    sae_id: str
    feature: int
    seed: int
    monosemanticity: float | None
    rank: int


@dataclass
class MethodConceptRow:
    method: str
    sae_id: str
    feature: int
    seed: int
    name: str
    description: str


@dataclass
class EvaluationRow:
    table_name: str
    method: str
    sae_id: str
    metric: str
    value: float
    std: float | None
    protocol: str = "run"
    """'per_clip' / 'vocabulary' (Table 1's two protocols), 'run' (one figure of this run), 'seeds'
    (mean and std over SAEs retrained with several seeds)."""
    ci_low: float | None = None
    ci_high: float | None = None
    """95% bootstrap interval (None where the figure has none)."""
    n: int | None = None
    """Samples behind the figure (test clips, source samples, seeds)."""


@dataclass
class ClipScoreRow:
    sae_id: str
    method: str
    seed: int
    clip_id: str
    n_predictions: int
    n_references: int
    precision: float
    recall: float
    f1: float
    ap: float


@dataclass
class ClipPredictionRow:
    sae_id: str
    method: str
    seed: int
    clip_id: str
    rank: int
    feature: int
    name: str
    activation: float
    reference: str | None
    """The reference it matched, else the most similar one (None when the clip has none)."""
    similarity: float | None
    matched: bool


@dataclass
class DetectionRow:
    sae_id: str
    feature: int
    judge: str
    """'clap' (name as a CLAP text query) or 'llm' (the endpoint judges each clip's caption)."""
    score: float | None
    """AUROC separating activating from non-activating clips (None: too few of either)."""
    n_pos: int
    n_neg: int


@dataclass
class SteeringResultRow:
    mapping: str
    method: str
    sae_id: str
    feature: int
    value: float
    judge: str
    sensitivity: float
    n: int
    layer: int | None = None
    best_layer: bool | None = None
    sensitivity_all: float | None = None
    n_all: int | None = None
    probe_flip_rate: float | None = None


@dataclass
class SteerabilityRow:
    sae_id: str
    feature: int
    track: str
    target: str
    value: float
    flip_rate: float
    n: int
    flipped: int
    multiple: float
    clip_id: str | None
    prompt_format: str
    how: str
    flip_lower: float
    """95% Wilson lower bound of flip_rate over n: the ranking key (3 of 3 ranks below 15 of 16)."""

    @property
    def ref(self) -> str:
        return f"{self.sae_id}/{self.feature}"


@dataclass
class SaeMetricRow:
    sae_id: str
    """An SAE (a control's ends in '-random'), the model (unspliced reference) or MODEL-lL-neurons (raw neurons)."""
    metric: str
    """spliced_acc_<track>, ce_score, kl (each also '@all': spliced at every position), explained_variance,
    l0, seed_stability, probe_k1_<track>, probe_k5_<track>; the model's acc_<track>, n_<track>, caption_ce and
    each layer zero-ablated (docs/catalog.md)."""
    split: str
    """The clips it is measured on ('test'); 'seeds' for seed_stability (decoder weights, no clips)."""
    value: float
    std: float | None
    """Bootstrap std over clips (accuracy, KL, CE score), std over the track's one-vs-rest probes, or
    the sample std over pairs of seeds; None where there is none."""


@dataclass
class SimilarFeatureRow:
    ref: str
    """SAE_ID/K of the feature (the lookup key)."""
    sae_id: str
    feature: int
    kind: str
    """'decoder' (same SAE, cosine of decoder rows) or 'activation' (another layer's SAE, Pearson
    correlation of clip mean activations over the probing clips)."""
    other_sae_id: str
    rank: int
    """0 = the nearest, per (feature, kind, other SAE)."""
    other_feature: int
    similarity: float

    @property
    def other_ref(self) -> str:
        return f"{self.other_sae_id}/{self.other_feature}"


@dataclass
class AnnotationRow:
    annotator: str
    session_id: str
    sae_id: str
    feature: int
    label: str
    rating: int | None


TABLE_OF: dict[type, str] = {
    ClipRow: "clips",
    ModelRow: "models",
    ActivationIndexRow: "activation_index",
    SaeRow: "saes",
    FeatureRow: "features",
    FeatureExampleRow: "feature_examples",
    LensScoreRow: "lens_scores",
    LensSummaryRow: "lens_summary",
    LensEnrichmentRow: "lens_enrichment",
    ClipEmbeddingRow: "clip_embeddings",
    ClipCaptionRow: "clip_captions",
    MethodScoreRow: "method_scores",
    MethodConceptRow: "method_concepts",
    EvaluationRow: "evaluations",
    ClipScoreRow: "clip_scores",
    ClipPredictionRow: "clip_predictions",
    DetectionRow: "feature_detection",
    SteeringResultRow: "steering_results",
    SteerabilityRow: "steerability",
    SaeMetricRow: "sae_metrics",
    SimilarFeatureRow: "similar_features",
    AnnotationRow: "annotations",
}


# Primary keys, the default (deterministic) order of :meth:`Catalog.rows`.
PRIMARY_KEY: dict[str, tuple[str, ...]] = {
    "clips": ("clip_id",),
    "models": ("model",),
    "activation_index": ("model", "layer", "clip_id"),
    "saes": ("sae_id",),
    "features": ("sae_id", "feature"),
    "feature_examples": ("method", "sae_id", "feature", "kind", "rank"),
    "lens_scores": ("model", "track", "prompt_format", "position", "subset", "layer"),
    "lens_summary": ("model", "track", "prompt_format"),
    "lens_enrichment": ("model", "track", "method", "lam", "seed"),
    "clip_embeddings": ("embedder", "clip_id"),
    "clip_captions": ("model", "clip_id"),
    "method_scores": ("method", "sae_id", "feature", "seed"),
    "method_concepts": ("method", "sae_id", "feature", "seed"),
    "evaluations": ("table_name", "protocol", "method", "sae_id", "metric"),
    "clip_scores": ("sae_id", "method", "seed", "clip_id"),
    "clip_predictions": ("sae_id", "method", "seed", "clip_id", "rank"),
    "feature_detection": ("sae_id", "feature", "judge"),
    "steering_results": ("mapping", "method", "sae_id", "feature", "value", "judge"),
    "steerability": ("sae_id", "feature", "track", "target"),
    "sae_metrics": ("sae_id", "metric", "split"),
    "similar_features": ("sae_id", "feature", "kind", "other_sae_id", "rank"),
    "annotations": ("annotator", "session_id", "sae_id", "feature"),
}
