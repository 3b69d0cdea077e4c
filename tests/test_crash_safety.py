"""Crash-safe precompute: ``kill -9`` inside any stage, then ``run`` again, ends where an uninterrupted run ends.

Each case runs ``python -m precompute run`` on a tiny config (24 synthetic clips, the random
tiny Qwen2-Audio and CLAP of conftest, two 40-step SAEs) in a fresh directory with
``ARD_CRASH_AT=STAGE:POINT[@N]`` (see ``ard_core.durable``), so that the process SIGKILLs
itself at that instant. The test checks what the kill left (the catalog opens, holds no
partial rows, no later stage is marked done, every file under a final name is whole), runs
the pipeline again to completion and compares content hashes of every catalog table and
every artifact file with those of an uninterrupted run.

Each subprocess gets a different PYTHONHASHSEED, so a result that depends on set order
(string hashes are randomised per process) shows up as a difference too.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from ard_core.catalog import Catalog
from ard_core.durable import CRASH_ENV, TMP_SUFFIX, atomic_path, write_text
from conftest import gender_tone_manifest
from precompute.run import PIPELINE

REPO = Path(__file__).resolve().parents[1]

# Run-time figures, not results: compared with these keys dropped.
TIMING_KEYS = {"train.json": ("tokens_per_s_last_run",), "train_log.jsonl": ("tokens_per_s",)}
# Appended while their stage runs, so a prefix of the final file right after a kill (by design).
PROGRESS_FILES = {"train_log.jsonl"}

CONFIG = """\
[run]
name = "crash"
out_dir = "run"            # relative: every case writes the same paths into the catalog
seed = 0
device = "cpu"
threads = 1

[model]
name_or_path = "{model}"

[dataset]
kind = "sources"
sources = [{{ loader = "manifest", path = "{manifest}" }}]

[extract]
layers = [1, 2]
batch_size = 4
clips_per_shard = 8        # 3 shards
store_dtype = "float32"

[sae]
layers = [1, 2]
expansions = [2]           # d_sae = 64
k = 4
batch_size = 64
steps = 40
lr = 1e-3
warmup_steps = 5
checkpoint_every = 10      # a multiple of log_every, so a resumed run logs the same windows
log_every = 5
eval_tokens = 512
init_sample_tokens = 512
impl = "sparse"          # "auto" times both paths: its pick (and so the weights) may differ run to run
threads = 1
random_controls = [[2, 2]] # a frozen random SAE, built after the grid, scored and measured like the others

[score]
p = 2
top_c = 4
random_seeds = 2
batch_clips = 5
clap_model = "{clap}"

[describe]
caption_max_new_tokens = 4

[quality]
clips_per_track = 6
caption_clips = 6
batch_size = 4
bootstrap = 50

[lens]
tracks = ["gender"]
batch_size = 5
enrich_gap = 2
enrich_lambdas = [0.0, 1.0]
random_seeds = 2

[steerability]
pool_clips = 6
clips_per_target = 3
screen_clips = 2
finalists = 1
multiples = [4.0]

[steer_eval]
mappings = ["male->female", "female->male"]
split = "train"
"""

D_SAE = 64
_hash_seeds = itertools.count(1)


class Snapshot(NamedTuple):
    tables: dict[str, str]  # table -> hash of its sorted rows
    counts: dict[str, int]
    files: dict[str, str]  # path under the run dir -> content hash


def catalog_snapshot(db: Path) -> tuple[dict[str, str], dict[str, int]]:
    """Hash of every table's rows, in sorted order (DuckDB's row order is not part of the result)."""
    tables, counts = {}, {}
    with Catalog.open(db, read_only=True) as cat:
        for t in cat.tables():
            rows = sorted(repr(tuple(r.values())) for r in cat.query(f'SELECT * FROM "{t}"'))
            tables[t] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
            counts[t] = len(rows)
    return tables, counts


def file_digest(path: Path) -> str:
    drop = TIMING_KEYS.get(path.name) or (("seconds",) if path.name.endswith(".time.json") else None)
    if drop is None:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    if path.suffix == ".jsonl":
        rows = [json.loads(l) for l in path.read_text().splitlines()]
    else:
        rows = [json.loads(path.read_text())]
    rows = [{k: v for k, v in r.items() if k not in drop} for r in rows]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def file_snapshot(run_dir: Path) -> dict[str, str]:
    """Every artifact but the catalog's own files (compared by content above) and temporaries."""
    return {str(p.relative_to(run_dir)): file_digest(p) for p in sorted(run_dir.rglob("*"))
            if p.is_file() and not p.name.startswith("catalog.duckdb") and not p.name.endswith(TMP_SUFFIX)}


