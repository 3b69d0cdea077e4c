"""The asset factory's surface: its CLI, its config, and the model cards it writes from templates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ard_core.config import ConfigError, RunConfig
from forge.cards import render_card
from forge.config import ForgeSection
from forge.tiny_audiollm import card as audiollm_card
from forge.tiny_audiollm.config import TinyAudioLLMConfig
from forge.tiny_clap import card as clap_card
from forge.tiny_clap.config import TinyClapConfig

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "assets" / "models"
VERBS = ("corpus", "tiny-audiollm", "tiny-clap", "eval")


def _help(module: str) -> str:
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                         check=True)
    return out.stdout


def test_forge_help_lists_the_builders_and_precompute_help_does_not() -> None:
    forge_help, pipeline_help = _help("forge"), _help("precompute")
    for verb in VERBS:
        assert f"    {verb}" in forge_help, verb
    assert "tiny" not in pipeline_help  # the trainers are no pipeline stages


def test_forge_config_holds_the_factory_settings_and_demo_config_none() -> None:
    forge = RunConfig.load(REPO / "configs" / "forge.toml")
    assert forge.section("forge", ForgeSection) == ForgeSection(seed=0, threads=1)
    audiollm = forge.section("tiny_audiollm", TinyAudioLLMConfig)
    clap = forge.section("tiny_clap", TinyClapConfig)
    # the shipped models were trained with these settings (their own saved copies)
    shipped = json.loads((MODELS / "tiny-audiollm" / "training_config.json").read_text())
    assert (audiollm.steps, audiollm.arch.text_layers, audiollm.track_weights) == (
        shipped["steps"], shipped["arch"]["text_layers"], shipped["track_weights"])
    assert clap.steps == json.loads((MODELS / "tiny-clap" / "training_config.json").read_text())["steps"]
    demo = RunConfig.load(REPO / "configs" / "demo.toml").raw
    assert not {"tiny_audiollm", "tiny_clap", "corpus", "forge"} & set(demo)
    assert "mini" not in demo["dataset"] and "sources_dir" not in demo["dataset"]


def test_forge_section_rejects_zero_threads() -> None:
    with pytest.raises(ConfigError, match=r"\[forge\].threads"):
        ForgeSection(threads=0)


@pytest.mark.parametrize("folder, card", [("tiny-audiollm", audiollm_card), ("tiny-clap", clap_card)])
def test_templates_render_the_shipped_cards_from_the_shipped_json(folder: str, card) -> None:
    """README.md is a function of the folder's json files: the template, filled, is the card byte for byte."""
    path = MODELS / folder
    result = json.loads((path / "eval.json").read_text())
    name = folder.replace("-", "_")
    got = render_card(name, card.card_values(path, result))
    assert got == (path / "README.md").read_text()
    # and the card follows what was measured: another figure, another card
    if folder == "tiny-clap":
        result["all"]["recall"]["1"] = 0.5
        n, m = result["all"]["n_clips"], result["all"]["n_captions"]
        assert f"| all | {n} | {m} | 50.0% ({100 / m:.1f}%)" in render_card(name, card.card_values(path, result))
        result["separability"][-1]["between_max"] = 0.777
        assert "| all | 38 | 0.777 |" in render_card(name, card.card_values(path, result))
    else:
        result["captions"]["word_f1"] = 0.5
        assert "reference 0.50, exact match" in render_card(name, card.card_values(path, result))
        gender = next(r for r in result["accuracy"] if (r["track"], r["fmt"]) == ("gender", "P3"))
        gender["accuracy"] = 0.5
        assert "| gender | >= 95% | 50.0% | missed |" in render_card(name, card.card_values(path, result))
        gender["accuracy"] = 0.99
        assert "| gender | >= 95% | 99.0% | met |" in render_card(name, card.card_values(path, result))


def test_a_template_field_without_a_value_is_named() -> None:
    values = audiollm_card.card_values(MODELS / "tiny-audiollm",
                                       json.loads((MODELS / "tiny-audiollm" / "eval.json").read_text()))
    del values["word_f1"]
    with pytest.raises(KeyError, match="tiny_audiollm.md.*word_f1"):
        render_card("tiny_audiollm", values)


def test_config_errors_exit_2_with_the_message(tmp_path: Path) -> None:
    from forge.cli import main

    bad = tmp_path / "forge.toml"
    bad.write_text("[forge]\nthreads = 0\n")
    assert main(["eval", "--config", str(bad)]) == 2


SMALL_AUDIOLLM = """
[tiny_audiollm]
manifest = "{manifest}"
out_dir = "{out}"
steps_encoder = 2
steps = 3
batch_size = 4
encoder_batch_size = 4
warmup_steps = 1
eval_every = 2
monitor_clips = 2

[tiny_audiollm.arch]
vocab_size = 512
chunk_length_s = 2
audio_d_model = 32
audio_layers = 1
audio_heads = 2
audio_ffn = 64
text_hidden = 32
text_layers = 2
text_ffn = 64
"""

SMALL_CLAP = """
[tiny_clap]
manifest = "{manifest}"
out_dir = "{out}"
audio_steps = 2
steps = 3
batch_size = 2
warmup_steps = 1
n_mels = 32
audio_width = 16
text_hidden = 32
text_layers = 1
text_heads = 2
projection_dim = 16
vocab_size = 300
chunk_length_s = 2
"""


@pytest.mark.parametrize("verb, table, card", [("tiny-audiollm", SMALL_AUDIOLLM, audiollm_card),
                                               ("tiny-clap", SMALL_CLAP, clap_card)])
def test_training_verbs_train_measure_and_write_the_card(tmp_path: Path, verb: str, table: str, card) -> None:
    """The verb end to end on a tiny config: [forge].seed reaches the trainer, and the card is the template's."""
    from conftest import gender_tone_manifest
    from forge.cli import main

    manifest = gender_tone_manifest(tmp_path)
    out = tmp_path / "model"
    config = tmp_path / "forge.toml"
    config.write_text("[forge]\nseed = 7\n" + table.format(manifest=manifest, out=out))
    assert main([verb, "--config", str(config)]) == 0
    assert json.loads((out / "train_summary.json").read_text())["seed"] == 7
    result = json.loads((out / "eval.json").read_text())
    assert result["split"] == "test"
    readme = (out / "README.md").read_text()
    assert readme == render_card(verb.replace("-", "_"), card.card_values(out, result))
    assert f"python -m forge {verb}" in readme


def test_the_cards_longer_run_figures_are_the_kept_measurement() -> None:
    """aims.json's note quotes the longer run's test P3 accuracies; they must be those of longer_run/eval.json."""
    import json
    import re
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "assets" / "models" / "tiny-audiollm"
    note = json.loads((folder / "aims.json").read_text())["note"]
    ev = json.loads((folder / "longer_run" / "eval.json").read_text())
    p3 = {r["track"]: 100 * r["accuracy"] for r in ev["accuracy"] if r["fmt"] == "P3"}
    quoted = dict(re.findall(r"(gender|language|emotion|animal|sound event) (\d+\.\d)%", note.split("(this model")[0]))
    assert {t.replace(" ", "_"): float(v) for t, v in quoted.items()} == {t: round(v, 1) for t, v in p3.items()}
    summary = json.loads((folder / "longer_run" / "train_summary.json").read_text())
    assert f"{summary['train_minutes']:.1f} min wall" in note and summary["steps_done"] == 6000
