"""``python -m precompute plan``: the 7B's shapes from its shipped config on the meta device, the
checks on the layers and positions a config names, and every printed figure against a hand
computation from the config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ard_core.config import ConfigError, RunConfig
from ard_core.datasets import ClipRecord, save_manifest
from ard_core.models.meta import find_config_dir, meta_shape
from precompute.cli import main
from precompute.plan import plan
from precompute.plan_figures import DEFAULT_CALIBRATION, PROMPT_TOKENS, Throughput, forward_flops

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "qwen2-audio-7b.toml"


@pytest.fixture(scope="module")
def shape7b():
    return meta_shape("Qwen/Qwen2-Audio-7B-Instruct")


def test_the_7b_builds_on_the_meta_device_from_its_shipped_config(shape7b):
    assert shape7b.config_dir == REPO / "configs" / "models" / "qwen2-audio-7b-instruct"
    assert shape7b.params == 8_397_094_912 and shape7b.n_layers == 32 and shape7b.d_model == 4096
    assert shape7b.name == "qwen2-audio-7b-instruct" and shape7b.audio_token_id == 151_646
    assert shape7b.embed_params == 156_032 * 4096 and shape7b.encoder_positions == 1500
    # 25 audio tokens per second, capped by the 30 s window
    assert [shape7b.audio_tokens(s) for s in (1.0, 4.5, 10.0, 30.0, 45.0)] == [25, 112, 250, 750, 750]


def test_audio_tokens_follow_the_feature_extractors_frames(shape7b):
    """Qwen2AudioProcessor counts audio tokens from the feature extractor's attention mask."""
    import numpy as np
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor.from_pretrained(shape7b.config_dir)
    for seconds in (0.37, 4.5, 12.34, 31.0):
        mask = fe(np.zeros(int(seconds * 16000), np.float32), sampling_rate=16000, return_attention_mask=True,
                  padding="max_length", return_tensors="np")["attention_mask"]
        frames = int(mask.sum())
        assert shape7b.audio_tokens(seconds) == (((frames - 1) // 2 + 1) - 2) // 2 + 1, seconds


def test_a_hub_id_without_a_shipped_config_names_the_fix():
    with pytest.raises(ConfigError, match="download the model's config.json"):
        find_config_dir("someone/Other-Audio-Model")


def test_figures_match_a_hand_computation(shape7b):
    run = RunConfig.load(PAPER)
    p, problems = plan(run, clips=1000, clip_seconds=10.0, disk_gb=6.0)
    assert problems == []
    tokens = 1000 * 250
    assert p.stored.audio_tokens == tokens
    assert p.store_gb_per_layer == pytest.approx(tokens * (4096 * 2 + 4) / 1e9)
    assert p.store_gb == pytest.approx(3 * p.store_gb_per_layer)
    assert p.layer_gib_in_memory == pytest.approx(tokens * 4096 * 2 / 2**30) and p.in_memory
    assert p.tokens_per_sae == 100_000 * 4096
    e8 = next(s for s in p.saes if (s.layer, s.expansion) == (26, 8))
    assert e8.d_sae == 32_768 and e8.params == 2 * 4096 * 32_768 + 32_768 + 4096
    assert e8.state_gib == pytest.approx(16 * e8.params / 2**30)
    assert len(p.saes) == 9
    store, stream = p.option("store"), p.option("stream")
    assert store.passes == pytest.approx(409_600_000 / tokens)
    assert store.fits is False and store.disk_gb == pytest.approx(p.store_gb)
    tput = Throughput.from_smoke(DEFAULT_CALIBRATION, shape7b)
    sae_hours = sum(6 * 4096 * e * 4096 * 409_600_000 for e in (4, 8, 16)) * 3 / (tput.sae_tflops * 1e12) / 3600
    per_clip = 2 * (shape7b.params - shape7b.audio_params - shape7b.embed_params) * (250 + PROMPT_TOKENS) \
        + 2 * shape7b.audio_params * 1500
    extract_hours = 1000 * per_clip / (tput.forward_tflops * 1e12) / 3600
    assert store.gpu_hours == pytest.approx(extract_hours + sae_hours)
    stream_forward = 409_600_000 / 250 * per_clip / (tput.forward_tflops * 1e12) / 3600
    assert stream.gpu_hours == pytest.approx(extract_hours + stream_forward + sae_hours)
    big = RunConfig.load(PAPER, ["sae.in_memory_max_gb=0.1"])
    assert not plan(big, clips=1000, clip_seconds=10.0)[0].in_memory


def test_throughput_is_the_smoke_tests_measurement(shape7b):
    smoke = json.loads(DEFAULT_CALIBRATION.read_text())
    tput = Throughput.from_smoke(DEFAULT_CALIBRATION, shape7b)
    assert tput.sae_tflops == pytest.approx(6 * 4096 * 32_768 * smoke["train_sae"]["tokens_per_s"] / 1e12)
    ex = smoke["extract"]
    assert tput.forward_tflops == pytest.approx(ex["clips"] * forward_flops(shape7b, 750) / ex["seconds"] / 1e12)
    assert smoke["generate"]["prompt_tokens"] - ex["tokens_per_clip"] == PROMPT_TOKENS
    assert "H200" in tput.source
    # planning a small model, the rate is still the one measured on the 7B's FLOPs
    tiny = shape7b._replace(name="tiny", params=1_000, audio_params=100, embed_params=100)
    assert Throughput.from_smoke(DEFAULT_CALIBRATION, tiny) == tput


@pytest.mark.parametrize("override, message", [
    ("extract.layers=[5, 16, 40]", r"\[extract\].layers \[40\] out of range"),
    ("sae.layers=[5, 17, 26]", r"\[sae\].layers \[17\] are not in \[extract\].layers"),
    ("lens.enrich_gap=40", "enrich_gap 40"),
])
def test_problems_are_found_before_the_run(override, message):
    _, problems = plan(RunConfig.load(PAPER, [override]), clips=10)
    assert any(__import__("re").search(message, p) for p in problems), problems


def test_clips_come_from_the_manifest_when_the_dataset_stage_ran(tmp_path):
    durations = {"train": [2.0, 45.0], "probe": [10.0], "test": [1.0]}
    records = [ClipRecord(f"{s}{i}", tmp_path / f"{s}{i}.wav", "t", s, d, {}, "x")
               for s, ds in durations.items() for i, d in enumerate(ds)]
    save_manifest(records, tmp_path / "run" / "dataset" / "manifest.csv")
    run = RunConfig.load(PAPER, [f"run.out_dir={tmp_path / 'run'}", 'extract.splits=["train", "probe"]'])
    p, _ = plan(run)
    assert p.stored.n == 3 and p.stored.audio_tokens == 50 + 750 + 250
    assert p.option("stream").data.audio_tokens == 50 + 750  # [sae].stream_splits = ["train"]
    with pytest.raises(ConfigError, match="--clips N"):
        plan(RunConfig.load(PAPER, [f"run.out_dir={tmp_path / 'none'}"]))


def test_the_command_prints_the_figures_and_the_choice(capsys):
    assert main(["plan", "--config", str(PAPER), "--clips", "118356", "--clip-seconds", "10", "--disk-gb", "500"]) == 0
    out = capsys.readouterr().out
    assert "8,397,094,912 parameters" in out and "32 decoder layers of width 4096" in out
    assert "[5, 16, 26]" in out and "13.84 passes" in out and "does NOT fit" in out
    assert "--set sae.source=stream" in out
    assert main(["plan", "--config", str(PAPER), "--clips", "10", "--set", "extract.layers=[5, 16, 32]"]) == 1
    assert "out of range" in capsys.readouterr().out


def test_a_local_checkpoint_folder_is_checked_with_its_tokenizer(tiny_model_dir, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[run]\nout_dir = "{tmp_path}"\n[model]\nname_or_path = "{tiny_model_dir}"\n'
                   "[extract]\nlayers = [1, 3]\n[sae]\nlayers = [1, 3]\n[lens]\nenrich_gap = 1\n")
    p, problems = plan(RunConfig.load(cfg), clips=4, clip_seconds=1.0)
    assert problems == [] and p.shape.n_layers == 4 and p.shape.d_model == 32
    assert p.shape.window_s == 2.0 and p.stored.audio_tokens == 4 * 25
    cfg_json = json.loads((tiny_model_dir / "config.json").read_text())
    assert p.shape.audio_token_id == cfg_json.get("audio_token_id", cfg_json.get("audio_token_index"))
