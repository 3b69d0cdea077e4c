"""``python -m precompute``: lists the pipeline stages, reports errors in one line, and its stage
modules hand over through their outputs, never by importing each other."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from precompute.cli import STAGES, main
from precompute.run import PIPELINE

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_the_pipeline_stages_and_the_tools():
    out = subprocess.run([sys.executable, "-m", "precompute", "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    listed = re.findall(r"^    (\S+)", out.stdout, flags=re.M)  # one "    NAME  help" line per stage
    assert listed == [*PIPELINE, "steer", "run", "report", "plan", "export"]
    assert set(STAGES) == set(listed)
    assert "train-tiny" not in out.stdout and "not built" not in out.stdout


def test_config_errors_exit_cleanly(tmp_path, capsys):
    bad = tmp_path / "c.toml"
    bad.write_text('[extract]\nlayerz = [1]\n')
    assert main(["extract", "--config", str(bad)]) == 2
    assert "unknown key(s) ['layerz']" in capsys.readouterr().err


def test_missing_files_give_one_clean_line(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[run]\nout_dir = "{tmp_path / "run"}"\n[model]\nname_or_path = "{tmp_path / "nomodel"}"\n')
    assert main(["score", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "error in stage 'score'" in err and "Traceback" not in err


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}  # from precompute import score
    return names


def test_no_stage_module_imports_another():
    stage_modules = {s.module for s in STAGES.values()}
    assert len(stage_modules) == len(STAGES) >= 10
    offenders = {}
    for module in sorted(stage_modules):
        path = REPO / (module.replace(".", "/") + ".py")
        others = _imported_modules(path) & (stage_modules - {module})
        if others:
            offenders[module] = sorted(others)
    assert not offenders, f"stage modules importing other stage modules: {offenders}"


def test_the_import_check_sees_imports_inside_functions(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from precompute import score\n    import precompute.describe as d\n")
    assert {"precompute.score", "precompute.describe"} <= _imported_modules(src)


def test_run_reruns_a_stage_when_an_override_changes_and_saves_the_overridden_value(tmp_path, monkeypatch, capsys):
    import json

    import precompute.run as run_module
    from ard_core.datasets import load_manifest
    from conftest import gender_tone_manifest

    small, large = gender_tone_manifest(tmp_path, "small.csv", n=6), gender_tone_manifest(tmp_path, "large.csv", n=9)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[run]\nout_dir = "{tmp_path / "run"}"\n[dataset]\nkind = "sources"\n'
                   f'sources = [{{ loader = "manifest", path = "{small}" }}]\n')
    monkeypatch.setattr(run_module, "PIPELINE", ["dataset"])
    override = f'dataset.sources=[{{ loader = "manifest", path = "{large}" }}]'
    manifest = tmp_path / "run" / "dataset" / "manifest.csv"

    assert main(["run", "--config", str(cfg)]) == 0 and len(load_manifest(manifest)) == 6
    assert main(["run", "--config", str(cfg)]) == 0
    assert "dataset: already complete" in capsys.readouterr().out
    assert main(["run", "--config", str(cfg), "--set", override]) == 0
    assert "dataset: starting" in capsys.readouterr().out and len(load_manifest(manifest)) == 9
    saved = json.loads((tmp_path / "run" / "dataset" / "cfg.json").read_text())
    assert saved["sources"] == [{"loader": "manifest", "path": str(large)}]
    assert main(["run", "--config", str(cfg), "--set", override]) == 0
    assert "dataset: already complete" in capsys.readouterr().out
    assert main(["run", "--config", str(cfg)]) == 0  # dropping the override is a change too
    assert "dataset: starting" in capsys.readouterr().out and len(load_manifest(manifest)) == 6
