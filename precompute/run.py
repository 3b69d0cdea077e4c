"""Stage ``run``: every pipeline stage in order, resumable stage by stage.

A stage that finishes writes ``OUT_DIR/stages/NAME.time.json`` (its wall time, for
``report``) and then ``OUT_DIR/stages/NAME.done`` holding the hash of the config file and
its ``--set`` overrides; the next ``run`` with the same config and overrides skips it
(``--force`` redoes everything, ``--from STAGE`` redoes from STAGE on). Inside a stage,
resumption is the stage's own business (extraction skips finished shards, SAE training
resumes from its checkpoint, ...).

Crash safety: after ``kill -9`` at any instant, ``run`` again ends with the catalog and
files an uninterrupted run makes. Stages write files atomically (``ard_core.durable``) and
replace their catalog rows in transactions; a marker is written last, after the
stage's files are synced and its rows committed; and a stage about to run first
removes its own marker and those of every later stage, so a marker never vouches
for outputs made from inputs that have since changed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import time
from pathlib import Path
from typing import Sequence

from ard_core import durable
from ard_core.config import RunConfig
from precompute import handover
from precompute.cli import STAGES, add_config_argument

log = logging.getLogger(__name__)

# Stages run by ``run``, in order; each reads what the ones before it wrote (precompute.handover).
# ``steer`` needs an audio file, so it is not part of it.
PIPELINE = ["dataset", "extract", "train-sae", "score", "similar", "describe", "evaluate", "quality", "lens",
            "steerability", "steer-eval"]


def config_hash(path: Path, overrides: Sequence[str] = ()) -> str:
    """Hash of the config file's bytes and the ``--set`` overrides: changing either reruns the stages."""
    h = hashlib.sha256(Path(path).read_bytes())
    for item in overrides:
        h.update(b"\0--set\0" + item.encode())
    return h.hexdigest()[:16]


def marker(run: RunConfig, stage: str) -> Path:
    return run.run.out_dir / "stages" / f"{stage}.done"


def invalidate_from(run: RunConfig, stage: str) -> None:
    """Remove the done markers of ``stage`` and every later stage before ``stage`` runs.

    A stage that runs again may change what later stages read, and a run killed while
    it runs must not leave a later stage marked done from an earlier run (e.g. a killed
    ``--from score`` followed by a plain ``run`` would otherwise skip describe on half-new
    inputs).
    """
    later = PIPELINE[PIPELINE.index(stage):]
    for name in later:
        marker(run, name).unlink(missing_ok=True)
    if marker(run, stage).parent.is_dir():
        durable.fsync_dir(marker(run, stage).parent)


def run_stage(stage: str, config: Path, overrides: Sequence[str] = ()) -> int:
    """Run one stage exactly as ``python -m precompute STAGE --config CONFIG [--set ...]`` would."""
    module = importlib.import_module(STAGES[stage].module)
    parser = argparse.ArgumentParser(prog=f"precompute {stage}")
    module.add_arguments(parser)
    argv = ["--config", str(config)] + [a for item in overrides for a in ("--set", item)]
    return int(module.main(parser.parse_args(argv)) or 0)


def run_all(config: Path, force: bool = False, start: str | None = None,
            overrides: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Returns (stage, outcome) pairs; outcome in {done, skipped, failed}."""
    run = RunConfig.load(config, overrides)
    digest = config_hash(config, overrides)
    outcomes: list[tuple[str, str]] = []
    redo = force
    for stage in PIPELINE:
        if start is not None and stage == start:
            redo = True
        done = marker(run, stage)
        if not redo and done.is_file() and done.read_text().strip() == digest:
            print(f"[run] {stage}: already complete for this config and --set overrides; skipped (use --force or --from {stage})")
            outcomes.append((stage, "skipped"))
            continue
        print(f"[run] {stage}: starting")
        invalidate_from(run, stage)
        t0 = time.perf_counter()
        with durable.stage(stage):
            durable.crash_point("start")
            try:
                rc = run_stage(stage, config, overrides)
            except Exception as exc:  # report which stage broke; the CLI prints the message cleanly
                print(f"[run] {stage}: failed: {type(exc).__name__}: {exc}")
                raise
            if rc != 0:
                print(f"[run] {stage}: failed with exit code {rc}; later stages not run")
                outcomes.append((stage, "failed"))
                return outcomes
            seconds = time.perf_counter() - t0
            timing = {"stage": stage, "seconds": round(seconds, 1)}
            durable.write_text(handover.stage_time(run, stage), json.dumps(timing) + "\n")
            durable.crash_point("marker")
            # last, and only now: every file the stage wrote is synced and its catalog rows committed
            durable.write_text(done, digest + "\n")
        print(f"[run] {stage}: done in {seconds:.1f} s")
        outcomes.append((stage, "done"))
    return outcomes


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)
    p.add_argument("--force", action="store_true", help="redo every stage, even completed ones")
    p.add_argument("--from", dest="start", choices=PIPELINE, help="redo from this stage on")
    p.add_argument("--profile", action="store_true",
                   help="at the end, print each stage's wall time, what it needs and the critical path")


def main(args: argparse.Namespace) -> int:
    outcomes = run_all(Path(args.config), force=args.force, start=args.start, overrides=args.overrides)
    print("[run] summary: " + ", ".join(f"{s}={o}" for s, o in outcomes))
    if args.profile:
        from precompute.graph import format_profile, profile

        print(format_profile(profile(RunConfig.load(Path(args.config), args.overrides))))
    return 1 if any(o == "failed" for _, o in outcomes) else 0
