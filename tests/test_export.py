"""``python -m precompute export``: Neuronpedia's import layout checked field by field against the
dataclasses of neuronpedia-utils (tests/data/neuronpedia/db_models.json, which cites them) and its
values against the catalog and the activation store; Parquet holds every catalog table."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ui_fixtures import KINDS, REPO, UiRun, run  # noqa: F401 (run is a fixture)

from ard_core.catalog import Catalog, FeatureRow
from ard_core.config import RunConfig
from ard_core.neuronpedia import NeuronpediaExport, read_jsonl, record_id
from ard_core.sae import TopKSAE
from ard_core.store import ActivationStore
from ard_core.traces import token_seconds
from precompute import handover
from precompute.configs import ScoreConfig
from precompute.export import export_neuronpedia

MODELS = json.loads((Path(__file__).parent / "data" / "neuronpedia" / "db_models.json").read_text())
CREATED = dt.datetime(2025, 1, 2, 3, 4, 5)
TYPES = {"str": str, "int": int, "float": (int, float), "bool": bool, "datetime": str}


@pytest.fixture(scope="module")
def exported(run: UiRun, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the run copy, the export folder) with batches of 50 features, so each SAE has 3."""
    tmp = tmp_path_factory.mktemp("export")
    shutil.copytree(run.root / "run", tmp / "run")
    cfg = RunConfig.from_raw({"run": {"out_dir": str(tmp / "run"), "device": "cpu"}})
    handover.save(cfg, ScoreConfig(splits=["train", "probe"]))
    export_neuronpedia(cfg, tmp / "np", NeuronpediaExport(creator_id="cuser0000000000000000000", batch_size=50),
                       created=CREATED)
    return tmp / "run", tmp / "np"


def _check_type(value: object, spec: str, where: str) -> None:
    """``value`` has the type neuronpedia's dataclass declares (``str|null``, ``list[float]``, ...)."""
    if value is None:
        assert spec.endswith("|null"), f"{where}: None where {spec}"
        return
    spec = spec.removesuffix("|null")
    if spec.startswith("list["):
        assert isinstance(value, list), f"{where}: {value!r} is not a list"
        for v in value:
            _check_type(v, spec[5:-1], where)
        return
    assert isinstance(value, TYPES[spec]) and not (spec != "bool" and isinstance(value, bool)), f"{where}: {value!r}"
    if spec == "datetime":
        dt.datetime.fromisoformat(value)  # type: ignore[arg-type]


def _check_fields(records: list[dict], model: str, where: str) -> None:
    spec = MODELS[model]
    for r in records:
        assert list(r) == list(spec), f"{where}: fields differ from neuronpedia's {model}"
        for name, kind in spec.items():
            _check_type(r[name], kind, f"{where} {model}.{name}")


def test_the_layout_and_every_field(exported: tuple[Path, Path], run: UiRun) -> None:
    _, out = exported
    folders = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*"))
    assert folders == ["tiny-random/1-ard-res-e4", "tiny-random/2-ard-res-e4"]
    for folder in (out / f for f in folders):
        for name, model in (("release", "SourceRelease"), ("model", "Model"), ("sourceset", "SourceSet"),
                            ("source", "Source")):
            records = read_jsonl(folder / f"{name}.jsonl")
            assert len(records) == 1
            _check_fields(records, model, f"{folder.name}/{name}.jsonl")
        for kind, model in (("features", "Feature"), ("activations", "Activation"), ("explanations", "Explanation")):
            files = sorted((folder / kind).iterdir())
            assert [f.name for f in files] == [f"batch-{i}.jsonl.gz" for i in range(3)]  # 128 features / 50
            for f in files:
                _check_fields(read_jsonl(f), model, f"{folder.name}/{kind}/{f.name}")
    source = read_jsonl(out / "tiny-random" / "1-ard-res-e4" / "source.jsonl")[0]
    assert (source["id"], source["setName"], source["modelId"]) == ("1-ard-res-e4", "ard-res-e4", "tiny-random")
    assert source["num_prompts"] == 8 and source["dataset"] == "ui-fixture"  # the probing clips: train + probe
    release = read_jsonl(out / "tiny-random" / "1-ard-res-e4" / "release.jsonl")[0]
    assert (release["name"], release["createdAt"]) == ("ard-tiny-random", "2025-01-02T03:04:05")


