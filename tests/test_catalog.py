"""The DuckDB catalog: round trips, migrations, read-only access, feature refs."""

from __future__ import annotations

import dataclasses

import duckdb
import pytest

from ard_core.catalog import (
    MIGRATIONS,
    SCHEMA_VERSION,
    AnnotationRow,
    Catalog,
    ClipCaptionRow,
    ClipEmbeddingRow,
    LensEnrichmentRow,
    LensSummaryRow,
    MethodConceptRow,
    MethodScoreRow,
    CatalogError,
    ClipRow,
    EvaluationRow,
    FeatureExampleRow,
    FeatureRow,
    LensScoreRow,
    SaeRow,
    SteeringResultRow,
    parse_feature_ref,
    parse_sae_id,
    sae_id_for,
)

ROWS = [
    [ClipRow("a", "mini", "train", "/x/a.ogg", 1.5, {"gender": "female", "language": "German"}, "a woman speaking German"),
     ClipRow("b", "mini", "test", "/x/b.ogg", 2.0, {}, "a dog barking")],
    [SaeRow("tiny-audiollm-l5-e8", "tiny-audiollm", 5, 8, 32, 128, 1024, "runs/x", 0.12, 0.03, 31.5)],
    [FeatureRow("tiny-audiollm-l5-e8", 3, "female speech", "speech by women", 4.2, 1, 0.01, 7.5),
     FeatureRow("tiny-audiollm-l5-e8", 4, None, None, None, None, 0.2, 1.0)],
    [FeatureExampleRow("ard", "tiny-audiollm-l5-e8", 3, "top", 0, "a", 2.5, 3.0, 0.8333)],
    [LensScoreRow("tiny-audiollm", "gender", "P3", "last", "all", 4, 0.93, 200)],
    [EvaluationRow("table1", "ard", "tiny-audiollm-l5-e8", "f1", 0.5, None)],
    [SteeringResultRow("female->male", "ard", "tiny-audiollm-l5-e8", 3, 8.0, "label_prob", 0.61, 100)],
    [AnnotationRow("ann1", "s1", "tiny-audiollm-l5-e8", 3, "women talking", 4)],
    [LensSummaryRow("tiny-audiollm", "gender", "P3", 0.9, 6.5, 288, 2)],
    [LensEnrichmentRow("tiny-audiollm", "animal", "info_score", 1.25, 0, 3, 0.5, 96),
     LensEnrichmentRow("tiny-audiollm", "animal", "random_layer", 1.25, 1, None, 0.4, 96)],
    [ClipEmbeddingRow("hf:tiny-clap", "a", [0.25, -0.5, 1.0])],
    [ClipCaptionRow("tiny-audiollm", "a", "a woman speaking")],
    [MethodScoreRow("coverage", "tiny-audiollm-l5-e8", 3, 0, 2.5, 1)],
    [MethodConceptRow("random", "tiny-audiollm-l5-e8", 3, 4, "dog", "dogs")],
]


def test_round_trip_every_table(tmp_path):
    path = tmp_path / "c.duckdb"
    with Catalog.open(path) as cat:
        for rows in ROWS:
            assert cat.upsert(rows) == len(rows)
    with Catalog.open(path, read_only=True) as cat:
        for rows in ROWS:
            kind = type(rows[0])
            assert cat.rows(kind) == rows, kind.__name__
        with pytest.raises(CatalogError, match="read-only"):
            cat.upsert(ROWS[0])


def test_upsert_replaces_by_primary_key(tmp_path):
    with Catalog.open(tmp_path / "c.duckdb") as cat:
        cat.upsert([SaeRow("m-l1-e4", "m", 1, 4, 8, 16, 64, "p", 0.5, 0.1, 8.0)])
        cat.upsert([SaeRow("m-l1-e4", "m", 1, 4, 8, 16, 64, "p", 0.2, 0.0, 8.0)])
        assert cat.count("saes") == 1
        assert cat.rows(SaeRow)[0].fvu == 0.2


