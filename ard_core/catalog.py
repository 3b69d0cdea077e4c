"""The DuckDB feature catalog. This module is the only writer of the database.

Writers (pipeline stages) open it with ``Catalog.open(path)``; readers (the app)
with ``Catalog.open(path, read_only=True)``. The schema is versioned: ``MIGRATIONS``
is an append-only list of SQL steps, and opening a writable catalog applies the
missing ones in one transaction. ``docs/catalog.md`` documents every table.

A feature is referred to everywhere as ``SAE_ID/K``, with ``SAE_ID`` naming the
model, the layer and the expansion factor (see :func:`sae_id_for`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Sequence

import duckdb
import pyarrow as pa

from ard_core.durable import crash_point

SCHEMA_VERSION_KEY = "schema_version"

# Fills feature_pages (migration 4) for the SAEs matching ``ex`` (on feature_examples) and
# ``f`` (on features): each listed feature's row, its neighbours, its 'ard' examples (top then
# bottom, by rank).
_FILL_FEATURE_PAGES = """
    INSERT INTO feature_pages
    SELECT f.sae_id || '/' || CAST(f.feature AS VARCHAR), f.sae_id, f.feature, f.name, f.description,
           f.monosemanticity, f."rank", f.density, f.max_act,
           lag(f.feature) OVER (PARTITION BY f.sae_id ORDER BY f.feature),
           lead(f.feature) OVER (PARTITION BY f.sae_id ORDER BY f.feature),
           coalesce(e.examples, [])
    FROM features f LEFT JOIN (
        SELECT sae_id, feature,
               list({{'kind': kind, 'rank': "rank", 'clip_id': clip_id, 'score': score, 'mean_act': mean_act,
                      'coverage': coverage}} ORDER BY kind DESC, "rank") AS examples
        FROM feature_examples WHERE method = 'ard' AND {ex} GROUP BY sae_id, feature
    ) e ON e.sae_id = f.sae_id AND e.feature = f.feature
    WHERE {f}
