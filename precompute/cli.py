"""``python -m precompute``: parse arguments and dispatch to a stage module.

Every stage lives in its own module under ``precompute/`` and defines
``add_arguments(parser)`` and ``main(args) -> int``. The CLI only knows the
table below; a stage whose module is not written yet is listed, and running it
says so instead of failing with an import error.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from typing import NamedTuple


class Stage(NamedTuple):
    module: str
    help: str
    issue: int


# Order matters: it is the order of ``run``.
STAGES: dict[str, Stage] = {
    "dataset": Stage("precompute.dataset", "build the embedded mini corpus and its manifest", 3),
    "extract": Stage("precompute.extract", "capture residual-stream activations into the activation store", 2),
    "train-sae": Stage("precompute.train_sae", "train TopK sparse autoencoders on stored activations", 5),
    "score": Stage("precompute.score", "representativeness scores, top/bottom clips, monosemanticity", 6),
    "describe": Stage("precompute.describe", "caption top clips and name each feature's concept", 6),
    "evaluate": Stage("precompute.evaluate", "Hungarian-matched P/R/F1/mAP tables against references", 6),
    "lens": Stage("precompute.lens", "AudioLens logit-lens analyses and layer enrichment", 7),
    "steer": Stage("precompute.steer", "steer one clip by clamping SAE features and print both answers", 8),
    "steer-eval": Stage("precompute.steer_eval", "steering sensitivity evaluation (Table 3)", 8),
    "run": Stage("precompute.run", "run every built stage in order, resuming finished ones", 2),
}


def add_config_argument(p: argparse.ArgumentParser) -> None:
    """The ``--config`` option every stage takes."""
    p.add_argument("--config", required=True, help="run config TOML (e.g. configs/demo.toml)")


def stage_available(name: str) -> bool:
    return importlib.util.find_spec(STAGES[name].module) is not None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m precompute",
        description="AR&D / AudioLens precompute pipeline. Stages write into the run "
        "directory and the DuckDB catalog named by the config's [run] table.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="stage", metavar="STAGE")
    for name, stage in STAGES.items():
        built = stage_available(name)
        helptext = stage.help if built else f"{stage.help} [not built yet: issue {stage.issue}]"
        module = None
        if built:
            try:
                module = importlib.import_module(stage.module)
            except Exception as exc:  # one broken stage must not hide the others
                helptext = f"{stage.help} [cannot be imported: {type(exc).__name__}: {exc}]"
        p = sub.add_parser(name, help=helptext, description=helptext)
        if module is not None:
            module.add_arguments(p)
        else:
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.stage:
        parser.print_help()
        return 2
    stage = STAGES[args.stage]
    if not stage_available(args.stage):
        print(
            f"stage '{args.stage}' is not built yet (tracked in issue {stage.issue}); "
            f"built stages: {', '.join(n for n in STAGES if stage_available(n))}",
            file=sys.stderr,
        )
        return 3
    module = importlib.import_module(stage.module)
    from ard_core.catalog import CatalogError
    from ard_core.config import ConfigError, RunConfig, apply_threads

    try:
        if getattr(args, "config", None):
            apply_threads(RunConfig.load(args.config).run.threads)
        return int(module.main(args) or 0)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except (CatalogError, OSError) as exc:  # missing model/catalog/store files: say which, no traceback
        if args.verbose:
            raise
        print(f"error in stage '{args.stage}': {exc} (run with -v for the traceback)", file=sys.stderr)
        return 1
