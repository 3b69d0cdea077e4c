"""SAE training: a planted dictionary is recovered, resume equals an uninterrupted run,
2-process DDP (gloo) equals one process with the combined batch, the stage registers
SAEs in the catalog and skips finished ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ard_core.catalog import Catalog, SaeRow
from ard_core.config import ConfigError, RunConfig
from ard_core.sae import TopKSAE
from ard_core.sae import train as sae_train
from ard_core.sae.data import Dist, TokenSource
from ard_core.sae.recipe import lr_factor, power_of_two_scale
from ard_core.sae.train import SaeSection, train_sae
from ard_core.store import ActivationStore, ActivationWriter, StoreMeta

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def planted_store(root: Path, d: int = 32, n_atoms: int = 64, k_true: int = 3, n_tokens: int = 30_000,
                  layers: tuple[int, ...] = (0,), clips_per_shard: int = 20, seed: int = 0) -> np.ndarray:
    """Tokens = positive combinations of k_true of n_atoms unit atoms, times 5, plus an offset.

    Written as 500-token clips into an activation store; returns the atoms (n_atoms, d)."""
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((n_atoms, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    idx = np.stack([rng.choice(n_atoms, k_true, replace=False) for _ in range(n_tokens)])
    coef = rng.uniform(0.5, 2.0, (n_tokens, k_true))
    x = 5 * np.einsum("tk,tkd->td", coef, atoms[idx]) + 2.0
    writer = ActivationWriter(root, StoreMeta(model="planted", layers=list(layers), d_model=d))
    n_clips = n_tokens // 500
    for shard, start in enumerate(range(0, n_clips, clips_per_shard)):
        for c in range(start, min(start + clips_per_shard, n_clips)):
            for layer in layers:
                writer.add(f"clip{c:04d}", layer, x[c * 500 : (c + 1) * 500], np.arange(500))
        writer.commit(shard)
    return atoms


def small_section(**kw) -> SaeSection:
    base = dict(layers=[0], expansions=[4], k=4, batch_size=512, steps=400, lr=3e-3, warmup_steps=20,
                log_every=50, checkpoint_every=1000, eval_tokens=10_000, init_sample_tokens=10_000, impl="sparse")
    base.update(kw)
    return SaeSection(**base)


def test_planted_dictionary_is_recovered(tmp_path: Path) -> None:
    atoms = planted_store(tmp_path / "acts")
    store = ActivationStore(tmp_path / "acts")
    res = train_sae(small_section(), store, 0, 4, tmp_path / "sae", model_name="planted", device=CPU, progress=False)
    assert res.metrics.fvu < 0.1
    assert res.metrics.l0 == pytest.approx(4.0, abs=0.2)
    sae = TopKSAE.load(tmp_path / "sae")
    assert sae.cfg.input_scale == power_of_two_scale(torch.from_numpy(store.load_layer(0)).float())
    cos = torch.from_numpy(atoms).float() @ sae.W_dec.detach().T  # decoder rows are unit norm
    recovered = (cos.max(dim=1).values > 0.9).float().mean().item()
    assert recovered >= 0.8, f"only {recovered:.0%} of planted atoms have a learned decoder row with cos > 0.9"
    train = json.loads((tmp_path / "sae" / "train.json").read_text())
    assert train["steps"] == 400 and train["metrics"]["fvu"] == res.metrics.fvu
    log = [json.loads(l) for l in (tmp_path / "sae" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(50, 401, 50))
    assert log[-1]["fvu"] < log[0]["fvu"]
    assert not (tmp_path / "sae" / "checkpoint").exists()


def _log_without_timing(sae_dir: Path) -> list[dict]:
    rows = [json.loads(l) for l in (sae_dir / "train_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]


@pytest.mark.parametrize("impl", ["sparse", "auto"])
def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         impl: str) -> None:
    """Also: the log holds each step once (the killed run logged step 25 past its step-20 checkpoint),
    and impl='auto' resumes on the checkpoint's path even when the timing now favours the other."""
    planted_store(tmp_path / "acts", n_tokens=10_000)
    store = ActivationStore(tmp_path / "acts")
    section = small_section(steps=30, checkpoint_every=10, batch_size=256, warmup_steps=5, log_every=5, impl=impl)
    monkeypatch.setattr(sae_train, "choose_impl", lambda *a, **k: ("sparse", {"sparse": 0.0, "dense": 1.0}))
    train_sae(section, store, 0, 4, tmp_path / "straight", model_name="planted", device=CPU, progress=False)

    real_batches = TokenSource.batches

    def crash_after_25(self, start_step=0):
        for i, x in enumerate(real_batches(self, start_step)):
            if start_step + i == 25:
                raise KeyboardInterrupt("simulated kill")
            yield x

    monkeypatch.setattr(TokenSource, "batches", crash_after_25)
    with pytest.raises(KeyboardInterrupt):
        train_sae(section, store, 0, 4, tmp_path / "resumed", model_name="planted", device=CPU, progress=False)
    ckpt = torch.load(tmp_path / "resumed" / "checkpoint" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 20 and not (tmp_path / "resumed" / "cfg.json").exists()
    assert ckpt["impl"] == "sparse"
    assert [r["step"] for r in _log_without_timing(tmp_path / "resumed")] == [5, 10, 15, 20, 25]
    monkeypatch.setattr(TokenSource, "batches", real_batches)
    monkeypatch.setattr(sae_train, "choose_impl", lambda *a, **k: ("dense", {"sparse": 1.0, "dense": 0.0}))
    res = train_sae(section, store, 0, 4, tmp_path / "resumed", model_name="planted", device=CPU, progress=False)

    assert res.impl == "sparse"
    a, b = TopKSAE.load(tmp_path / "straight"), TopKSAE.load(tmp_path / "resumed")
    assert a.cfg == b.cfg
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert _log_without_timing(tmp_path / "resumed") == _log_without_timing(tmp_path / "straight")
    assert not (tmp_path / "resumed" / "checkpoint").exists()


def _ddp_worker(rank: int, world: int, rdzv: str, store_root: str, out: str, section: SaeSection) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rdzv}", rank=rank, world_size=world)
    try:
        train_sae(section, ActivationStore(store_root), 0, 4, Path(out), model_name="planted", device=CPU, progress=False)
    finally:
        dist.destroy_process_group()


