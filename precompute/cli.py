"""``python -m precompute``: parse arguments and dispatch to a stage module.

Every stage lives in its own module under ``precompute/`` and defines
``add_arguments(parser)`` and ``main(args) -> int``. The CLI only knows the
table below. Stage modules import :func:`add_config_argument` from here and never
each other; what one stage hands the next is in :mod:`precompute.handover`.
The shipped tiny models are built by ``python -m forge``, not here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import NamedTuple

from ard_core.config import RunConfig


class Stage(NamedTuple):
    module: str
    """Module defining add_arguments(parser) and main(args)."""
    help: str
    """One line for ``--help``."""


# The pipeline in the order ``run`` runs it (precompute.run.PIPELINE), then the tools.
STAGES: dict[str, Stage] = {
    "dataset": Stage("precompute.dataset", "verify the mini corpus (or load real datasets) into the run's manifest"),
    "extract": Stage("precompute.extract", "capture residual-stream activations into the activation store"),
    "train-sae": Stage("precompute.train_sae", "train TopK sparse autoencoders on stored activations"),
    "score": Stage("precompute.score", "representativeness scores, top/bottom clips, monosemanticity"),
    "similar": Stage("precompute.similar", "each feature's nearest features: by decoder cosine in its SAE, by "
                                           "correlated clip means in other layers' SAEs"),
    "describe": Stage("precompute.describe", "caption top clips and name each feature's concept"),
    "evaluate": Stage("precompute.evaluate", "Hungarian-matched P/R/F1/mAP tables against references"),
    "quality": Stage("precompute.quality", "SAE quality on held-out clips: spliced-in fidelity, explained "
                                           "variance, sparse probes, each beside a random-SAE control"),
    "lens": Stage("precompute.lens", "AudioLens logit-lens analyses and layer enrichment"),
    "steerability": Stage("precompute.steerability", "the features that steer each track's answer to a target"),
    "steer-eval": Stage("precompute.steer_eval", "steering sensitivity (Table 3), chosen on probe, judged on test"),
    "steer": Stage("precompute.steer", "steer one clip by clamping SAE features and print both answers"),
    "run": Stage("precompute.run", "run every pipeline stage in order, resuming finished ones"),
    "report": Stage("precompute.report", "write the README's measured section from the run (tables, figures, commit)"),
    "plan": Stage("precompute.plan", "check a config against the model's shapes and print the disk, memory and "
                                     "GPU hours it will need, before any weights are loaded"),
    "export": Stage("precompute.export", "write the catalog in Neuronpedia's import layout or as Parquet files"),
}


def add_config_argument(p: argparse.ArgumentParser) -> None:
    """The ``--config`` and ``--set`` options every stage takes."""
    p.add_argument("--config", required=True, help="run config TOML (e.g. configs/demo.toml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, in TOML syntax (repeatable), e.g. --set sae.steps=10 "
                        "--set run.out_dir='\"runs/scratch\"'; applied before the sections are read and "
                        "recorded in the saved config copies")


def load_config(args: argparse.Namespace) -> RunConfig:
    """The run config named by ``--config`` with the ``--set`` overrides applied."""
    return RunConfig.load(args.config, overrides=getattr(args, "overrides", None) or ())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m precompute",
        description="AR&D / AudioLens precompute pipeline. Stages write into the run "
        "directory and the DuckDB catalog named by the config's [run] table.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="stage", metavar="STAGE")
    for name, stage in STAGES.items():
        module = importlib.import_module(stage.module)
        p = sub.add_parser(name, help=stage.help, description=stage.help)
        module.add_arguments(p)
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
    module = importlib.import_module(STAGES[args.stage].module)
    from ard_core.catalog import CatalogError
    from ard_core.config import ConfigError, apply_threads
    from ard_core.datasets.manifest import ManifestError
    from ard_core.datasets.metadata import DatasetFormatError

    try:
        if getattr(args, "config", None):
            apply_threads(load_config(args).run.threads)
        return int(module.main(args) or 0)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    # missing model/catalog/store files, a dataset not in its publisher's layout: say which, no traceback
    except (CatalogError, OSError, DatasetFormatError, ManifestError) as exc:
        if args.verbose:
            raise
        print(f"error in stage '{args.stage}': {exc} (run with -v for the traceback)", file=sys.stderr)
        return 1
