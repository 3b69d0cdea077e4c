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


def test_missing_files_give_one_clean_line(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[run]\nout_dir = "{tmp_path / "run"}"\n[model]\nname_or_path = "{tmp_path / "nomodel"}"\n'
                   f'[extract]\nmanifest = "{tmp_path / "none.csv"}"\n')
    assert main(["score", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "error in stage 'score'" in err and "Traceback" not in err
