"""Config loading: validation, unknown keys, defaults, artifact round trips."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from ard_core.config import ConfigError, RunConfig, from_dict, load_json, save_json

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Section:
    a: int = 1
    """an int"""
    b: float = 0.5
    """a float"""


def test_unknown_key_is_an_error_naming_valid_keys():
    with pytest.raises(ConfigError, match=r"\[s\] has unknown key\(s\) \['c'\]; valid keys are \['a', 'b'\]"):
        from_dict(Section, {"c": 3}, where="s")


def test_artifacts_ignore_unknown_keys(tmp_path):
    save_json(Section(a=3, b=2.0), tmp_path / "cfg.json")
    text = (tmp_path / "cfg.json").read_text().replace('"a": 3', '"a": 3, "from_the_future": 1')
    (tmp_path / "cfg.json").write_text(text)
    assert load_json(Section, tmp_path / "cfg.json") == Section(a=3, b=2.0)


def test_int_becomes_float_and_section_defaults():
    run = RunConfig.from_raw({"s": {"b": 2}})
    assert run.section("s", Section) == Section(a=1, b=2.0)
    assert run.section("missing", Section) == Section()
    assert run.run.out_dir == Path("runs/demo")


def test_run_section_validation(tmp_path):
    with pytest.raises(ConfigError, match="device"):
        RunConfig.from_raw({"run": {"device": "tpu"}})
    with pytest.raises(ConfigError, match="name"):
        RunConfig.from_raw({"run": {"name": "a b"}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        RunConfig.load(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        RunConfig.load(tmp_path / "nope.toml")


@pytest.mark.parametrize("name", ["demo.toml", "qwen2-audio-7b.toml"])
def test_shipped_configs_parse_for_every_built_stage(name):
    """Every table in the shipped configs is valid for the stage that owns it."""
    from ard_core.models import ModelConfig
    from precompute.configs import (
        DescribeConfig,
        EvaluateConfig,
        ExtractConfig,
        LensConfig,
        ScoreConfig,
        SteerabilityConfig,
        SteerEvalConfig,
    )

    run = RunConfig.load(REPO / "configs" / name)
    run.section("model", ModelConfig)
    for table, cls in (("score", ScoreConfig), ("describe", DescribeConfig), ("evaluate", EvaluateConfig),
                       ("lens", LensConfig), ("steerability", SteerabilityConfig), ("steer_eval", SteerEvalConfig)):
        assert run.has(table), f"{name} has no [{table}] table"
        run.section(table, cls)
    ext = run.section("extract", ExtractConfig)
    if name.startswith("qwen"):
        assert ext.layers == [5, 16, 26]
        assert run.section("score", ScoreConfig).top_c == 5000 and run.section("score", ScoreConfig).p == 4
        assert run.section("model", ModelConfig).name_or_path == "Qwen/Qwen2-Audio-7B-Instruct"


def test_nested_tables_build_nested_dataclasses():
    from dataclasses import field

    @dataclass
    class Outer:
        inner: Section = field(default_factory=Section)
        """nested"""

    run = RunConfig.from_raw({"o": {"inner": {"a": 5}}})
    assert run.section("o", Outer).inner == Section(a=5, b=0.5)
    with pytest.raises(ConfigError, match=r"\[o.inner\] has unknown key"):
        RunConfig.from_raw({"o": {"inner": {"zz": 1}}}).section("o", Outer)


# ---------------------------------------------------------------- --set overrides


@pytest.mark.parametrize("item, path, value", [
    ("sae.steps=10", ["sae", "steps"], 10),
    ("sae.lr=1e-4", ["sae", "lr"], 1e-4),
    ('run.out_dir="runs/scratch"', ["run", "out_dir"], "runs/scratch"),
    ("run.out_dir=runs/scratch", ["run", "out_dir"], "runs/scratch"),  # the shell ate the quotes
    ("sae.source=stream", ["sae", "source"], "stream"),
    ("describe.summarizer.base_url=http://127.0.0.1:8000/v1", ["describe", "summarizer", "base_url"],
     "http://127.0.0.1:8000/v1"),
    ("sae.layers=[1, 2]", ["sae", "layers"], [1, 2]),
    ("sae.bf16=false", ["sae", "bf16"], False),
    ('dataset.sources=[{loader = "manifest", path = "m.csv"}]', ["dataset", "sources"],
     [{"loader": "manifest", "path": "m.csv"}]),
])
def test_override_values_are_toml(item, path, value):
    from ard_core.config import parse_override

    assert parse_override(item) == (path, value)


@pytest.mark.parametrize("item, message", [
    ("steps=10", "SECTION.KEY=VALUE"),
    ("sae.steps", "SECTION.KEY=VALUE"),
    ("sae.layers=[1, 2", "not TOML"),
    ("sea.steps=10", r"no \[sea\] table"),
    ("dataset.sources.loader=folder", "dataset.sources is not a table"),
])
def test_bad_overrides_say_how_to_write_them(item, message):
    from ard_core.config import apply_overrides

    raw = {"sae": {"steps": 100}, "dataset": {"sources": [{"loader": "manifest"}]}}
    with pytest.raises(ConfigError, match=message):
        apply_overrides(raw, [item])


def test_overrides_apply_before_sections_are_typed(tmp_path):
    from ard_core.sae.train import SaeSection

    path = tmp_path / "c.toml"
    path.write_text('[run]\nname = "x"\n[sae]\nsteps = 100\nwarmup_steps = 2\nk = 8\n[describe.summarizer]\nbackend = "consensus"\n')
    run = RunConfig.load(path, ["sae.steps=10", "run.out_dir=elsewhere", "sae.k=4", "sae.steps=12",
                                'describe.summarizer.model="m"'])
    sae = run.section("sae", SaeSection)
    assert (sae.steps, sae.k) == (12, 4)  # in order: the last one wins
    assert run.run.out_dir == Path("elsewhere") and run.run.name == "x"
    assert run.raw["describe"]["summarizer"] == {"backend": "consensus", "model": "m"}
    assert run.overrides == ("sae.steps=10", "run.out_dir=elsewhere", "sae.k=4", "sae.steps=12",
                             'describe.summarizer.model="m"')
    assert RunConfig.load(path).section("sae", SaeSection).steps == 100  # the file is untouched
    with pytest.raises(ConfigError, match=r"\[sae\] has unknown key\(s\) \['stepz'\]"):
        RunConfig.load(path, ["sae.stepz=1"]).section("sae", SaeSection)
    with pytest.raises(ConfigError, match="source"):
        RunConfig.load(path, ["sae.source=disk"]).section("sae", SaeSection)
