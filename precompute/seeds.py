"""``python -m precompute evaluate --config CONFIG --seeds N``: Tables 1, 3 and 4 over retrained SAEs.

Not part of ``run``. For each seed S of ``[run].seed + 1 .. [run].seed + N`` it makes a run of its
own under ``OUT_DIR/seeds/seed_S/`` (``config.toml``: the run's config with that ``out_dir`` and
``seed``; its own catalog), which reuses what does not depend on the seed instead of redoing it:
the activation store (a symlink to ``OUT_DIR/activations``), the dataset manifest, and the
catalog's clips, models, activation index and the CLAP-embedding and caption caches. Then it
runs train-sae, score, describe, evaluate and steer-eval there (each stage skipped when its done
marker says it finished for that config), and reports the mean and the sample std over the
seeds of every Table 1 (per-clip), Table 3 and Table 4 figure: into the main catalog
(``evaluations`` rows with protocol 'seeds') and ``OUT_DIR/seeds/README.md``. It also measures each
SAE's seed stability over the run's own SAE and the seeds' (:mod:`ard_core.sae.stability`: the share of
features with a partner above 0.7 decoder cosine in another seed's SAE of the same shape), into the
main catalog's ``sae_metrics`` (metric 'seed_stability', split 'seeds').
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
import tomlkit

from ard_core import durable
from ard_core.catalog import (
    ActivationIndexRow,
    Catalog,
    ClipCaptionRow,
    ClipEmbeddingRow,
    ClipRow,
    EvaluationRow,
    ModelRow,
    SaeMetricRow,
    SaeRow,
)
from ard_core.config import ConfigError, RunConfig
from ard_core.sae import TopKSAE
from ard_core.sae.stability import seed_stability
from precompute import handover
from precompute.configs import SteerEvalConfig
from precompute.markdown import gaps_md, steering_md, table1_md, table4_md
from precompute.run import config_hash, invalidate_from, marker, run_stage

log = logging.getLogger(__name__)

SEED_STAGES = ("train-sae", "score", "describe", "evaluate", "steerability", "steer-eval")
SHARED_ROWS = (ClipRow, ModelRow, ActivationIndexRow, ClipEmbeddingRow, ClipCaptionRow)
"""Catalog rows a seed's run starts from: none depends on the SAE seed."""
AGGREGATED = (("table1", "per_clip"), ("table1_gap", "per_clip"), ("table4", "run"), ("steering", "run"))
"""(table_name, protocol) of the rows averaged over seeds."""


def seed_run(run: RunConfig, seed: int) -> Path:
    """Prepare ``OUT_DIR/seeds/seed_S/`` (config, store link, manifest, catalog) and return its config path."""
    out = run.run.out_dir / "seeds" / f"seed_{seed}"
    raw = copy.deepcopy(run.raw)
    raw["run"] = {**raw.get("run", {}), "out_dir": str(out), "seed": seed}
    config = out / "config.toml"
    durable.write_text(config, f"# written by `python -m precompute evaluate --seeds`: {run.path} with seed {seed}\n"
                       + tomlkit.dumps(raw))
    store = (run.run.out_dir / "activations").resolve()
    if not store.is_dir():
        raise ConfigError(f"no activation store at {store}; run the pipeline (`python -m precompute run --config "
                          f"{run.path}`) before `evaluate --seeds`")
    link = out / "activations"
    if not link.exists():
        link.symlink_to(store, target_is_directory=True)
    manifest = handover.manifest(run)
    (out / handover.MANIFEST).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(manifest, out / handover.MANIFEST)
    with Catalog.open(run.run.catalog_path, read_only=True) as main, Catalog.open(out / "catalog.duckdb") as cat:
        with cat.transaction():
            for kind in SHARED_ROWS:
                cat.upsert(main.rows(kind))
    return config


def run_seed(config: Path) -> None:
    """The seed's stages in order, skipping those already done for this config."""
    run = RunConfig.load(config)
    digest = config_hash(config)
    for stage in SEED_STAGES:
        done = marker(run, stage)
        if done.is_file() and done.read_text().strip() == digest:
            log.info("%s: %s already complete; skipped", run.run.out_dir, stage)
            continue
        invalidate_from(run, stage)
        print(f"[seeds] {run.run.out_dir}: {stage}")
        rc = run_stage(stage, config)
        if rc != 0:
            raise ConfigError(f"stage {stage} failed with exit code {rc} for {config}; fix it and re-run --seeds")
        durable.write_text(done, digest + "\n")


STEERING_CHOICE = "chosen-on-probe"
"""The sae_id of Table 3's rows over seeds: each seed's run chooses its own (SAE, feature, value) on probe."""


