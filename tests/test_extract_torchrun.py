"""``torchrun --nproc_per_node 2 -m precompute extract`` (gloo, CPU) writes the same shards and
catalog rows as one process: each rank takes every other shard, rank 0 registers after a barrier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ard_core.catalog import Catalog
from conftest import gender_tone_manifest

REPO = Path(__file__).resolve().parents[1]
TABLES = ("clips", "models", "activation_index")


def _config(folder: Path, model: Path, manifest: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "c.toml"
    cfg.write_text(f"""
[run]
name = "ddp"
out_dir = "run"
device = "cpu"
threads = 1
[model]
name_or_path = "{model}"
[dataset]
kind = "sources"
sources = [{{ loader = "manifest", path = "{manifest}" }}]
[extract]
layers = [0, 2]
batch_size = 3
clips_per_shard = 4
""")
    return cfg


def _run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def _store(root: Path) -> dict[str, object]:
    """Every file of the store, arrays and tables by content."""
    out: dict[str, object] = {"meta.json": json.loads((root / "meta.json").read_text())}
    for f in sorted(root.glob("shard_*/*")):
        key = str(f.relative_to(root))
        if f.suffix == ".npy":
            out[key] = np.load(f).tobytes()
        elif f.suffix == ".parquet":
            out[key] = pq.read_table(f).to_pylist()
        else:
            out[key] = f.read_text()
    return out


def _catalog(path: Path) -> dict[str, list]:
    with Catalog.open(path, read_only=True) as cat:
        return {t: [tuple(r.values()) for r in cat.query(f"SELECT * FROM {t} ORDER BY ALL")] for t in TABLES}


def test_two_ranks_write_what_one_process_writes(tiny_model_dir: Path, tmp_path: Path) -> None:
    manifest = gender_tone_manifest(tmp_path, n=18)  # 5 shards of 4 clips (the last holds 2)
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        _run([sys.executable, "-m", "precompute", "dataset", "--config", str(_config(folder, tiny_model_dir, manifest))],
             folder)
    _run([sys.executable, "-m", "precompute", "extract", "--config", "c.toml"], one)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          "-m", "precompute", "extract", "--config", "c.toml"], two)
    a, b = _store(one / "run" / "activations"), _store(two / "run" / "activations")
    assert sorted(a) == sorted(b) and len([k for k in a if k.endswith("index.parquet")]) == 5
    for key in a:
        assert a[key] == b[key], key
    ca, cb = _catalog(one / "run" / "catalog.duckdb"), _catalog(two / "run" / "catalog.duckdb")
    assert len(ca["clips"]) == 18 and len(ca["activation_index"]) == 36
    assert ca == cb
