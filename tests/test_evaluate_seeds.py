"""``evaluate --seeds N``: the mean and std over retrained runs; ``report`` then renders them.

The aggregation is checked against hand-made rows; the whole path (a tiny pipeline, two seeds,
the report) runs end to end in subprocesses behind the ``slow`` marker.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ard_core.catalog import Catalog, EvaluationRow
from conftest import gender_tone_manifest
from precompute.seeds import aggregate

REPO = Path(__file__).resolve().parents[1]


def test_aggregate_is_the_mean_and_sample_std_over_seeds():
    a = [EvaluationRow("table1", "ard", "s", "f1", 0.2, 0.01, "per_clip"), EvaluationRow("table4", "ard", "s", "ms", 3.0, None)]
    b = [EvaluationRow("table1", "ard", "s", "f1", 0.4, 0.02, "per_clip"), EvaluationRow("table4", "ard", "s", "ms", 5.0, None),
         EvaluationRow("table4", "poly", "s", "ms", 1.0, None)]  # in one seed only: left out
    rows = {(r.table_name, r.method): r for r in aggregate([a, b])}
    assert set(rows) == {("table1", "ard"), ("table4", "ard")}
    f1 = rows[("table1", "ard")]
    assert (f1.value, f1.std, f1.protocol, f1.n) == (pytest.approx(0.3), pytest.approx(np.std([0.2, 0.4], ddof=1)),
                                                     "seeds", 2)
    assert rows[("table4", "ard")].value == pytest.approx(4.0)
    # Table 3: each seed's run chooses its own layer's SAE on probe; the figure is the chosen one's, whichever it is
    steer = aggregate([[EvaluationRow("steering", "ard", "m-l1-e4", "male->female", 0.9, 0.1, "run")],
                       [EvaluationRow("steering", "ard", "m-l4-e8", "male->female", 1.0, 0.0, "run")]])
    assert [(r.sae_id, r.metric, r.n) for r in steer] == [("chosen-on-probe", "male->female", 2)]
    assert steer[0].value == pytest.approx(0.95)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1",
           "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "precompute", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_seeds_retrain_evaluate_and_report(tmp_path, tiny_model_dir, tiny_clap_dir):
    from test_crash_safety import CONFIG

    manifest = gender_tone_manifest(tmp_path, "m.csv")
    (tmp_path / "run.toml").write_text(CONFIG.format(model=tiny_model_dir, clap=tiny_clap_dir, manifest=manifest))
    _run(["run", "--config", "run.toml"], tmp_path)
    _run(["evaluate", "--config", "run.toml", "--seeds", "2"], tmp_path)
    run_dir = tmp_path / "run"
    seeds = [run_dir / "seeds" / f"seed_{s}" for s in (1, 2)]
    for d in seeds:
        assert (d / "activations").is_symlink() and (d / "stages" / "steer-eval.done").is_file()
        assert "seed = " in (d / "config.toml").read_text()
    weights = [next((d / "saes").rglob("sae.safetensors")).read_bytes() for d in seeds]
    assert weights[0] != weights[1]  # retrained with another seed, not copied

    def per_clip_f1(db: Path, protocol: str) -> float:
        with Catalog.open(db, read_only=True) as cat:
            return next(r for r in cat.evaluation_rows("table1", protocol=protocol)
                        if r.method == "ard" and r.metric == "f1")

    each = [per_clip_f1(d / "catalog.duckdb", "per_clip").value for d in seeds]
    mean = per_clip_f1(run_dir / "catalog.duckdb", "seeds")
    assert mean.value == pytest.approx(np.mean(each)) and mean.n == 2
    assert mean.std == pytest.approx(np.std(each, ddof=1))
    with Catalog.open(run_dir / "catalog.duckdb", read_only=True) as cat:
        assert {r.table_name for r in cat.rows(EvaluationRow, "protocol = 'seeds'")} >= {"table1", "table4", "steering"}
    assert "over 2 SAE seeds" in (run_dir / "seeds" / "README.md").read_text()
    with Catalog.open(run_dir / "catalog.duckdb", read_only=True) as cat:
        stability = {r.sae_id: r for r in cat.sae_metrics(split="seeds")}
        ids = [s.sae_id for s in cat.saes()]
    assert sorted(stability) == sorted(ids) and any(i.endswith("-random") for i in ids)
    assert all(0.0 <= r.value <= 1.0 and r.metric == "seed_stability" for r in stability.values())
    # the run's and two seeds' controls: 6 ordered pairs of random directions, which almost never meet
    control = next(r for i, r in stability.items() if i.endswith("-random"))
    assert control.value < 0.05 and control.std is not None

    # a second --seeds finds every stage done and reports the same
    before = (run_dir / "seeds" / "README.md").read_text()
    _run(["evaluate", "--config", "run.toml", "--seeds", "2"], tmp_path)
    assert (run_dir / "seeds" / "README.md").read_text() == before

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- report:begin -->\n<!-- report:end -->\n")
    _run(["report", "--config", "run.toml", "--readme", "README.md", "--figures", "figs"], tmp_path)
    text = readme.read_text()
    assert "### Over 2 SAE seeds" in text and "**Pipeline time**" in text and "Table II" in text
    assert (tmp_path / "figs" / "fig2_formats.png").is_file() and "](figs/fig2_formats.png)" in text
