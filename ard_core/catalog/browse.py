"""Named reads of features, SAEs, clips and models: what the app's pages ask the catalog.

Each is a method of :class:`ard_core.catalog.Catalog` returning typed rows, so the
UI holds no SQL. A feature, SAE or clip that is not there raises :class:`NotFound`
with a message that says what is there instead.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from ard_core.catalog.base import CatalogBase
from ard_core.catalog.refs import FeatureRef, parse_feature_ref
from ard_core.catalog.rows import ClipRow, FeatureExampleRow, FeatureRow, ModelRow, SaeRow


class NotFound(ValueError):
    """A feature, SAE or clip named by the caller is not in the catalog; the message says what is."""


_CONCEPT_SORTS = {  # sort key -> SQL expression (a whitelist: user text is never interpolated)
    "rank": "f.rank",
    "monosemanticity": "f.monosemanticity",
    "density": "f.density",
    "layer": "s.layer",
    "feature": "f.feature",
    "name": "lower(f.name)",
    "detection": "d.score",
    "steerability": "st.flip_lower",
}
CONCEPT_SORTS: tuple[str, ...] = tuple(_CONCEPT_SORTS)
"""The keys :class:`ConceptQuery` may sort by."""
MAX_PAGE_SIZE = 500
"""Most features one page of the concepts table holds."""


@dataclass
class ConceptQuery:
    """A search of the concepts table: filters, order and page."""

    text: str = ""
    """Free text: every word must appear in the name or description (or be the feature index / SAE_ID/K)."""
    sae_id: str | None = None
    """Only this SAE's features; None: every SAE."""
    layer: int | None = None
    """Only features of SAEs at this layer; None: every layer."""
    min_monosemanticity: float | None = None
    """Only features scoring at least this (None: no filter; scores may be negative)."""
    named_only: bool = False
    """Only features the describe stage named."""
    min_steerability: float = 0.0
    """Only features whose best steerability row flips at least this share of probe clips (0: no filter)."""
    steer_track: str | None = None
    """Only features that steer this track (a steerability row with a flip); None: no filter."""
    sort: str = "rank"
    """One of :data:`CONCEPT_SORTS`."""
    descending: bool = False
    """Sort from the largest value down."""
    page: int = 1
    """1-based page; clamped to the last page."""
    page_size: int = 25
    """Features per page; clamped to 1..MAX_PAGE_SIZE."""

    def __post_init__(self) -> None:
        if self.sort not in _CONCEPT_SORTS:
            raise ValueError(f"cannot sort by {self.sort!r}; choose one of {list(CONCEPT_SORTS)}")

    def where(self) -> tuple[str, list]:
        """The WHERE clause (with parameters) over ``features f JOIN saes s LEFT JOIN feature_steerability st``."""
        clauses, params = [], []
        if self.sae_id is not None:
            clauses.append("f.sae_id = ?")
            params.append(self.sae_id)
        if self.layer is not None:
            clauses.append("s.layer = ?")
            params.append(int(self.layer))
        if self.min_monosemanticity is not None:
            clauses.append("f.monosemanticity >= ?")
            params.append(float(self.min_monosemanticity))
        if self.named_only:
            clauses.append("f.name IS NOT NULL AND f.name <> ''")
        if self.min_steerability and self.min_steerability > 0:
            clauses.append("st.flip_rate >= ?")
            params.append(float(self.min_steerability))
        if self.steer_track:
            clauses.append("EXISTS (SELECT 1 FROM steerability t WHERE t.sae_id = f.sae_id AND t.feature = f.feature "
                           "AND t.track = ? AND t.flipped > 0)")
            params.append(self.steer_track)
        for word in (self.text or "").split():
            if "/" in word:
                clauses.append("(f.sae_id || '/' || CAST(f.feature AS VARCHAR)) = ?")
                params.append(word)
            elif word.lstrip("#").isdigit():
                clauses.append("(f.name ILIKE ? OR f.description ILIKE ? OR f.feature = ?)")
                params += [f"%{word}%", f"%{word}%", int(word.lstrip("#"))]
            else:
                clauses.append("(f.name ILIKE ? OR f.description ILIKE ?)")
                params += [f"%{word}%", f"%{word}%"]
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