def snapshot(run_dir: Path) -> Snapshot:
    tables, counts = catalog_snapshot(run_dir / "catalog.duckdb")
    return Snapshot(tables, counts, file_snapshot(run_dir))


def run_pipeline(case_dir: Path, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TQDM_DISABLE="1",
               PYTHONHASHSEED=str(next(_hash_seeds)), PYTHONPATH=str(REPO))
    if crash_at:
        env[CRASH_ENV] = crash_at
    return subprocess.run([sys.executable, "-m", "precompute", "run", "--config", "run.toml"], cwd=case_dir,
                          env=env, capture_output=True, text=True, timeout=600)


def output(proc: subprocess.CompletedProcess) -> str:
    return f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def config_text(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_clap_dir: Path) -> str:
    manifest = gender_tone_manifest(tmp_path_factory.mktemp("crash-inputs"))
    return CONFIG.format(model=tiny_model_dir, clap=tiny_clap_dir, manifest=manifest)


def new_case(root: Path, config_text: str) -> Path:
    root.mkdir(parents=True)
    (root / "run.toml").write_text(config_text)  # the same bytes everywhere: the same done-marker digest
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, config_text: str) -> Snapshot:
    """An uninterrupted run."""
    case = new_case(tmp_path_factory.mktemp("crash") / "uninterrupted", config_text)
    proc = run_pipeline(case)
    assert proc.returncode == 0, output(proc)
    snap = snapshot(case / "run")
    assert snap.counts["features"] == 3 * D_SAE and snap.counts["method_concepts"] > 0  # every stage wrote
    assert snap.counts["saes"] == 3 and snap.counts["sae_metrics"] > 0
    assert snap.counts["steering_results"] > 0 and snap.counts["lens_summary"] > 0
    return snap


class Case(NamedTuple):
    crash_at: str
    rows_after_kill: dict[str, int]  # catalog row counts the kill must leave (transactions all or nothing)


CASES = [
    Case("dataset:write:summary.json", {}),                         # manifest written, summary not yet renamed
    Case("extract:shard@1", {}),                                    # 1 of 3 activation shards committed
    Case("extract:commit", {"clips": 0, "activation_index": 0}),    # registering, before COMMIT
    Case("train-sae:checkpoint@4", {"saes": 1}),                    # first SAE done, second at step 10 of 40
    Case("train-sae:write:train.json@2", {"saes": 1}),              # second SAE's weights saved, not marked finished
    Case("score:commit@2", {"features": D_SAE}),                    # first SAE scored, second mid-transaction
    Case("describe:commit", {"method_concepts": 0}),                # captions cached, concepts not committed
    Case("evaluate:write:README.md", {}),                           # tables committed, report not yet renamed
    Case("quality:commit", {"sae_metrics": 0}),                      # figures measured, not committed
    Case("lens:write:fig3_correct_incorrect.png", {}),              # one figure of four written
    Case("steerability:commit", {"steerability": 0}),               # rows measured, replacing them not committed
    Case("steer-eval:marker", {}),                                  # everything written, no done marker yet
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.crash_at for c in CASES])
def test_kill_then_rerun_equals_uninterrupted_run(tmp_path: Path, config_text: str, reference: Snapshot,
                                                  case: Case) -> None:
    stage = case.crash_at.split(":")[0]
    run_dir = new_case(tmp_path / "case", config_text) / "run"

    killed = run_pipeline(run_dir.parent, crash_at=case.crash_at)
    assert killed.returncode == -signal.SIGKILL, output(killed)
    assert f"{CRASH_ENV}={case.crash_at}: SIGKILL" in killed.stderr  # killed where the case says, not elsewhere

    # what the kill left: done markers only for the stages before, a catalog that opens and
    # holds whole transactions, and under every final file name a whole file
    marked = sorted(p.stem for p in (run_dir / "stages").glob("*.done"))
    assert marked == sorted(PIPELINE[: PIPELINE.index(stage)])
    if (run_dir / "catalog.duckdb").exists():
        _, counts = catalog_snapshot(run_dir / "catalog.duckdb")
        for table, n in case.rows_after_kill.items():
            assert counts[table] == n, (table, counts[table])
    else:
        assert not case.rows_after_kill
    left = file_snapshot(run_dir)
    partial = {f for f, h in left.items()
               if f in reference.files and h != reference.files[f] and Path(f).name not in PROGRESS_FILES}
    assert not partial, f"files that differ from the uninterrupted run's right after the kill: {sorted(partial)}"

    resumed = run_pipeline(run_dir.parent)
    assert resumed.returncode == 0, output(resumed)
    assert f"[run] {stage}: starting" in resumed.stdout  # the killed stage ran again
    after = snapshot(run_dir)
    assert after.counts == reference.counts
    assert after.tables == reference.tables, [t for t in after.tables if after.tables[t] != reference.tables.get(t)]
    assert after.files.keys() == reference.files.keys()
    assert after.files == reference.files, [f for f in after.files if after.files[f] != reference.files[f]]
    assert not [p for p in run_dir.rglob("*" + TMP_SUFFIX)], "a temporary file outlived the re-run"