def _all(folder: Path, kind: str) -> list[dict]:
    return [r for f in sorted((folder / kind).iterdir()) for r in read_jsonl(f)]


def test_the_values_come_from_the_catalog_and_the_store(exported: tuple[Path, Path], run: UiRun) -> None:
    run_dir, out = exported
    folder = out / "tiny-random" / "1-ard-res-e4"
    sae_id, k = run.ref("hum").split("/")
    feats = {r["index"]: r for r in _all(folder, "features")}
    store = ActivationStore(run_dir / "activations")
    with Catalog.open(run_dir / "catalog.duckdb", read_only=True) as cat:
        rows = cat.rows(FeatureRow, "sae_id = ?", [sae_id])
        assert sorted(feats, key=int) == [str(f.feature) for f in rows]  # every feature, index as a string
        f = next(r for r in rows if r.feature == int(k))
        rec = feats[k]
        assert (rec["maxActApprox"], rec["frac_nonzero"]) == pytest.approx((f.max_act, f.density))
        near = [s for s in cat.similar_features(run.ref("hum")) if s.kind == "decoder"]
        assert rec["topkCosSimIndices"] == [int(s.ref.split("/")[1]) for s in near]
        assert rec["topkCosSimValues"] == pytest.approx([s.similarity for s in near], abs=1e-6)
        assert rec["hookName"] == "blocks.1.hook_resid_post" and rec["layer"] == "1-ard-res-e4"
        assert rec["vectorDefaultSteerStrength"] == 30.0  # its measured steering value
        top = [e for e in cat.feature_page(run.ref("hum")).examples if e.kind == "top"]
        sae = TopKSAE.load(cat.resolve(cat.sae(sae_id).path))
        clips = cat.clips([e.clip_id for e in top])
        acts = [a for a in _all(folder, "activations") if a["index"] == k]
        assert [a["dataSource"] for a in acts] == [e.clip_id for e in top]  # the top clips, by rank
        for a, e in zip(acts, top):
            x = torch.from_numpy(np.asarray(store.clip_tokens(1, e.clip_id), np.float32))
            want = sae.encode_dense(x)[:, int(k)].detach().numpy()
            n, seconds = len(want), clips[e.clip_id].duration_s
            step = token_seconds(n, seconds)  # Qwen2-Audio's 40 ms per token
            assert a["tokens"] == [f"{i * step:.2f}s" for i in range(n)]  # audio tokens by start time
            assert a["values"] == pytest.approx(want.tolist(), abs=1e-5)
            assert (a["maxValue"], a["maxValueTokenIndex"]) == (max(a["values"]), int(np.argmax(a["values"])))
            assert a["id"] == record_id("tiny-random", "1-ard-res-e4", int(k), e.clip_id)
        named = {str(r.feature): r for r in rows if r.name}
        expl = {r["index"]: r for r in _all(folder, "explanations")}
        assert set(expl) == set(named)  # one explanation per named feature
        assert (expl[k]["description"], expl[k]["notes"]) == (KINDS["hum"][1], KINDS["hum"][2])


def test_parquet_holds_every_table_and_the_cli_writes_both(exported: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, _ = exported
    config = tmp_path / "cfg.toml"
    config.write_text(f'[run]\nout_dir = "{run_dir}"\ndevice = "cpu"\n')
    base = [sys.executable, "-m", "precompute", "export", "--config", str(config)]
    out = subprocess.run(base + ["--format", "parquet", "--out", str(tmp_path / "pq")], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    with Catalog.open(run_dir / "catalog.duckdb", read_only=True) as cat:
        tables = cat.tables()
        for name in tables:
            assert pq.read_table(tmp_path / "pq" / f"{name}.parquet").num_rows == cat.query(
                f'SELECT count(*) AS n FROM "{name}"')[0]["n"], name
    assert sorted(p.stem for p in (tmp_path / "pq").glob("*.parquet")) == tables
    out = subprocess.run(base + ["--format", "neuronpedia", "--out", str(tmp_path / "np"), "--sae",
                                 "tiny-random-l2-e4", "--release", "my-release"], cwd=REPO, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert read_jsonl(tmp_path / "np" / "tiny-random" / "2-ard-res-e4" / "release.jsonl")[0]["name"] == "my-release"
    bad = subprocess.run(base + ["--format", "neuronpedia", "--out", str(tmp_path / "x"), "--release", "no spaces"],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "letters, digits and dashes" in bad.stderr
