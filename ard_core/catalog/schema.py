"""The catalog's schema: an append-only list of SQL migrations and its version.

Opening a writable catalog applies the steps it lacks (``CatalogBase.migrate``);
``docs/catalog.md`` documents every table. Never edit a released step: add one.
"""

from __future__ import annotations

SCHEMA_VERSION_KEY = "schema_version"

# Fills feature_pages (migration 4) for the SAEs matching ``ex`` (on feature_examples) and
# ``f`` (on features): each listed feature's row, its neighbours, its 'ard' examples (top then
# bottom, by rank).
FILL_FEATURE_PAGES = """
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
PAGE_SOURCES = ("features", "feature_examples")
"""Tables feature_pages derives from: every write to them refreshes it (CatalogBase._refresh_pages)."""

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
    """ + FILL_FEATURE_PAGES.format(ex="TRUE", f="TRUE"),
    # 5: evaluation protocols and spreads. ``evaluations`` gains ``protocol`` (in its key:
    # 'per_clip', 'vocabulary', 'run', 'seeds'), a 95% interval and the sample count; the old
    # global matching of table1 and track_match becomes 'vocabulary'. Per-clip results
    # (clip_scores, clip_predictions) feed the per-clip view; feature_detection holds each
    # named feature's detection score.
    """
    CREATE TABLE evaluations_v5 (
        table_name VARCHAR, protocol VARCHAR, method VARCHAR, sae_id VARCHAR, metric VARCHAR,
        value DOUBLE, std DOUBLE, ci_low DOUBLE, ci_high DOUBLE, n INTEGER,
        PRIMARY KEY (table_name, protocol, method, sae_id, metric)
    );
    INSERT INTO evaluations_v5
    SELECT table_name, CASE WHEN table_name IN ('table1', 'track_match') THEN 'vocabulary' ELSE 'run' END,
           method, sae_id, metric, value, std, NULL, NULL, NULL
    FROM evaluations;
    DROP TABLE evaluations;
    ALTER TABLE evaluations_v5 RENAME TO evaluations;
    CREATE TABLE clip_scores (
        sae_id VARCHAR, method VARCHAR, seed INTEGER, clip_id VARCHAR, n_predictions INTEGER,
        n_references INTEGER, "precision" DOUBLE, recall DOUBLE, f1 DOUBLE, ap DOUBLE,
        PRIMARY KEY (sae_id, method, seed, clip_id)
    );
    CREATE TABLE clip_predictions (
        sae_id VARCHAR, method VARCHAR, seed INTEGER, clip_id VARCHAR, rank INTEGER, feature INTEGER,
        name VARCHAR, activation DOUBLE, reference VARCHAR, similarity DOUBLE, matched BOOLEAN,
        PRIMARY KEY (sae_id, method, seed, clip_id, rank)
    );
    CREATE TABLE feature_detection (
        sae_id VARCHAR, feature INTEGER, judge VARCHAR, score DOUBLE, n_pos INTEGER, n_neg INTEGER,
        PRIMARY KEY (sae_id, feature, judge)
    );
    """,
    # 6: steerability (the steerability stage) and Table 3 as chosen on probe, judged on test.
    # Rows rank by flip_lower, the flip rate's 95% Wilson lower bound: 3 of 3 clips is weaker
    # evidence than 15 of 16.
    # steering_results' value was a multiple of max activation and its rows a sweep over
    # features; they now hold one chosen (feature, value) per method and layer, so the old
    # rows are dropped (run steer-eval again).
    """
    CREATE TABLE steerability (
        sae_id VARCHAR, feature INTEGER, track VARCHAR, target VARCHAR, value DOUBLE, flip_rate DOUBLE,
        n INTEGER, flipped INTEGER, multiple DOUBLE, clip_id VARCHAR, prompt_format VARCHAR, how VARCHAR,
        flip_lower DOUBLE,
        PRIMARY KEY (sae_id, feature, track, target)
    );
    CREATE VIEW feature_steerability AS
    SELECT * FROM steerability
    QUALIFY row_number() OVER (PARTITION BY sae_id, feature
                               ORDER BY flip_lower DESC, flip_rate DESC, abs(multiple), track, target) = 1;
    DELETE FROM steering_results;
    ALTER TABLE steering_results ADD COLUMN layer INTEGER;
    ALTER TABLE steering_results ADD COLUMN best_layer BOOLEAN;
    ALTER TABLE steering_results ADD COLUMN sensitivity_all DOUBLE;
    ALTER TABLE steering_results ADD COLUMN n_all INTEGER;
    ALTER TABLE steering_results ADD COLUMN probe_flip_rate DOUBLE;
    """,
    # 7: SAE quality (the quality stage, and seed stability from `evaluate --seeds`): one figure per
    # (SAE, metric, split), long format; metric names in docs/catalog.md. sae_id is an SAE's (its
    # random control's ends in '-random'), the model's for the unspliced reference, or
    # MODEL-lL-neurons for probes on a layer's raw neurons.
    """
    CREATE TABLE sae_metrics (
        sae_id VARCHAR, metric VARCHAR, split VARCHAR, value DOUBLE, std DOUBLE,
        PRIMARY KEY (sae_id, metric, split)
    );
    """,
    # 8: similar features (the similar stage): per feature its nearest features within its SAE
    # by decoder cosine (kind 'decoder') and in other layers' SAEs by the correlation of clip
    # mean activations over the probing clips (kind 'activation'). ``ref`` (SAE_ID/K) is the
    # feature page's one-column lookup key (see migration 4).
    """
    CREATE TABLE similar_features (
        ref VARCHAR, sae_id VARCHAR, feature INTEGER, kind VARCHAR, other_sae_id VARCHAR, rank INTEGER,
        other_feature INTEGER, similarity DOUBLE,
        PRIMARY KEY (sae_id, feature, kind, other_sae_id, rank)
    );
    CREATE INDEX similar_features_ref ON similar_features (ref);
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)
