"""What one stage leaves for the next, besides its catalog rows.

A stage reads what the stages before it wrote, never their config sections: change
``[score].top_c`` after scoring and describe still names the top C that score kept.
The files handed over, all under ``[run].out_dir``:

- ``dataset/manifest.csv``: the clips, from the dataset stage (read by extract and lens);
- each stage's saved config copy (``ScoreConfig.saved_as``, ...; :mod:`precompute.configs`);
- ``describe/table1.json``: the SAE whose baselines describe named for Table 1
  (:class:`Table1Choice`), which evaluate then scores;
- ``stages/NAME.time.json``: how long each stage's last completed run took (written by ``run``,
  read by ``report``; :func:`stage_time`).

Each reader raises :class:`StageOutputMissing`, naming the stage to run first, when the
file is not there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence, TypeVar

from ard_core.catalog import SaeRow
from ard_core.config import ConfigError, RunConfig, load_json, save_json

T = TypeVar("T")

MANIFEST = "dataset/manifest.csv"


class StageOutputMissing(FileNotFoundError):
    """A stage's input is missing because the stage that writes it has not run for this out_dir."""


@dataclass
class Table1Choice:
    """The SAE describe chose for Table 1 (``[describe].table1_sae``, or the deepest layer's
    expansion nearest 8); evaluate scores the baselines describe named on it."""

    stage: ClassVar[str] = "describe"
    saved_as: ClassVar[str] = "describe/table1.json"

    sae_id: str
    """Id of the Table 1 SAE in the catalog's ``saes`` table."""


def stage_time(run: RunConfig, stage: str) -> Path:
    """``OUT_DIR/stages/STAGE.time.json`` ({"stage", "seconds"}): the stage's last completed run under ``run``."""
    return run.run.out_dir / "stages" / f"{stage}.time.json"


def _missing(run: RunConfig, stage: str, path: Path, what: str) -> StageOutputMissing:
    config = run.path if run.path is not None else "CONFIG"
    return StageOutputMissing(f"{what} {path} does not exist; run `python -m precompute {stage} --config {config}` "
                              "first")


def manifest(run: RunConfig) -> Path:
    """The dataset stage's manifest of this run (``<out_dir>/dataset/manifest.csv``)."""
    path = run.run.out_dir / MANIFEST
    if not path.is_file():
        raise _missing(run, "dataset", path, "the dataset stage's manifest")
    return path


def save(run: RunConfig, obj: object) -> Path:
    """Write ``obj`` (a config of :mod:`precompute.configs` or :class:`Table1Choice`) to its ``saved_as``."""
    path = run.run.out_dir / type(obj).saved_as  # type: ignore[attr-defined]
    save_json(obj, path)
    return path


def load(run: RunConfig, cls: type[T]) -> T:
    """What the stage ``cls.stage`` saved with :func:`save` in this run's out_dir."""
    path = run.run.out_dir / cls.saved_as  # type: ignore[attr-defined]
    if not path.is_file():
        raise _missing(run, cls.stage, path, f"the {cls.stage} stage's {cls.__name__}")  # type: ignore[attr-defined]
    return load_json(cls, path)


def table1(run: RunConfig, saes: Sequence[SaeRow]) -> SaeRow:
    """The catalog row of the SAE describe chose for Table 1 (its :class:`Table1Choice`)."""
    chosen = load(run, Table1Choice).sae_id
    for s in saes:
        if s.sae_id == chosen:
            return s
    raise ConfigError(f"describe named Table 1 on SAE {chosen!r} ({run.run.out_dir / Table1Choice.saved_as}), which "
                      f"is not in the catalog now (have {[s.sae_id for s in saes]}); run the describe stage again")
