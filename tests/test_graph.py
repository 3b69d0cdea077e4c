"""The stage graph (precompute/graph.py) and ``run --profile``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from precompute import configs
from precompute.cli import STAGES
from precompute.graph import NEEDS, Profile, critical_path, format_profile
from precompute.run import PIPELINE

REPO = Path(__file__).resolve().parents[1]


def _ancestors(stage: str) -> set[str]:
    out: set[str] = set()
    todo = list(NEEDS[stage])
    while todo:
        s = todo.pop()
        if s not in out:
            out.add(s)
            todo += NEEDS[s]
    return out


def test_the_graph_covers_the_pipeline_in_its_order() -> None:
    assert list(NEEDS) == PIPELINE
    for i, stage in enumerate(PIPELINE):
        assert set(NEEDS[stage]) <= set(PIPELINE[:i]), stage


def test_every_handover_a_stage_reads_comes_from_a_stage_it_needs() -> None:
    """Each ``handover.load(run, XConfig)`` reads what stage XConfig.stage saved; ``handover.manifest`` is the
    dataset stage's. A read from a stage not upstream in NEEDS would let an overlapping runner start too soon."""
    by_class = {name: obj.stage for name, obj in vars(configs).items() if hasattr(obj, "saved_as")}
    by_class["Table1Choice"] = "describe"
    checked = 0
    for stage in PIPELINE:
        source = (REPO / (STAGES[stage].module.replace(".", "/") + ".py")).read_text()
        reads = {by_class[c] for c in re.findall(r"handover\.load\(\s*run,\s*(?:handover\.)?(\w+)\)", source)}
        reads |= {"dataset"} if "handover.manifest(" in source and stage != "dataset" else set()
        reads.discard(stage)
        assert reads <= _ancestors(stage), (stage, reads - _ancestors(stage))
        checked += len(reads)
    assert checked >= 10  # the regex finds the reads (a silent miss would pass everything)


def test_critical_path_is_the_longest_chain() -> None:
    needs = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}
    assert critical_path({"a": 1, "b": 5, "c": 2, "d": 1}, needs) == (["a", "b", "d"], 7)
    assert critical_path({"a": 1, "b": 1, "c": 9, "d": 1}, needs) == (["a", "c", "d"], 11)
    # the demo's recorded times: the lens branch is longer than the whole SAE chain
    demo = {"dataset": 3, "extract": 71, "train-sae": 132, "score": 47, "similar": 35, "describe": 54,
            "evaluate": 18, "quality": 39, "lens": 498, "steerability": 62, "steer-eval": 31}
    path, seconds = critical_path(demo)
    assert path == ["dataset", "lens"] and seconds == pytest.approx(501)


def test_profile_text_names_the_path_and_the_bound() -> None:
    seconds = {"dataset": 1.0, "extract": 10.0, "train-sae": 20.0, "lens": 5.0}
    path, crit = critical_path(seconds)
    text = format_profile(Profile(seconds, sum(seconds.values()), path, crit), cores=2)
    assert "critical path (*) 31.0 s: dataset -> extract -> train-sae" in text
    assert "sequential total 36.0 s" in text and "at best take 31.0 s on 2 cores" in text
    assert "*lens" not in text and "*train-sae" in text
    assert "no stage times" in format_profile(Profile({}, 0.0, [], 0.0))