def aggregate(per_seed: Sequence[Sequence[EvaluationRow]]) -> list[EvaluationRow]:
    """Mean and sample std over seeds of every figure present in all of them (protocol 'seeds')."""
    values: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    for rows in per_seed:
        for r in rows:
            # Table 3's figure is each seed's choice on probe, whichever layer's SAE it came from
            sae_id = STEERING_CHOICE if r.table_name == "steering" else r.sae_id
            values[(r.table_name, r.method, sae_id, r.metric)].append(r.value)
    out = []
    for (table, method, sae_id, metric), vals in sorted(values.items()):
        if len(vals) == len(per_seed):
            std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
            out.append(EvaluationRow(table, method, sae_id, metric, float(np.mean(vals)), std, "seeds", n=len(vals)))
    return out


def stability_rows(decoders: dict[str, list[Path]]) -> list[SaeMetricRow]:
    """sae_id -> its SAE folders from different seeds (the run's and each seed's) -> seed stability rows."""
    rows = []
    for sae_id, folders in sorted(decoders.items()):
        if len(folders) < 2:
            log.warning("%s: trained with one seed only, no seed stability", sae_id)
            continue
        st = seed_stability([TopKSAE.load(f).W_dec.detach() for f in folders])
        rows.append(SaeMetricRow(sae_id, "seed_stability", "seeds", st.mean, st.std))
    return rows


def stability_md(rows: Sequence[SaeMetricRow]) -> list[str]:
    return ["| SAE | features with a partner (decoder cosine > 0.7) in another seed's SAE |", "|---|---|",
            *[f"| {r.sae_id} | {r.value:.3f}" + (f" +- {r.std:.3f}" if r.std is not None else "") + " |"
              for r in rows]]


def write_seeds_report(path: Path, rows: Sequence[EvaluationRow], seeds: Sequence[int], saes: Sequence[SaeRow],
                       mappings: Sequence[str] = (), stability: Sequence[SaeMetricRow] = ()) -> Path:
    def pick(table: str) -> list[EvaluationRow]:
        return [r for r in rows if r.table_name == table]

    t1 = next((r.sae_id for r in pick("table1")), "")
    lines = [f"# Tables 1, 3 and 4 over {len(seeds)} SAE seeds ({', '.join(map(str, seeds))})", "",
             "Each cell is the mean +- the sample std over the seeds' runs (SAEs retrained, then score, describe, "
             "evaluate and steer-eval).", "", f"## Table 1, per clip ({t1})", "", *table1_md(pick("table1"), t1), "",
             *gaps_md(pick("table1_gap")), "", "## Table 3 (steering sensitivity)", "", *steering_md(pick("steering"), mappings),
             "", "## Table 4 (highest monosemanticity)", "",
             *table4_md(pick("table4"), {s.sae_id: (s.layer, s.expansion) for s in saes}), "",
             "## Seed stability (mean +- std over ordered pairs of the run's and the seeds' SAEs)", "",
             *stability_md(stability), ""]
    return durable.write_text(path, "\n".join(lines))


def run_seeds(config: Path, n: int, overrides: Sequence[str] = ()) -> Path:
    """Retrain and evaluate with ``n`` seeds; returns the Markdown report. The ``--set`` overrides are
    part of each seed's written config."""
    if n < 1:
        raise ConfigError(f"--seeds {n}: give the number of seeds, >= 1 (e.g. --seeds 3)")
    run = RunConfig.load(config, overrides)
    seeds = [run.run.seed + k for k in range(1, n + 1)]
    per_seed = []
    decoders: dict[str, list[Path]] = defaultdict(list)
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        for sae in cat.rows(SaeRow):
            decoders[sae.sae_id].append(cat.resolve(sae.path) or Path(sae.path))
    for s in seeds:
        seed_config = seed_run(run, s)
        run_seed(seed_config)
        with Catalog.open(RunConfig.load(seed_config).run.catalog_path, read_only=True) as cat:
            per_seed.append([r for r in cat.rows(EvaluationRow) if (r.table_name, r.protocol) in AGGREGATED])
            for sae in cat.rows(SaeRow):
                decoders[sae.sae_id].append(cat.resolve(sae.path) or Path(sae.path))
    rows, stability = aggregate(per_seed), stability_rows(decoders)
    with Catalog.open(run.run.catalog_path) as cat:
        with cat.transaction():
            cat.delete_where("evaluations", protocol="seeds")
            cat.upsert(rows)
            cat.delete_where("sae_metrics", split="seeds")
            cat.upsert(stability)
        saes = cat.rows(SaeRow)
    return write_seeds_report(run.run.out_dir / "seeds" / "README.md", rows, seeds, saes,
                              run.section("steer_eval", SteerEvalConfig).mappings, stability)
