"""Named reads of the pipeline's results: AudioLens curves and tables, the paper's tables, steering,
SAE quality.

Each is a method of :class:`ard_core.catalog.Catalog` returning typed rows; the app's
Lens and Evaluation tabs draw from them and hold no SQL.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from ard_core.catalog.base import CatalogBase
from ard_core.catalog.browse import NotFound
from ard_core.catalog.refs import FeatureRef, parse_feature_ref
from ard_core.catalog.rows import (
    ClipPredictionRow,
    ClipRow,
    ClipScoreRow,
    DetectionRow,
    EvaluationRow,
    LensEnrichmentRow,
    LensScoreRow,
    LensSummaryRow,
    SaeMetricRow,
    SteerabilityRow,
    SteeringResultRow,
)


class EnrichmentStat(NamedTuple):
    """The random-layer baseline of the enrichment sweep at one lambda, over its seeds."""

    lam: float
    mean: float
    std: float
    """Sample std over seeds; 0 for a single seed."""


class ClipEvaluation(NamedTuple):
    """What the per-clip view shows for one clip."""

    clip: ClipRow
    scores: list[ClipScoreRow]
    predictions: list[ClipPredictionRow]


class SteerableFeature(NamedTuple):
    """A feature and how well it steers one track (the Steer tab's feature picker)."""

    ref: str
    name: str | None
    best: SteerabilityRow
    """Its best steerability row for the track."""


class ResultReads(CatalogBase):
    """Reads of lens, evaluation and steering results (mixed into :class:`ard_core.catalog.Catalog`)."""

    def _distinct(self, column: str, table: str, model: str | None = None) -> list:
        """Sorted distinct values of ``column`` (a name from this module, never user text)."""
        where, params = ("WHERE model = ?", [model]) if model is not None else ("", [])
        return [r[0] for r in self._fetch(f"SELECT DISTINCT {column} FROM {table} {where} ORDER BY {column}", params)[1]]

    # -- AudioLens --------------------------------------------------------------------------
    def lens_models(self) -> list[str]:
        """Models with lens scores."""
        return self._distinct("model", "lens_scores")

    def lens_tracks(self, model: str | None) -> list[str]:
        return self._distinct("track", "lens_scores", model) if model is not None else []

    def lens_formats(self, model: str | None) -> list[str]:
        return self._distinct("prompt_format", "lens_scores", model) if model is not None else []

    def model_layers(self, model: str) -> int | None:
        """The model's layer count: from ``models``, else the deepest layer it has lens scores for."""
        rows = self._fetch("SELECT n_layers FROM models WHERE model = ?", [model])[1]
        if rows and rows[0][0]:
            return int(rows[0][0])
        rows = self._fetch("SELECT max(layer) FROM lens_scores WHERE model = ?", [model])[1]
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def lens_curve(self, model: str, track: str, prompt_format: str, position: str, subset: str) -> list[LensScoreRow]:
        """One information-score curve, by layer."""
        return self.rows(LensScoreRow, "model = ? AND track = ? AND prompt_format = ? AND position = ? AND subset = ?",
                         [model, track, prompt_format, position, subset])

    def lens_grid(self, model: str, prompt_format: str, position: str, subset: str) -> list[LensScoreRow]:
        """Every track's curve for one format / position / subset, by track then layer."""
        return self.rows(LensScoreRow, "model = ? AND prompt_format = ? AND position = ? AND subset = ?",
                         [model, prompt_format, position, subset], order_by="track, layer")

    def lens_summary(self, model: str, track: str | None = None) -> list[LensSummaryRow]:
        """AudioLens Table II rows (accuracy, critical layer) of ``model`` (one ``track``), by track and format."""
        if track is None:
            return self.rows(LensSummaryRow, "model = ?", [model])
        return self.rows(LensSummaryRow, "model = ? AND track = ?", [model, track])

    def enrichment_tracks(self, model: str) -> list[str]:
        return self._distinct("track", "lens_enrichment", model)

    def enrichment_runs(self, model: str, track: str, method: str) -> list[LensEnrichmentRow]:
        """The enrichment sweep's runs of one method, by lambda then seed."""
        return self.rows(LensEnrichmentRow, "model = ? AND track = ? AND method = ?", [model, track, method],
                         order_by="lam, seed")

    def enrichment_stats(self, model: str, track: str, method: str) -> list[EnrichmentStat]:
        """Mean and std of accuracy over seeds at each lambda (the random-layer baseline), by lambda."""
        rows = self._fetch("SELECT lam, avg(accuracy), coalesce(stddev_samp(accuracy), 0) FROM lens_enrichment "
                           "WHERE model = ? AND track = ? AND method = ? GROUP BY lam ORDER BY lam",
                           [model, track, method])[1]
        return [EnrichmentStat(*r) for r in rows]

    # -- evaluations and steering ---------------------------------------------------------------
    def evaluation_tables(self) -> list[str]:
        """Names of the tables with rows in ``evaluations`` ('table1', 'table3', ...), sorted."""
        return self._distinct("table_name", "evaluations")

    def evaluation_rows(self, table_name: str, sae_id: str | None = None,
                        protocol: str | None = None) -> list[EvaluationRow]:
        """The long-format rows of one table (of one SAE or model for ``sae_id``; of one protocol:
        'per_clip', 'vocabulary', 'run' or 'seeds')."""
        where, params = ["table_name = ?"], [table_name]
        for column, value in (("sae_id", sae_id), ("protocol", protocol)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        return self.rows(EvaluationRow, " AND ".join(where), params)

    def evaluation_protocols(self, table_name: str) -> list[str]:
        """The protocols one table has rows of, sorted."""
        return [r[0] for r in self._fetch("SELECT DISTINCT protocol FROM evaluations WHERE table_name = ? "
                                          "ORDER BY protocol", [table_name])[1]]

    # -- the per-clip view and detection scores ----------------------------------------------------
    def evaluated_clips(self) -> list[str]:
        """Ids of the clips the per-clip protocol scored, sorted."""
        return [r[0] for r in self._fetch("SELECT DISTINCT clip_id FROM clip_scores ORDER BY clip_id")[1]]

    def clip_evaluation(self, clip_id: str, seed: int = 0) -> ClipEvaluation:
        """One clip's per-clip results: its row, each method's scores and its predictions by method
        and rank ('random' of ``seed`` only)."""
        rows = self.rows(ClipRow, "clip_id = ?", [clip_id])
        if not rows:
            raise NotFound(f"no clip {clip_id!r} in the catalog")
        where = "clip_id = ? AND (method <> 'random' OR seed = ?)"
        return ClipEvaluation(rows[0], self.rows(ClipScoreRow, where, [clip_id, seed], order_by="method, seed"),
                              self.rows(ClipPredictionRow, where, [clip_id, seed], order_by="method, seed, rank"))

    def feature_detection(self, sae_id: str, feature: int) -> list[DetectionRow]:
        """A feature's detection scores, one per judge."""
        return self.rows(DetectionRow, "sae_id = ? AND feature = ?", [sae_id, int(feature)])

    def steering_results(self) -> list[SteeringResultRow]:
        """Every steering-evaluation row (Table 3), by mapping, method, feature and value."""
        return self.rows(SteeringResultRow, order_by="mapping, method, layer NULLS LAST, sae_id, feature, value, judge")

    # -- steerability ----------------------------------------------------------------------------
    def steerability(self, ref: str | FeatureRef) -> list[SteerabilityRow]:
        """The feature's steerability rows, best first (flip_lower, flip rate, smaller multiple, track, target)."""
        fr = parse_feature_ref(str(ref))
        return self.rows(SteerabilityRow, "sae_id = ? AND feature = ?", [fr.sae_id, fr.feature],
                         order_by="flip_lower DESC, flip_rate DESC, abs(multiple), track, target")

    def best_steerability(self, refs: Sequence[str]) -> dict[str, SteerabilityRow]:
        """ref -> its best steerability row (as :meth:`steerability` orders them) for those of ``refs`` measured."""
        if not refs:
            return {}
        frs = [parse_feature_ref(r) for r in refs]
        rows = self.query("SELECT s.* FROM feature_steerability s JOIN (SELECT unnest(?) AS sae_id, unnest(?) AS "
                          "feature) r USING (sae_id, feature)", [[f.sae_id for f in frs], [f.feature for f in frs]])
        return {f"{r['sae_id']}/{r['feature']}": SteerabilityRow(**r) for r in rows}

    def steerability_for(self, track: str, target: str) -> list[SteerabilityRow]:
        """Every candidate measured for steering ``track`` to ``target``, best first."""
        return self.rows(SteerabilityRow, "track = ? AND target = ?", [track, target],
                         order_by="flip_lower DESC, flip_rate DESC, abs(multiple), sae_id, feature")

    def steerable_features(self, track: str, limit: int) -> list[SteerableFeature]:
        """The ``limit`` features that steer ``track`` best (each by its best target), flips > 0 only."""
        rows = self.query(
            "SELECT s.*, f.name AS feature_name FROM steerability s LEFT JOIN features f USING (sae_id, feature) "
            "WHERE s.track = ? AND s.flipped > 0 QUALIFY row_number() OVER (PARTITION BY s.sae_id, s.feature "
            "ORDER BY s.flip_lower DESC, s.flip_rate DESC, abs(s.multiple), s.target) = 1 "
            "ORDER BY s.flip_lower DESC, s.flip_rate DESC, abs(s.multiple), s.sae_id, s.feature LIMIT ?",
            [track, int(limit)])
        out = []
        for r in rows:
            name = r.pop("feature_name")
            best = SteerabilityRow(**r)
            out.append(SteerableFeature(best.ref, name, best))
        return out

    def steerability_tracks(self) -> list[str]:
        """Tracks with steerability rows."""
        return self._distinct("track", "steerability")

    # -- SAE quality -------------------------------------------------------------------------------
    def sae_metrics(self, sae_id: str | None = None, split: str | None = None) -> list[SaeMetricRow]:
        """The quality stage's (and seed stability's) figures, of one SAE / one split, by sae_id, metric, split."""
        where, params = [], []
        for column, value in (("sae_id", sae_id), ("split", split)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        return self.rows(SaeMetricRow, " AND ".join(where), params)