def test_ddp_two_ranks_equal_one_process_with_the_combined_batch(tmp_path: Path) -> None:
    planted_store(tmp_path / "acts", n_tokens=10_000)
    section = small_section(steps=12, batch_size=256, warmup_steps=3, dead_data_frac=0.05)  # AuxK active too
    train_sae(section, ActivationStore(tmp_path / "acts"), 0, 4, tmp_path / "single", model_name="planted",
              device=CPU, progress=False)
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "rdzv"), str(tmp_path / "acts"), str(tmp_path / "ddp"), section),
             nprocs=2, join=True)
    assert json.loads((tmp_path / "ddp" / "train.json").read_text())["world_size"] == 2
    a, b = TopKSAE.load(tmp_path / "single"), TopKSAE.load(tmp_path / "ddp")
    assert a.cfg == b.cfg
    assert not torch.equal(a.W_dec, TopKSAE(a.cfg).W_dec)  # it trained
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-4, atol=1e-5, msg=name)


def test_token_source_is_resumable_and_rank_disjoint(tmp_path: Path) -> None:
    planted_store(tmp_path / "acts", n_tokens=6_000, clips_per_shard=3)  # 4 shards
    store = ActivationStore(tmp_path / "acts")
    for mem in (8.0, 0.0):  # in memory, then streamed from disk
        src = TokenSource(store, 0, 200, seed=1, device=CPU, in_memory_max_gb=mem, buffer_tokens=1000)
        assert src.in_memory == (mem > 0)
        first = [x for _, x in zip(range(40), src.batches(0))]  # crosses epochs (30 steps each)
        later = [x for _, x in zip(range(10), src.batches(30))]
        assert all(torch.equal(a, b) for a, b in zip(first[30:], later))
        assert not torch.equal(first[0], first[30])  # a new epoch is a new shuffle
    # two ranks: disjoint halves of every global batch (in memory) / of the shards (streaming)
    halves = [TokenSource(store, 0, 200, 1, CPU, 8.0, 1000, Dist(r, 2)) for r in range(2)]
    whole = TokenSource(store, 0, 200, 1, CPU, 8.0, 1000)
    assert torch.equal(torch.cat([next(h.batches(3)) for h in halves]), next(whole.batches(3)))
    def epoch_rows(src: TokenSource) -> set[tuple[float, ...]]:
        return set(map(tuple, torch.cat([x for _, x in zip(range(src.steps_per_epoch), src.batches(0))]).tolist()))

    for world in (2, 5):  # 4 shards: split by shard for 2 ranks, by batch for 5
        rows = [epoch_rows(TokenSource(store, 0, 100 * world, 1, CPU, 0.0, 1000, Dist(r, world))) for r in range(world)]
        assert all(rows) and sum(map(len, rows)) == len(set().union(*rows))


