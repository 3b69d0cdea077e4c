"""``python -m precompute``: lists the stages and reports unbuilt ones clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from precompute.cli import STAGES, main, stage_available

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_every_stage():
    out = subprocess.run([sys.executable, "-m", "precompute", "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for name in STAGES:
        assert name in out.stdout


def test_unbuilt_stage_says_so(capsys, monkeypatch):
    from precompute import cli

    monkeypatch.setitem(cli.STAGES, "score", cli.Stage("precompute.not_a_module", "x", 99))
    assert main(["score"]) == 3
    assert "not built yet (tracked in issue 99)" in capsys.readouterr().err


def test_config_errors_exit_cleanly(tmp_path, capsys):
    bad = tmp_path / "c.toml"
    bad.write_text('[extract]\nlayerz = [1]\n')
    assert main(["extract", "--config", str(bad)]) == 2
    assert "unknown key(s) ['layerz']" in capsys.readouterr().err


def test_extract_is_built():
    assert stage_available("extract")
