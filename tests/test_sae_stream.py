"""``[sae].source = "stream"``: SAEs trained on the model's forward passes, no activation store.

Checked against the store (the stream's tokens are the extract stage's tokens, shuffled), for
resumability (the batches from any step equal those of an uninterrupted stream, with or without the
recorded block history; a killed training run resumes bit for bit), and through the stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ard_core.catalog import Catalog, SaeRow
from ard_core.config import ConfigError, RunConfig
from ard_core.datasets import load_manifest, save_manifest
from ard_core.models import ModelConfig
from ard_core.sae import TopKSAE
from ard_core.sae.section import SaeSection
from ard_core.sae.stream import ActivationStream, StreamSpec, train_stream
from ard_core.store import ActivationStore
from conftest import gender_tone_manifest
from precompute.configs import ExtractConfig
from precompute.extract import extract

CPU = torch.device("cpu")
LAYERS = [1, 2]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gender_tone_manifest(tmp_path_factory.mktemp("clips"), n=18)


def _stream(llm, manifest: Path, tmp_path: Path, **kw) -> ActivationStream:
    spec = StreamSpec(llm.build_prompt(ExtractConfig().prompt), "audio", LAYERS)
    args = dict(batch_size=32, buffer_tokens=100, batch_clips=4, seed=3, device=CPU, state_path=tmp_path / "stream.json")
    args.update(kw)
    return ActivationStream(llm, load_manifest(manifest), spec, **args)


def test_the_stream_carries_the_extract_stages_tokens(tiny_llm, tiny_model_dir, clips, tmp_path):
    save_manifest(load_manifest(clips), tmp_path / "run" / "dataset" / "manifest.csv")
    run = RunConfig.from_raw({"run": {"out_dir": str(tmp_path / "run"), "device": "cpu"},
                              "model": {"name_or_path": str(tiny_model_dir)}})
    extract(run, run.section("model", ModelConfig), ExtractConfig(layers=LAYERS, batch_size=4), llm=tiny_llm)
    store = ActivationStore(tmp_path / "run" / "activations")
    stream = _stream(tiny_llm, clips, tmp_path)
    order = stream.order(0)
    tokens, used = stream._tokens(order, until=10**9)
    assert used == len(order) == 18
    for layer in LAYERS:
        stored = torch.cat([torch.from_numpy(store.clip_tokens(layer, stream.records[i].clip_id).copy())
                            for i in order])
        torch.testing.assert_close(tokens[layer], stored.to(torch.float16), atol=2e-3, rtol=1e-2)
    # a block is its clips' tokens, every layer permuted alike
    block, next_cursor = stream._block(0, 0)
    first, _ = stream._tokens(order[:next_cursor], until=10**9)
    for layer in LAYERS:
        assert len(block[layer]) >= 100 and len(block[layer]) == len(first[layer])
        key = lambda t: t.float().sum(1) * 1000 + t.float()[:, 0]  # noqa: E731
        torch.testing.assert_close(torch.sort(key(block[layer])).values, torch.sort(key(first[layer])).values)
    for i in (0, 5, len(block[1]) - 1):
        j = int((first[1] == block[1][i]).all(1).nonzero()[0])
        assert torch.equal(block[2][i], first[2][j])


def test_batches_from_any_step_equal_the_uninterrupted_stream(tiny_llm, clips, tmp_path):
    stream = _stream(tiny_llm, clips, tmp_path)
    it = stream.batches(0)
    straight = [next(it) for _ in range(30)]
    assert len(stream.blocks) > 3 and len({b.epoch for b in stream.blocks}) >= 2  # blocks and epochs are crossed
    stream.save_history()
    for k in (0, 1, 7, 13, 29):
        for history in (True, False):
            if not history:
                (tmp_path / "stream.json").unlink(missing_ok=True)
            again = _stream(tiny_llm, clips, tmp_path)
            got = next(again.batches(k))
            for layer in LAYERS:
                assert torch.equal(got[layer], straight[k][layer]), (k, history)
            stream.save_history()
    # other settings: the recorded history is not used
    other = _stream(tiny_llm, clips, tmp_path, buffer_tokens=60)
    assert other.blocks == [] and other.fingerprint() != stream.fingerprint()
    assert all(x[1].shape == (32, tiny_llm.d_model) and x[1].dtype == torch.float32 for x in straight)


def _section(**kw) -> SaeSection:
    base = dict(layers=LAYERS, expansions=[2], k=4, batch_size=32, steps=30, lr=3e-3, warmup_steps=3, log_every=5,
                checkpoint_every=10, eval_tokens=200, init_sample_tokens=200, impl="sparse", buffer_tokens=100,
                source="stream", stream_batch_clips=4)
    base.update(kw)
    return SaeSection(**base)


def _log(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]


def test_a_killed_stream_run_resumes_bit_for_bit(tiny_llm, clips, tmp_path, monkeypatch):
    section = _section()
    jobs = lambda root: [(layer, 2, root / f"l{layer}") for layer in LAYERS]  # noqa: E731
    kw = dict(model_name="tiny", device=CPU, seed=3, progress=False)
    straight = train_stream(section, _stream(tiny_llm, clips, tmp_path / "a"), jobs(tmp_path / "a"), **kw)
    real = ActivationStream.batches

    def killed_at_25(self, start_step=0):
        for i, x in enumerate(real(self, start_step)):
            if start_step + i == 25:
                raise KeyboardInterrupt("simulated kill")
            yield x

    monkeypatch.setattr(ActivationStream, "batches", killed_at_25)
    with pytest.raises(KeyboardInterrupt):
        train_stream(section, _stream(tiny_llm, clips, tmp_path / "b"), jobs(tmp_path / "b"), **kw)
    assert torch.load(tmp_path / "b" / "l1" / "checkpoint" / "checkpoint.pt", weights_only=True)["step"] == 20
    monkeypatch.setattr(ActivationStream, "batches", real)
    resumed = train_stream(section, _stream(tiny_llm, clips, tmp_path / "b"), jobs(tmp_path / "b"), **kw)
    for a, b in zip(straight, resumed):
        sa, sb = TopKSAE.load(a.sae_dir), TopKSAE.load(b.sae_dir)
        assert sa.cfg == sb.cfg and a.metrics == b.metrics
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            assert torch.equal(getattr(sa, name), getattr(sb, name)), name
        assert _log(b.sae_dir) == _log(a.sae_dir)
    assert [r.steps for r in straight] == [30, 30] and straight[0].metrics.fvu < 1.0


def _config(tmp_path: Path, model_dir: Path, manifest: Path, extra: str = "") -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
[run]
name = "s"
out_dir = "{tmp_path / 'run'}"
device = "cpu"
[model]
name_or_path = "{model_dir}"
[dataset]
kind = "sources"
sources = [{{ loader = "manifest", path = "{manifest}" }}]
[extract]
layers = [1, 2]
splits = ["probe", "test"]
batch_size = 4
[sae]
layers = [1, 2]
expansions = [2, 4]
k = 4
batch_size = 32
steps = 12
warmup_steps = 2
log_every = 4
checkpoint_every = 8
eval_tokens = 200
init_sample_tokens = 200
buffer_tokens = 100
impl = "sparse"
{extra}""")
    return cfg