def test_section_validation_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"\[sae\]\.k"):
        SaeSection(k=0)
    with pytest.raises(ConfigError, match="warmup_steps"):
        SaeSection(steps=10, warmup_steps=10)
    with pytest.raises(ConfigError, match="impl"):
        SaeSection(impl="fast")
    assert SaeSection(dead_tokens=10_000_000, dead_data_frac=0.25).dead_threshold(75_000) == 18_750
    s = SaeSection(steps=100, warmup_steps=10, lr_decay_frac=0.2)
    assert [lr_factor(i, s) for i in (0, 9, 10, 79, 80, 90, 99)] == [0.1, 1.0, 1.0, 1.0, 1.0, 0.5, 0.05]


def test_k_larger_than_d_sae_is_a_config_error(tmp_path: Path) -> None:
    planted_store(tmp_path / "acts", d=8, n_tokens=2_000)
    with pytest.raises(ConfigError, match="exceeds d_sae"):
        train_sae(small_section(k=40), ActivationStore(tmp_path / "acts"), 0, 4, tmp_path / "sae",
                  model_name="planted", device=CPU, progress=False)


def test_stage_trains_the_grid_registers_and_skips_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from precompute import cli
    import precompute.train_sae as stage

    planted_store(tmp_path / "run" / "activations", d=16, n_tokens=4_000, layers=(1, 3))
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f"""
[run]
name = "t"
out_dir = "{tmp_path / 'run'}"
device = "cpu"

[sae]
layers = [1, 3]
expansions = [2, 4]
k = 4
batch_size = 256
steps = 20
lr = 1e-3
warmup_steps = 2
log_every = 5
""")
    assert cli.main(["train-sae", "--config", str(cfg), "--no-progress"]) == 0
    with Catalog.open(tmp_path / "run" / "catalog.duckdb", read_only=True) as cat:
        rows = {r.sae_id: r for r in cat.rows(SaeRow)}
    assert sorted(rows) == ["planted-l1-e2", "planted-l1-e4", "planted-l3-e2", "planted-l3-e4"]
    r = rows["planted-l3-e4"]
    assert (r.layer, r.expansion, r.k, r.d_in, r.d_sae) == (3, 4, 4, 16, 64)
    assert 0 < r.fvu < 1 and 0 < r.l0 <= 4 and 0 <= r.dead_frac <= 1
    assert TopKSAE.load(r.path).cfg.layer == 3

    def must_not_train(*a, **k):
        raise AssertionError("a finished SAE was retrained")

    monkeypatch.setattr(stage, "train_sae", must_not_train)
    assert cli.main(["train-sae", "--config", str(cfg), "--no-progress"]) == 0
    # a changed result-relevant setting makes the finished SAEs stale
    monkeypatch.setattr(stage, "train_sae", sae_train.train_sae)
    cfg.write_text(cfg.read_text().replace("steps = 20", "steps = 21"))
    assert cli.main(["train-sae", "--config", str(cfg), "--no-progress", "--only", "planted-l1-e2"]) == 0
    assert json.loads((tmp_path / "run" / "saes" / "planted-l1-e2" / "train.json").read_text())["steps"] == 21


def test_stage_rejects_layers_missing_from_the_store(tmp_path: Path) -> None:
    planted_store(tmp_path / "run" / "activations", d=8, n_tokens=1_000)
    run = RunConfig.from_raw({"run": {"out_dir": str(tmp_path / "run"), "device": "cpu"}, "sae": {"layers": [5]}})
    from precompute.train_sae import train_all

    with pytest.raises(ConfigError, match=r"\[sae\]\.layers"):
        train_all(run, run.section("sae", SaeSection), progress=False)