class ConceptRow(NamedTuple):
    """One line of the concepts table."""

    sae_id: str
    feature: int
    name: str | None
    description: str | None
    layer: int
    monosemanticity: float | None
    rank: int | None
    density: float | None
    detection: float | None = None
    """Detection score (AUROC of the name as a CLAP query; None where not scored)."""
    steer_track: str | None = None
    """Track and target of its best steerability row (None: not measured)."""
    steer_target: str | None = None
    flip_rate: float | None = None
    flipped: int | None = None
    steer_n: int | None = None

    @property
    def ref(self) -> str:
        return f"{self.sae_id}/{self.feature}"

    @property
    def steers(self) -> str:
        """'gender -> male 12/12', or '' when not measured."""
        if self.steer_track is None:
            return ""
        return f"{self.steer_track} -> {self.steer_target} {self.flipped}/{self.steer_n}"


class ConceptsPage(NamedTuple):
    rows: list[ConceptRow]
    total: int
    """Features matching the query, over all pages."""
    page: int
    n_pages: int


@dataclass
class FeaturePage:
    """What a feature's page shows: its row, its listed neighbours and its 'ard' examples (top, then bottom)."""

    feature: FeatureRow
    prev_feature: int | None
    next_feature: int | None
    examples: list[FeatureExampleRow] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.feature.sae_id}/{self.feature.feature}"

    @property
    def prev_ref(self) -> str | None:
        return None if self.prev_feature is None else f"{self.feature.sae_id}/{self.prev_feature}"

    @property
    def next_ref(self) -> str | None:
        return None if self.next_feature is None else f"{self.feature.sae_id}/{self.next_feature}"


class CatalogCounts(NamedTuple):
    saes: int
    features: int
    named: int
    clips: int


class ClipChoice(NamedTuple):
    clip_id: str
    caption: str | None


class NamedFeature(NamedTuple):
    ref: str
    name: str | None


class SimilarFeature(NamedTuple):
    """One neighbour of a feature, with what the page shows of it."""

    kind: str
    """'decoder' (same SAE) or 'activation' (another layer's SAE)."""
    ref: str
    name: str | None
    layer: int
    similarity: float
    """Decoder cosine ('decoder') or Pearson correlation of clip means ('activation')."""


class ClipFile(NamedTuple):
    clip_id: str
    path: Path