def test_the_stage_streams_the_train_split_into_every_sae(tiny_model_dir, clips, tmp_path, monkeypatch):
    from precompute import cli
    import precompute.train_sae as stage

    cfg = _config(tmp_path, tiny_model_dir, clips)
    stream = ["--set", "sae.source=stream", "--set", 'sae.stream_splits=["train"]']
    for name in ("dataset", "extract"):
        assert cli.main([name, "--config", str(cfg)]) == 0
    store = ActivationStore(tmp_path / "run" / "activations")
    assert {r.clip_id for r in store.index(1)} == {f"c{i:02d}" for i in range(18) if i % 3}  # probe + test only
    assert cli.main(["train-sae", "--config", str(cfg), "--no-progress", *stream]) == 0
    with Catalog.open(tmp_path / "run" / "catalog.duckdb", read_only=True) as cat:
        rows = {r.sae_id: r for r in cat.rows(SaeRow)}
    assert len(rows) == 4 and all(0 < r.fvu < 2 for r in rows.values())
    info = json.loads((Path(rows[next(iter(rows))].path) / "train.json").read_text())
    assert info["section"]["source"] == "stream" and info["data_in_memory"] is False and info["steps"] == 12
    blocks = json.loads((tmp_path / "run" / "saes" / "stream.json").read_text())["blocks"]
    assert blocks and blocks[0]["first_step"] == 0

    def must_not_train(*a, **k):
        raise AssertionError("a finished SAE was retrained")

    monkeypatch.setattr(stage, "train_stream", must_not_train)
    assert cli.main(["train-sae", "--config", str(cfg), "--no-progress", *stream]) == 0
    monkeypatch.setattr(stage, "train_sae", must_not_train)
    with pytest.raises(AssertionError, match="retrained"):  # the store would be other data: stale
        stage.train_all(RunConfig.load(cfg), RunConfig.load(cfg).section("sae", SaeSection), progress=False)


def test_stream_needs_the_same_positions_for_every_layer(tiny_model_dir, clips, tmp_path):
    from precompute import cli

    from precompute.train_sae import train_all

    cfg = _config(tmp_path, tiny_model_dir, clips, extra='source = "stream"\n')
    assert cli.main(["dataset", "--config", str(cfg)]) == 0
    assert cli.main(["extract", "--config", str(cfg), "--set", "extract.drop_sinks=true"]) == 0
    run = RunConfig.load(cfg)
    with pytest.raises(ConfigError, match="drop_sinks = false"):
        train_all(run, run.section("sae", SaeSection), progress=False)
