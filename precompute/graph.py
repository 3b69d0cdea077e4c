"""The pipeline's stage graph and ``python -m precompute run --profile``.

:data:`NEEDS` lists, for each stage of ``run``, the stages whose outputs it reads directly
(handover configs, catalog tables, the activation store, SAE files); everything further
up comes through them. It is read from the stage modules, and ``tests/test_graph.py``
checks it against every ``handover.load`` / ``handover.manifest`` call, so a stage that
starts reading another stage's output must be declared here.

``--profile`` prints each stage's last recorded wall time (``stages/NAME.time.json``), the
sequential total, and the **critical path**: the longest chain of stages that must run one
after another. The runner still runs the stages one after another; the critical path is what
a runner that overlaps independent stages could reach with enough cores (with ``c`` cores no
faster than total / c either).
"""

from __future__ import annotations

import json
import os
from typing import Mapping, NamedTuple, Sequence

from ard_core.config import RunConfig
from precompute import handover

NEEDS: dict[str, tuple[str, ...]] = {
    "dataset": (),
    "extract": ("dataset",),              # the manifest
    "train-sae": ("extract",),            # the activation store, ExtractConfig
    "score": ("train-sae",),              # SAEs (catalog saes + files), the store, clips
    "similar": ("score",),                # ScoreConfig, the scored features
    "describe": ("score",),               # ScoreConfig, top clips
    "evaluate": ("describe", "score"),    # names, DescribeConfig / Table 1 choice, ScoreConfig
    "quality": ("train-sae",),            # SAEs and their random controls, the store, clips
    "lens": ("dataset",),                 # the manifest and the model only
    "steerability": ("evaluate", "score"),  # EvaluateConfig, named features, ScoreConfig
    "steer-eval": ("steerability", "describe"),  # SteerabilityConfig, DescribeConfig
}


class Profile(NamedTuple):
    seconds: dict[str, float]
    """Stage -> its last recorded wall time (stages that never completed are absent)."""
    total: float
    critical_path: list[str]
    critical_seconds: float


def critical_path(seconds: Mapping[str, float], needs: Mapping[str, Sequence[str]] = NEEDS) -> tuple[list[str], float]:
    """The longest chain through ``needs`` weighted by ``seconds`` (a stage without a time counts 0)."""
    finish: dict[str, float] = {}
    before: dict[str, str | None] = {}
    for stage in needs:  # NEEDS is in pipeline order: every need comes first
        prev = max(needs[stage], key=lambda s: finish[s], default=None)
        finish[stage] = (finish[prev] if prev else 0.0) + seconds.get(stage, 0.0)
        before[stage] = prev
    end = max(finish, key=finish.get)
    path = [end]
    while before[path[-1]]:
        path.append(before[path[-1]])  # type: ignore[arg-type]
    return path[::-1], finish[end]


def recorded_seconds(run: RunConfig) -> dict[str, float]:
    """Stage -> its last completed run's wall time (``stages/NAME.time.json``), in pipeline order."""
    seconds = {}
    for stage in NEEDS:
        path = handover.stage_time(run, stage)
        if path.is_file():
            seconds[stage] = float(json.loads(path.read_text())["seconds"])
    return seconds


def profile(run: RunConfig) -> Profile:
    seconds = recorded_seconds(run)
    path, crit = critical_path(seconds)
    return Profile(seconds, sum(seconds.values()), path, crit)


def format_profile(p: Profile, cores: int | None = None) -> str:
    if not p.seconds:
        return "[profile] no stage times recorded yet: run the pipeline first"
    cores = cores or os.cpu_count() or 1
    on_path = set(p.critical_path)
    lines = ["[profile] stage          wall s   needs"]
    for stage, needs in NEEDS.items():
        t = f"{p.seconds[stage]:7.1f}" if stage in p.seconds else "      -"
        lines.append(f"[profile] {'*' if stage in on_path else ' '}{stage:<13} {t}   {', '.join(needs) or '-'}")
    lines.append(f"[profile] sequential total {p.total:.1f} s; critical path (*) {p.critical_seconds:.1f} s: "
                 f"{' -> '.join(p.critical_path)}")
    lines.append(f"[profile] overlapping independent stages could at best take {max(p.critical_seconds, p.total / cores):.1f} s "
                 f"on {cores} cores (this runner runs them one after another)")
    return "\n".join(lines)