"""
_PAGE_SOURCES = ("features", "feature_examples")
"""Tables feature_pages derives from: every write to them refreshes it (Catalog._refresh_pages)."""

# Append only: never edit a released step, add a new one.
MIGRATIONS: list[str] = [
    # 1: the initial schema
    """
    CREATE TABLE clips (
        clip_id VARCHAR PRIMARY KEY, dataset VARCHAR, split VARCHAR, path VARCHAR,
        duration_s DOUBLE, labels VARCHAR, caption VARCHAR
    );
    CREATE TABLE models (
        model VARCHAR PRIMARY KEY, path VARCHAR, family VARCHAR, n_layers INTEGER, d_model INTEGER
    );
    CREATE TABLE activation_index (
        model VARCHAR, layer INTEGER, clip_id VARCHAR, shard VARCHAR, "offset" BIGINT, n_tokens INTEGER,
        PRIMARY KEY (model, layer, clip_id)
    );
    CREATE TABLE saes (
        sae_id VARCHAR PRIMARY KEY, model VARCHAR, layer INTEGER, expansion INTEGER, k INTEGER,
        d_in INTEGER, d_sae INTEGER, path VARCHAR, fvu DOUBLE, dead_frac DOUBLE, l0 DOUBLE
    );
    CREATE TABLE features (
        sae_id VARCHAR, feature INTEGER, name VARCHAR, description VARCHAR,
        monosemanticity DOUBLE, rank INTEGER, density DOUBLE, max_act DOUBLE,
        PRIMARY KEY (sae_id, feature)
    );
    CREATE TABLE feature_examples (
        method VARCHAR, sae_id VARCHAR, feature INTEGER, kind VARCHAR, rank INTEGER, clip_id VARCHAR,
        score DOUBLE, mean_act DOUBLE, coverage DOUBLE,
        PRIMARY KEY (method, sae_id, feature, kind, rank)
    );
    CREATE TABLE lens_scores (
        model VARCHAR, track VARCHAR, prompt_format VARCHAR, position VARCHAR, subset VARCHAR,
        layer INTEGER, score DOUBLE, n INTEGER,
        PRIMARY KEY (model, track, prompt_format, position, subset, layer)
    );
    CREATE TABLE evaluations (
        table_name VARCHAR, method VARCHAR, sae_id VARCHAR, metric VARCHAR, value DOUBLE, std DOUBLE,
        PRIMARY KEY (table_name, method, sae_id, metric)
    );
    CREATE TABLE steering_results (
        mapping VARCHAR, method VARCHAR, sae_id VARCHAR, feature INTEGER, value DOUBLE, judge VARCHAR,
        sensitivity DOUBLE, n INTEGER,
        PRIMARY KEY (mapping, method, sae_id, feature, value, judge)
    );
    CREATE TABLE annotations (
        annotator VARCHAR, session_id VARCHAR, sae_id VARCHAR, feature INTEGER, label VARCHAR,
        rating INTEGER, created_at TIMESTAMP DEFAULT current_timestamp,
        PRIMARY KEY (annotator, session_id, sae_id, feature)
    );
    CREATE INDEX feature_examples_clip ON feature_examples (clip_id);
    """,
    # 2: AudioLens summaries (Table II/III) and the enrichment sweep (Fig. 5)
    """
    CREATE TABLE lens_summary (
        model VARCHAR, track VARCHAR, prompt_format VARCHAR, accuracy DOUBLE, critical_layer DOUBLE,
        n INTEGER, n_labels INTEGER,
        PRIMARY KEY (model, track, prompt_format)
    );
    CREATE TABLE lens_enrichment (
        model VARCHAR, track VARCHAR, method VARCHAR, lam DOUBLE, seed INTEGER, source_layer INTEGER,
        accuracy DOUBLE, n INTEGER,
        PRIMARY KEY (model, track, method, lam, seed)
    );
    """,
    # 3: caches and per-method results of the score / describe / evaluate stages
    """
    CREATE TABLE clip_embeddings (
        embedder VARCHAR, clip_id VARCHAR, embedding FLOAT[],
        PRIMARY KEY (embedder, clip_id)
    );
    CREATE TABLE clip_captions (
        model VARCHAR, clip_id VARCHAR, caption VARCHAR,
        PRIMARY KEY (model, clip_id)
    );
    CREATE TABLE method_scores (
        method VARCHAR, sae_id VARCHAR, feature INTEGER, seed INTEGER, monosemanticity DOUBLE, rank INTEGER,
        PRIMARY KEY (method, sae_id, feature, seed)
    );
    CREATE TABLE method_concepts (
        method VARCHAR, sae_id VARCHAR, feature INTEGER, seed INTEGER, name VARCHAR, description VARCHAR,
        PRIMARY KEY (method, sae_id, feature, seed)
    );
    """,
    # 4: feature_pages, derived from features and feature_examples: what the app's feature
    # page reads, under a one-column key. DuckDB answers from an ART index only an equality
    # on a single column, so a (sae_id, feature) lookup scanned all of feature_examples
    # (2.3M rows at 3 x 32k features). The writer refreshes it with every write to its sources.
    """
    CREATE TABLE feature_pages (
        ref VARCHAR PRIMARY KEY, sae_id VARCHAR, feature INTEGER, name VARCHAR, description VARCHAR,
        monosemanticity DOUBLE, rank INTEGER, density DOUBLE, max_act DOUBLE,
        prev_feature INTEGER, next_feature INTEGER,
        examples STRUCT(kind VARCHAR, rank INTEGER, clip_id VARCHAR, score DOUBLE, mean_act DOUBLE, coverage DOUBLE)[]
    );
    """ + _FILL_FEATURE_PAGES.format(ex="TRUE", f="TRUE"),
]

SCHEMA_VERSION = len(MIGRATIONS)

_SAE_ID_RE = re.compile(r"^(?P<model>.+)-l(?P<layer>\d+)-e(?P<expansion>\d+)$")


def sae_id_for(model_name: str, layer: int, expansion: int) -> str:
    """'tiny-audiollm', 5, 8 -> 'tiny-audiollm-l5-e8'."""
    model = re.sub(r"[^a-z0-9._-]+", "-", model_name.lower()).strip("-")
    return f"{model}-l{int(layer)}-e{int(expansion)}"


class SaeIdParts(NamedTuple):
    model: str
    layer: int
    expansion: int


def parse_sae_id(sae_id: str) -> SaeIdParts:
    m = _SAE_ID_RE.match(sae_id)
    if not m:
        raise ValueError(f"SAE id {sae_id!r} is not of the form MODEL-lLAYER-eEXPANSION (e.g. tiny-audiollm-l5-e8)")
    return SaeIdParts(m["model"], int(m["layer"]), int(m["expansion"]))


class FeatureRef(NamedTuple):
    sae_id: str
    feature: int

    def __str__(self) -> str:
        return f"{self.sae_id}/{self.feature}"


def parse_feature_ref(ref: str) -> FeatureRef:
    """'tiny-audiollm-l5-e8/123' -> FeatureRef('tiny-audiollm-l5-e8', 123)."""
    sae_id, sep, k = ref.strip().rpartition("/")
    if not sep or not k.isdigit():
        raise ValueError(f"feature reference {ref!r} must be SAE_ID/K, e.g. tiny-audiollm-l5-e8/123")
    parse_sae_id(sae_id)
    return FeatureRef(sae_id, int(k))


# -- rows ------------------------------------------------------------------------------
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


@dataclass
class AnnotationRow:
    annotator: str
    session_id: str
    sae_id: str
    feature: int
    label: str
    rating: int | None


_TABLE_OF: dict[type, str] = {
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
    SteeringResultRow: "steering_results",
    AnnotationRow: "annotations",
}


# Primary keys, the default (deterministic) order of :meth:`Catalog.rows`.
_PRIMARY_KEY: dict[str, tuple[str, ...]] = {
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
    "evaluations": ("table_name", "method", "sae_id", "metric"),
    "steering_results": ("mapping", "method", "sae_id", "feature", "value", "judge"),
    "annotations": ("annotator", "session_id", "sae_id", "feature"),
}


class CatalogError(RuntimeError):
    """The catalog file is missing, locked, or of an unsupported schema version."""


class Catalog:
    """A connection to the catalog. Use as a context manager or call :meth:`close`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, read_only: bool) -> None:
        self.con = con
        self.path = path
        self.read_only = read_only
        self._in_transaction = False

    # -- opening and migrations -----------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, read_only: bool = False) -> "Catalog":
        path = Path(path)
        if read_only and not path.is_file():
            raise CatalogError(f"catalog {str(path)!r} does not exist; run `python -m precompute run --config ...` first")
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            raise CatalogError(f"cannot open catalog {str(path)!r}: {exc} (is another process writing it?)") from exc
        cat = cls(con, path, read_only)
        if read_only:
            version = cat.schema_version()
            if version > SCHEMA_VERSION:
                raise CatalogError(
                    f"catalog {str(path)!r} has schema v{version}, newer than this code (v{SCHEMA_VERSION}); upgrade"
                )
            if version < SCHEMA_VERSION:
                raise CatalogError(
                    f"catalog {str(path)!r} has schema v{version}, this code needs v{SCHEMA_VERSION}; migrate it "
                    f"by re-running any precompute stage on it, or with `python -c \"from ard_core.catalog import "
                    f"Catalog; Catalog.open('{path}').close()\"`"
                )
        else:
            cat.migrate()
        return cat

    def schema_version(self) -> int:
        has_meta = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'"
        ).fetchone()[0]
        if not has_meta:
            return 0
        row = self.con.execute("SELECT value FROM meta WHERE key = ?", [SCHEMA_VERSION_KEY]).fetchone()
        return int(row[0]) if row else 0

    def migrate(self) -> int:
        """Apply missing migrations; returns the resulting schema version."""
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise CatalogError(f"catalog {str(self.path)!r} has schema v{version}, newer than this code (v{SCHEMA_VERSION})")
        if version == SCHEMA_VERSION:
            return version
        self.con.execute("BEGIN TRANSACTION")
        try:
            self.con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
            for step in MIGRATIONS[version:]:
                self.con.execute(step)
            self.con.execute(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)", [SCHEMA_VERSION_KEY, str(SCHEMA_VERSION)]
            )
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise
        return SCHEMA_VERSION

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------
    def _require_writable(self) -> None:
        if self.read_only:
            raise CatalogError(f"catalog {str(self.path)!r} is open read-only")

    def upsert(self, rows: Sequence[Any]) -> int:
        """Insert or replace typed rows (all of one dataclass type) in one statement."""
        self._require_writable()
        if not rows:
            return 0
        kind = type(rows[0])
        names = [f.name for f in dataclasses.fields(kind)]
        columns: dict[str, list] = {n: [] for n in names}
        for row in rows:
            if type(row) is not kind:
                raise TypeError(f"mixed row types in one upsert: {kind.__name__} and {type(row).__name__}")
            for n in names:
                v = getattr(row, n)
                columns[n].append(json.dumps(v, sort_keys=True) if isinstance(v, dict) else v)
        return self.upsert_columns(kind, columns)

    def upsert_columns(self, kind: type, columns: Mapping[str, Any]) -> int:
        """Insert or replace rows of ``kind``'s table given column-wise: the bulk path.

        ``columns`` maps every field of the dataclass ``kind`` to a list, NumPy array
        or Arrow array, all of one length; no row objects are built, so hundreds of
        thousands of rows take about a second. Dict-valued fields must already be JSON.
        """
        self._require_writable()
        table = _TABLE_OF[kind]
        names = [f.name for f in dataclasses.fields(kind)]
        if set(columns) != set(names):
            missing, extra = sorted(set(names) - set(columns)), sorted(set(columns) - set(names))
            raise ValueError(f"upsert_columns({kind.__name__}): columns must be exactly its fields; "
                             f"missing {missing}, unknown {extra}")
        arrow = pa.table({n: columns[n] for n in names})  # noqa: F841  (DuckDB reads the local by name)
        if arrow.num_rows == 0:
            return 0
        cols = ", ".join(f'"{n}"' for n in names)
        with self._atomic():
            self.con.execute(f"INSERT OR REPLACE INTO {table} ({cols}) SELECT {cols} FROM arrow")
            if table in _PAGE_SOURCES:
                self._refresh_pages(sorted(set(arrow.column("sae_id").to_pylist())))
        return arrow.num_rows

    def delete_where(self, table: str, **equals: Any) -> None:
        """Delete rows of ``table`` matching all ``column=value`` pairs (stage re-runs)."""
        self._require_writable()
        if table not in _TABLE_OF.values():
            raise ValueError(f"unknown table {table!r}")
        where = " AND ".join(f'"{k}" = ?' for k in equals) or "TRUE"
        with self._atomic():
            self.con.execute(f"DELETE FROM {table} WHERE {where}", list(equals.values()))
            if table in _PAGE_SOURCES:
                self._refresh_pages([equals["sae_id"]] if "sae_id" in equals else None)

    def _refresh_pages(self, sae_ids: list[str] | None) -> None:
        """Rebuild the ``feature_pages`` rows of ``sae_ids`` (None: every SAE) from their sources."""
        if sae_ids is None:
            self.con.execute("DELETE FROM feature_pages")
            self.con.execute(_FILL_FEATURE_PAGES.format(ex="TRUE", f="TRUE"))
        else:
            self.con.execute("DELETE FROM feature_pages WHERE sae_id = ANY(?)", [sae_ids])
            fill = _FILL_FEATURE_PAGES.format(ex="sae_id = ANY(?)", f="f.sae_id = ANY(?)")
            self.con.execute(fill, [sae_ids, sae_ids])

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        """One transaction around what runs inside, or the caller's if one is open (then it commits)."""
        if self._in_transaction:
            yield
            return
        self.con.execute("BEGIN TRANSACTION")
        self._in_transaction = True
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        else:
            self.con.execute("COMMIT")
        finally:
            self._in_transaction = False

    @contextmanager
    def transaction(self) -> Iterator["Catalog"]:
        """Writes inside commit together or not at all.

        A stage replaces its rows as DELETE + INSERT inside one of these, so a run killed
        in between leaves the old rows (DuckDB drops an uncommitted transaction on reopen),
        never a half-empty table or partial rows.
        """
        self._require_writable()
        with self._atomic():
            yield self
            crash_point("commit")

    def upsert_sae(self, row: SaeRow) -> None:
        self.upsert([row])

    # -- reading -----------------------------------------------------------------------
    def query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        cur = self.con.execute(sql, list(params))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def rows(self, kind: type, where: str = "", params: Iterable[Any] = (), order_by: str = "") -> list[Any]:
        """Typed rows of the table behind ``kind``."""
        table = _TABLE_OF[kind]
        names = [f.name for f in dataclasses.fields(kind)]
        sql = f"SELECT {', '.join(repr_col(n) for n in names)} FROM {table}"
        if where:
            sql += f" WHERE {where}"
        sql += " ORDER BY " + (order_by or ", ".join(repr_col(c) for c in _PRIMARY_KEY[table]))
        out = []
        for rec in self.query(sql, params):
            if "labels" in rec and isinstance(rec["labels"], str):
                rec["labels"] = json.loads(rec["labels"])
            out.append(kind(**rec))
        return out

    def count(self, table: str) -> int:
        if table not in _TABLE_OF.values():
            raise ValueError(f"unknown table {table!r}")
        return int(self.con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def tables(self) -> list[str]:
        return sorted(r[0] for r in self.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
        ).fetchall())


def repr_col(name: str) -> str:
    return f'"{name}"'