# -- the pieces, fast ---------------------------------------------------------------------------
def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = write_text(tmp_path / "report.md", "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("writer died")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def _python(code: str, crash_at: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, CRASH_ENV: crash_at, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_crash_point_kills_at_the_nth_hit_of_the_named_stage_and_point(tmp_path: Path) -> None:
    code = ("from ard_core import durable\n"
            "with durable.stage('other'):\n    durable.crash_point('p')\n"
            "with durable.stage('s'):\n"
            "    for i in range(3):\n        durable.crash_point('q'); durable.crash_point('p'); print(i, flush=True)\n")
    proc = _python(code, "s:p@2", tmp_path)
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout.split() == ["0"]
    assert _python(code, "s:nowhere", tmp_path).returncode == 0


def test_killed_catalog_transaction_leaves_the_old_rows(tmp_path: Path) -> None:
    """DuckDB drops an uncommitted transaction when the file is reopened after a kill."""
    code = ("from ard_core import durable\nfrom ard_core.catalog import Catalog, ModelRow\n"
            "with Catalog.open('c.duckdb') as cat:\n"
            "    cat.upsert([ModelRow(f'm{i}', 'old', 'f', 1, 2) for i in range(3)])\n"
            "    with durable.stage('s'), cat.transaction():\n"
            "        cat.delete_where('models')\n"
            "        cat.upsert([ModelRow('m0', 'new', 'f', 1, 2)])\n")
    proc = _python(code, "s:commit", tmp_path)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with Catalog.open(tmp_path / "c.duckdb") as cat:
        assert [r["path"] for r in cat.query("SELECT path FROM models ORDER BY model")] == ["old"] * 3


def test_a_stage_that_runs_again_unmarks_itself_and_every_later_stage(tmp_path: Path, monkeypatch) -> None:
    """A killed ``--from score`` must not leave describe..steer-eval marked done from the earlier run."""
    from precompute import run as run_mod

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[run]\nout_dir = "{tmp_path / "run"}"\n')
    digest = run_mod.config_hash(cfg)
    stages = tmp_path / "run" / "stages"
    stages.mkdir(parents=True)
    for s in PIPELINE:
        (stages / f"{s}.done").write_text(digest + "\n")

    def killed_in_score(stage: str, config: Path, overrides: tuple = ()) -> int:
        if stage == "score":
            raise KeyboardInterrupt("killed")
        return 0

    monkeypatch.setattr(run_mod, "run_stage", killed_in_score)
    with pytest.raises(KeyboardInterrupt):
        run_mod.run_all(cfg, start="score")
    assert sorted(p.stem for p in stages.glob("*.done")) == sorted(PIPELINE[: PIPELINE.index("score")])

    ran: list[str] = []
    monkeypatch.setattr(run_mod, "run_stage", lambda stage, config, overrides=(): ran.append(stage) or 0)
    run_mod.run_all(cfg)
    assert ran == PIPELINE[PIPELINE.index("score"):]