class BrowseReads(CatalogBase):
    """Reads of features, SAEs, clips and models (mixed into :class:`ard_core.catalog.Catalog`)."""

    # -- SAEs and models -----------------------------------------------------------------
    def sae(self, sae_id: str) -> SaeRow:
        rows = self.rows(SaeRow, "sae_id = ?", [sae_id])
        if not rows:
            known = ", ".join(r.sae_id for r in self.rows(SaeRow)) or "none"
            raise NotFound(f"no SAE {sae_id!r} in this catalog (SAEs: {known})")
        return rows[0]

    def saes(self, controls: bool = True) -> list[SaeRow]:
        """Every SAE, by layer, then expansion (each random control after its twin); without the random
        controls when ``controls`` is False."""
        rows = self.rows(SaeRow, order_by="layer, expansion, sae_id")
        return rows if controls else [s for s in rows if not s.control]

    def primary_model(self) -> ModelRow | None:
        """The model most SAEs were trained on (the app's default model), None when no model is listed."""
        rows = self.query("SELECT m.*, (SELECT count(*) FROM saes s WHERE s.model = m.model) AS n "
                          "FROM models m ORDER BY n DESC, m.model LIMIT 1")
        return ModelRow(**{f.name: rows[0][f.name] for f in dataclasses.fields(ModelRow)}) if rows else None

    def counts(self) -> CatalogCounts:
        r = self.query("SELECT (SELECT count(*) FROM saes) AS saes, (SELECT count(*) FROM features) AS features, "
                       "(SELECT count(*) FROM features WHERE name IS NOT NULL AND trim(name) <> '') AS named, "
                       "(SELECT count(*) FROM clips) AS clips")[0]
        return CatalogCounts(r["saes"], r["features"], r["named"], r["clips"])

    # -- features ------------------------------------------------------------------------
    def feature_page(self, ref: str | FeatureRef) -> FeaturePage:
        """The feature's page. One lookup in ``feature_pages`` by its one-column key, which DuckDB
        answers from an index; a (sae_id, feature) filter would scan the whole table."""
        fr = parse_feature_ref(str(ref))
        rows = self.query("SELECT * FROM feature_pages WHERE ref = ?", [str(fr)])
        if not rows:
            sae = self.sae(fr.sae_id)
            raise NotFound(f"feature {fr} is not in the catalog (the SAE has features 0..{sae.d_sae - 1}; "
                           "features without scores are not listed)")
        page = rows[0]
        feature = FeatureRow(**{f.name: page[f.name] for f in dataclasses.fields(FeatureRow)})
        examples = [FeatureExampleRow("ard", fr.sae_id, fr.feature, **e) for e in page["examples"]]
        return FeaturePage(feature, page["prev_feature"], page["next_feature"], examples)

    def monosemanticity_range(self) -> tuple[float, float] | None:
        """(lowest, highest) monosemanticity over every scored feature; None when none is scored."""
        lo, hi = self._fetch("SELECT min(monosemanticity), max(monosemanticity) FROM features")[1][0]
        return None if lo is None else (float(lo), float(hi))

    def similar_features(self, ref: str | FeatureRef) -> list[SimilarFeature]:
        """The feature's neighbours (the similar stage): within its SAE by rank, then per other SAE (by layer
        and expansion) by rank. Empty when the stage has not run."""
        fr = parse_feature_ref(str(ref))
        rows = self._fetch(
            "SELECT n.kind, n.other_sae_id || '/' || CAST(n.other_feature AS VARCHAR), f.name, s.layer, n.similarity "
            "FROM similar_features n JOIN saes s ON s.sae_id = n.other_sae_id LEFT JOIN features f "
            "ON f.sae_id = n.other_sae_id AND f.feature = n.other_feature WHERE n.ref = ? "
            "ORDER BY n.kind = 'activation', s.layer, s.expansion, n.other_sae_id, n.rank", [str(fr)])[1]
        return [SimilarFeature(*r) for r in rows]

    def feature_densities(self, sae_id: str) -> np.ndarray:
        """(features,) density of every listed feature of ``sae_id``, by feature index; NaN where unknown."""
        rows = self._fetch("SELECT density FROM features WHERE sae_id = ? ORDER BY feature", [sae_id])[1]
        return np.array([np.nan if d is None else d for (d,) in rows], float)

    def feature_names(self, refs: Sequence[str]) -> dict[str, str]:
        """ref -> automatic name ('' when unnamed) of ``refs``, in one query; refs not in the catalog are left out."""
        if not refs:
            return {}
        frs = [parse_feature_ref(r) for r in refs]
        rows = self.query("SELECT f.sae_id, f.feature, f.name FROM features f "
                          "JOIN (SELECT unnest(?) AS sae_id, unnest(?) AS feature) r USING (sae_id, feature)",
                          [[f.sae_id for f in frs], [f.feature for f in frs]])
        return {f"{r['sae_id']}/{r['feature']}": r["name"] or "" for r in rows}

    def named_features(self) -> list[str]:
        """References of every named feature (the describe stage names the top-ranked ones)."""
        return [f"{s}/{k}" for s, k in self._fetch(
            "SELECT sae_id, feature FROM features WHERE name IS NOT NULL AND trim(name) <> '' "
            "ORDER BY sae_id, feature")[1]]

    def ranked_features(self, limit: int) -> list[NamedFeature]:
        """The first ``limit`` features: named ones first, each group by rank."""
        rows = self._fetch("SELECT sae_id, feature, name FROM features ORDER BY (name IS NULL OR trim(name) = ''), "
                           "rank NULLS LAST, sae_id, feature LIMIT ?", [int(limit)])[1]
        return [NamedFeature(f"{s}/{k}", name) for s, k, name in rows]

    def concepts_page(self, q: ConceptQuery) -> ConceptsPage:
        """One page of the features matching ``q``, in its order (ties by layer, SAE, index)."""
        size = max(1, min(int(q.page_size), MAX_PAGE_SIZE))
        where, params = q.where()
        base = ("FROM features f JOIN saes s ON s.sae_id = f.sae_id LEFT JOIN feature_detection d "
                "ON d.sae_id = f.sae_id AND d.feature = f.feature AND d.judge = 'clap' "
                "LEFT JOIN feature_steerability st ON st.sae_id = f.sae_id AND st.feature = f.feature" + where)
        total = int(self._fetch(f"SELECT count(*) {base}", params)[1][0][0])
        n_pages = max(1, math.ceil(total / size))
        page = min(max(1, int(q.page)), n_pages)
        order = f"{_CONCEPT_SORTS[q.sort]} {'DESC' if q.descending else 'ASC'} NULLS LAST, s.layer, f.sae_id, f.feature"
        rows = self._fetch(
            "SELECT f.sae_id, f.feature, f.name, f.description, s.layer, f.monosemanticity, f.rank, f.density, d.score, "
            "st.track, st.target, st.flip_rate, st.flipped, st.n "
            f"{base} ORDER BY {order} LIMIT ? OFFSET ?", params + [size, (page - 1) * size])[1]
        return ConceptsPage([ConceptRow(*r) for r in rows], total, page, n_pages)

    # -- clips ---------------------------------------------------------------------------
    def clip(self, clip_id: str) -> ClipRow:
        rows = self.rows(ClipRow, "clip_id = ?", [clip_id])
        if not rows:
            raise NotFound(f"no clip {clip_id!r} in the catalog")
        return rows[0]

    def clips(self, clip_ids: Sequence[str]) -> dict[str, ClipRow]:
        """The rows of ``clip_ids`` (absent ids are left out), in one query."""
        if not clip_ids:
            return {}
        return {c.clip_id: c for c in self.rows(ClipRow, "clip_id = ANY(?)", [list(clip_ids)])}

    def clip_choices(self, limit: int) -> list[ClipChoice]:
        """The first ``limit`` clips, test split first (what a user picks a clip to steer from)."""
        rows = self._fetch("SELECT clip_id, caption FROM clips ORDER BY split = 'test' DESC, clip_id LIMIT ?",
                           [int(limit)])[1]
        return [ClipChoice(*r) for r in rows]

    def clip_choice(self, clip_id: str) -> ClipChoice:
        """One clip as a choice (NotFound when it is not in the catalog)."""
        c = self.clip(clip_id)
        return ClipChoice(c.clip_id, c.caption)

    def label_values(self) -> dict[str, list[str]]:
        """track -> the sorted label values the clips carry (e.g. 'gender' -> ['female', 'male'])."""
        seen: dict[str, set[str]] = {}
        for (labels,) in self._fetch("SELECT labels FROM clips")[1]:
            for track, value in (json.loads(labels) if isinstance(labels, str) else (labels or {})).items():
                seen.setdefault(track, set()).add(value)
        return {track: sorted(values) for track, values in sorted(seen.items())}

    def top_clip_files(self, ref: str | FeatureRef, n: int) -> list[ClipFile]:
        """The first ``n`` of the feature's 'ard' top clips whose audio file is on this machine, by rank."""
        fr = parse_feature_ref(str(ref))
        rows = self._fetch("SELECT e.clip_id, c.path FROM feature_examples e JOIN clips c ON c.clip_id = e.clip_id "
                           "WHERE e.method = 'ard' AND e.sae_id = ? AND e.feature = ? AND e.kind = 'top' "
                           'ORDER BY e."rank"', [fr.sae_id, fr.feature])[1]
        out = []
        for clip_id, path in rows:
            found = self.resolve(path)
            if found is not None:
                out.append(ClipFile(clip_id, found))
            if len(out) == n:
                break
        return out

    def clip_folders(self) -> list[str]:
        """The folders holding the clips' files, nested ones collapsed into the top-most (the app serves these)."""
        dirs = set()
        for (path,) in self._fetch("SELECT DISTINCT path FROM clips")[1]:
            p = self.resolve(path)
            if p is not None:
                dirs.add(str(p.parent.resolve()))
        out: list[str] = []
        for d in sorted(dirs, key=len):
            if not any(d == o or d.startswith(o.rstrip("/") + "/") for o in out):
                out.append(d)
        return sorted(out)