def test_bulk_columns_equal_row_upsert(tmp_path):
    import numpy as np

    n = 50
    rows = [FeatureExampleRow("ard", "m-l1-e4", f // 2, ("top", "bottom")[f % 2], 0, f"c{f}", 0.5 * f, 1.0, 0.25)
            for f in range(n)]
    cols = {"method": ["ard"] * n, "sae_id": np.array(["m-l1-e4"] * n), "feature": np.arange(n) // 2,
            "kind": [("top", "bottom")[f % 2] for f in range(n)], "rank": np.zeros(n, np.int32),
            "clip_id": [f"c{f}" for f in range(n)], "score": 0.5 * np.arange(n), "mean_act": np.ones(n),
            "coverage": np.full(n, 0.25, np.float32)}
    with Catalog.open(tmp_path / "rows.duckdb") as a, Catalog.open(tmp_path / "cols.duckdb") as b:
        assert a.upsert(rows) == b.upsert_columns(FeatureExampleRow, cols) == n
        assert a.rows(FeatureExampleRow) == b.rows(FeatureExampleRow) == sorted(
            rows, key=lambda r: (r.method, r.sae_id, r.feature, r.kind, r.rank))
        b.upsert_columns(FeatureExampleRow, {**cols, "score": np.zeros(n)})  # replaces by primary key
        assert b.count("feature_examples") == n and {r.score for r in b.rows(FeatureExampleRow)} == {0.0}
        with pytest.raises(ValueError, match="missing \\['coverage'\\]"):
            b.upsert_columns(FeatureExampleRow, {k: v for k, v in cols.items() if k != "coverage"})


def _expected_pages(cat: Catalog) -> dict[str, dict]:
    """feature_pages recomputed in Python from features and feature_examples."""
    feats = cat.rows(FeatureRow)
    examples = [e for e in cat.rows(FeatureExampleRow) if e.method == "ard"]
    out = {}
    for f in feats:
        same = [g.feature for g in feats if g.sae_id == f.sae_id]
        i = same.index(f.feature)
        ex = sorted((e for e in examples if (e.sae_id, e.feature) == (f.sae_id, f.feature)),
                    key=lambda e: (e.kind != "top", e.rank))
        out[f"{f.sae_id}/{f.feature}"] = {
            **dataclasses.asdict(f), "ref": f"{f.sae_id}/{f.feature}",
            "prev_feature": same[i - 1] if i > 0 else None, "next_feature": same[i + 1] if i + 1 < len(same) else None,
            "examples": [{k: getattr(e, k) for k in ("kind", "rank", "clip_id", "score", "mean_act", "coverage")}
                         for e in ex]}
    return out


def _pages(cat: Catalog) -> dict[str, dict]:
    return {r["ref"]: r for r in cat.query("SELECT * FROM feature_pages")}


def _ex(sae, f, kind, rank, clip, method="ard"):
    return FeatureExampleRow(method, sae, f, kind, rank, clip, 1.0 / (rank + 1), 0.5, 0.25)


def test_feature_pages_follow_every_write_to_their_sources(tmp_path):
    a, b = "m-l1-e4", "m-l2-e4"
    with Catalog.open(tmp_path / "c.duckdb") as cat:
        cat.upsert([FeatureRow(a, f, f"n{f}", None, 0.5, f, 0.1, 2.0) for f in (0, 2, 5)]
                   + [FeatureRow(b, 1, None, None, None, None, 0.0, None)])
        cat.upsert([_ex(a, 2, kind, r, f"c{kind}{r}") for kind in ("bottom", "top") for r in (1, 0)]
                   + [_ex(a, 2, "top", 0, "cx", method="mean_act"), _ex(b, 1, "top", 0, "cb")])
        assert _pages(cat) == _expected_pages(cat)
        assert [e["clip_id"] for e in _pages(cat)[f"{a}/2"]["examples"]] == ["ctop0", "ctop1", "cbottom0", "cbottom1"]
        cat.upsert([_ex(a, 2, "top", 0, "new"), _ex(a, 5, "top", 0, "c5")])  # replace one, add one
        cat.upsert([FeatureRow(a, 3, "three", None, 0.1, 9, 0.2, 1.0)])  # a new neighbour
        assert _pages(cat) == _expected_pages(cat) and _pages(cat)[f"{a}/2"]["next_feature"] == 3
        cat.delete_where("feature_examples", sae_id=a)
        assert _pages(cat) == _expected_pages(cat) and _pages(cat)[f"{b}/1"]["examples"]
        with pytest.raises(RuntimeError), cat.transaction():  # rolled back: the pages too
            cat.delete_where("features")
            assert not _pages(cat)
            raise RuntimeError
        assert _pages(cat) == _expected_pages(cat) and len(_pages(cat)) == 5


def test_migration_4_fills_feature_pages_of_an_older_catalog(tmp_path):
    path = tmp_path / "v3.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    for step in MIGRATIONS[:3]:
        con.execute(step)
    con.execute("INSERT INTO meta VALUES ('schema_version', '3')")
    con.execute("INSERT INTO features VALUES ('m-l1-e4', 7, 'x', NULL, 0.5, 1, 0.1, 1.0), "
                "('m-l1-e4', 9, NULL, NULL, NULL, NULL, 0.0, NULL)")
    con.execute("INSERT INTO feature_examples VALUES ('ard', 'm-l1-e4', 7, 'top', 0, 'c', 1.0, 1.0, 1.0)")
    con.close()
    with Catalog.open(path) as cat:
        assert cat.schema_version() == SCHEMA_VERSION >= 4
        assert len(_pages(cat)) == 2 and _pages(cat) == _expected_pages(cat)


def test_schema_version_and_idempotent_migration(tmp_path):
    path = tmp_path / "c.duckdb"
    with Catalog.open(path) as cat:
        assert cat.schema_version() == SCHEMA_VERSION == len(MIGRATIONS)
        assert {"clips", "saes", "features", "feature_examples", "lens_scores", "evaluations",
                "steering_results", "annotations", "activation_index", "meta"} <= set(cat.tables())
    with Catalog.open(path) as cat:  # re-open: nothing re-applied, nothing lost
        assert cat.migrate() == SCHEMA_VERSION


def test_read_only_refuses_missing_or_old_catalog(tmp_path):
    with pytest.raises(CatalogError, match="does not exist"):
        Catalog.open(tmp_path / "missing.duckdb", read_only=True)
    old = tmp_path / "old.duckdb"
    duckdb.connect(str(old)).close()  # an empty database: schema v0
    with pytest.raises(CatalogError, match="schema v0"):
        Catalog.open(old, read_only=True)
    with Catalog.open(old) as cat:  # a writer migrates it
        assert cat.schema_version() == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "c.duckdb"
    with Catalog.open(path) as cat:
        cat.con.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(CatalogError, match="newer"):
        Catalog.open(path)


def test_feature_refs():
    sid = sae_id_for("Qwen2-Audio-7B-Instruct", 26, 8)
    assert sid == "qwen2-audio-7b-instruct-l26-e8"
    assert parse_sae_id(sid) == ("qwen2-audio-7b-instruct", 26, 8)
    ref = parse_feature_ref(f"{sid}/1234")
    assert (ref.sae_id, ref.feature) == (sid, 1234) and str(ref) == f"{sid}/1234"
    for bad in ("nofeature", f"{sid}/x", "foo/3", f"{sid}/-1"):
        with pytest.raises(ValueError):
            parse_feature_ref(bad)
