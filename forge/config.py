"""``configs/forge.toml``: one table per builder, and ``[forge]`` for what they share.

The asset factory has its own config file so that a pipeline config
(``configs/demo.toml``) carries nothing about how the shipped assets were made:
the pipeline reads what the builders wrote (``build.json``, the model folders),
never their settings. It is read with :meth:`ard_core.config.RunConfig.load`
like any config (its ``[run]`` table is unused). Tables: ``[forge]`` (:class:`ForgeSection`), ``[corpus]``
(:class:`forge.corpus.config.CorpusConfig`), ``[tiny_audiollm]`` and ``[tiny_clap]``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ard_core.config import ConfigError

FORGE_CONFIG = Path("configs/forge.toml")


@dataclass
class ForgeSection:
    """The ``[forge]`` table: settings every builder shares."""

    seed: int = 0
    """Seed of the tiny models' training (the corpus has its own, ``[corpus.build].seed``)."""
    threads: int | None = None
    """CPU threads for torch (None = torch's default); the tiny models train fastest on 1 when
    the CPU is shared."""

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ConfigError("[forge].threads must be >= 1 (or left out for torch's default)")


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--config`` option every verb takes."""
    parser.add_argument("--config", type=Path, default=FORGE_CONFIG,
                        help=f"asset-factory config TOML (default {FORGE_CONFIG})")
