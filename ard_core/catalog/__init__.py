"""The DuckDB feature catalog and the annotations file beside it: the only code that opens DuckDB.

- :mod:`.schema`: the versioned schema (append-only ``MIGRATIONS``), documented in ``docs/catalog.md``;
- :mod:`.rows`: one dataclass per table, what stages write and typed reads return;
- :mod:`.refs`: feature references ``SAE_ID/K`` (:func:`sae_id_for`, :func:`parse_feature_ref`);
- :mod:`.base`: opening, migrations, transactions, writes and generic reads;
- :mod:`.browse`, :mod:`.results`: the named reads the app's pages use (no SQL in ``ard_core/ui``);
- :mod:`.core`: :class:`Catalog`, all of the above on one connection;
- :mod:`.annotations`: :class:`AnnotationStore`, the human evaluation's sessions and answers;
- :mod:`.connect`: :func:`connect`, the one call of ``duckdb.connect``.

Writers (pipeline stages) open the catalog with ``Catalog.open(path)``; readers (the app)
with ``Catalog.open(path, read_only=True)``.
"""

from ard_core.catalog.annotations import (
    RATING_MAX,
    RATING_MIN,
    AnnotationStore,
    Plan,
    Answer,
    Session,
    annotations_path_for,
    check_rating,
    clean_annotator,
    session_id_for,
)
from ard_core.catalog.browse import (
    CONCEPT_SORTS,
    CatalogCounts,
    ClipChoice,
    ClipFile,
    ConceptQuery,
    ConceptRow,
    ConceptsPage,
    FeaturePage,
    NamedFeature,
    NotFound,
    SimilarFeature,
)
from ard_core.catalog.connect import CatalogError
from ard_core.catalog.core import Catalog
from ard_core.catalog.refs import (
    RANDOM_SUFFIX,
    FeatureRef,
    SaeIdParts,
    control_id,
    is_control,
    parse_feature_ref,
    parse_sae_id,
    sae_id_for,
    twin_of,
)
from ard_core.catalog.results import ClipEvaluation, EnrichmentStat, SteerableFeature
from ard_core.catalog.rows import (
    ActivationIndexRow,
    AnnotationRow,
    ClipCaptionRow,
    ClipEmbeddingRow,
    ClipPredictionRow,
    ClipRow,
    ClipScoreRow,
    DetectionRow,
    EvaluationRow,
    FeatureExampleRow,
    FeatureRow,
    LensEnrichmentRow,
    LensScoreRow,
    LensSummaryRow,
    MethodConceptRow,
    MethodScoreRow,
    ModelRow,
    SaeMetricRow,
    SaeRow,
    SimilarFeatureRow,
    SteerabilityRow,
    SteeringResultRow,
)
from ard_core.catalog.schema import MIGRATIONS, SCHEMA_VERSION

__all__ = [
    "MIGRATIONS", "RANDOM_SUFFIX", "RATING_MAX", "RATING_MIN", "SCHEMA_VERSION", "CONCEPT_SORTS",
    "ActivationIndexRow", "AnnotationRow", "AnnotationStore", "Answer", "Plan", "Catalog", "CatalogCounts", "CatalogError",
    "ClipCaptionRow", "ClipChoice", "ClipEvaluation", "ClipEmbeddingRow", "ClipFile", "ClipPredictionRow", "ClipRow",
    "ClipScoreRow", "DetectionRow", "ConceptQuery", "ConceptRow",
    "ConceptsPage", "EnrichmentStat", "EvaluationRow", "FeatureExampleRow", "FeaturePage", "FeatureRef",
    "FeatureRow", "LensEnrichmentRow", "LensScoreRow", "LensSummaryRow", "MethodConceptRow", "MethodScoreRow",
    "ModelRow", "NamedFeature", "NotFound", "SaeIdParts", "SaeMetricRow", "SaeRow", "Session", "SimilarFeature",
    "SimilarFeatureRow", "SteerabilityRow", "SteerableFeature",
    "SteeringResultRow",
    "annotations_path_for", "check_rating", "clean_annotator", "control_id", "is_control", "parse_feature_ref",
    "parse_sae_id", "sae_id_for", "session_id_for", "twin_of",
]
