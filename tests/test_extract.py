"""Activation extraction: exact agreement with HF hidden states, resume, bad audio, and the
dataset stage's manifest as its only source of clips."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from ard_core.catalog import ActivationIndexRow, Catalog
from ard_core.config import RunConfig
from ard_core.datasets import ClipRecord, load_manifest, save_manifest
from ard_core.models import ModelConfig
from ard_core.store import ActivationStore, shard_name
from conftest import tone
from precompute.configs import ExtractConfig
from precompute.extract import extract, extract_batch
from precompute.handover import StageOutputMissing


def _write_corpus(folder: Path, n: int = 7, broken: bool = True) -> Path:
    import soundfile as sf

    recs = []
    for i in range(n):
        p = folder / f"c{i}.wav"
        sf.write(p, tone(0.6 + 0.2 * (i % 4), 200 + 50 * i, seed=i), 16000)
        recs.append(ClipRecord(f"c{i}", p, "test", "train", 0.6 + 0.2 * (i % 4), {"gender": "male"}, "a tone"))
    if broken:
        p = folder / "broken.wav"
        p.write_bytes(b"this is not a wav file at all")
        recs.insert(3, ClipRecord("broken", p, "test", "train", 1.0, {}, "broken"))
    return save_manifest(recs, folder / "manifest.csv")


def _run(tmp_path: Path, model_dir: Path, manifest: Path, **extract_kw) -> RunConfig:
    """A run whose dataset stage has written ``manifest``'s clips as its ``dataset/manifest.csv``."""
    save_manifest(load_manifest(manifest), tmp_path / "run" / "dataset" / "manifest.csv")
    return RunConfig.from_raw({
        "run": {"name": "t", "out_dir": str(tmp_path / "run"), "device": "cpu"},
        "model": {"name_or_path": str(model_dir)},
        "extract": extract_kw,
    })


def test_batch_matches_hidden_states_exactly(tiny_llm):
    """Hooked layer outputs == HF output_hidden_states[l + 1] at the audio positions."""
    audios = [tone(0.8, 300), tone(1.3, 500, seed=1)]
    prompt = tiny_llm.build_prompt("Generate a detailed caption for the audio clip")
    layers = [0, 1, 2]
    per_clip = extract_batch(tiny_llm, audios, prompt, layers, "audio")
    inputs = tiny_llm.prepare(audios, [prompt] * 2)
    with torch.inference_mode():
        hs = tiny_llm.model(**inputs, output_hidden_states=True).hidden_states
    mask = tiny_llm.audio_positions(inputs["input_ids"])
    # 80 and 130 mel frames -> ((n - 1) // 2 + 1 - 2) // 2 + 1 audio tokens
    assert mask.sum(1).tolist() == [20, 32]
    for b in range(2):
        for l in layers:
            acts, pos = per_clip[b][l]
            torch.testing.assert_close(torch.from_numpy(acts), hs[l + 1][b, mask[b]].float(), rtol=0, atol=0)
            assert pos.tolist() == list(range(int(mask[b].sum())))


def test_last_layer_is_pre_norm(tiny_llm):
    """HF's last hidden state is post-norm; the store keeps the pre-norm stream."""
    audio = [tone(0.8, 300)]
    prompt = tiny_llm.build_prompt("Generate a detailed caption for the audio clip")
    last = tiny_llm.n_layers - 1
    acts, _ = extract_batch(tiny_llm, audio, prompt, [last], "audio")[0][last]
    inputs = tiny_llm.prepare(audio, [prompt])
    with torch.inference_mode():
        hs = tiny_llm.model(**inputs, output_hidden_states=True).hidden_states
        normed = tiny_llm.final_norm(torch.from_numpy(acts))
    mask = tiny_llm.audio_positions(inputs["input_ids"])[0]
    torch.testing.assert_close(normed, hs[-1][0, mask], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(torch.from_numpy(acts), hs[-1][0, mask])


def test_store_equals_hidden_states_and_skips_broken(tmp_path, tiny_model_dir, tiny_llm, caplog):
    manifest = _write_corpus(tmp_path)
    run = _run(tmp_path, tiny_model_dir, manifest, layers=[1, 2], store_dtype="float32",
               batch_size=3, clips_per_shard=4)
    with caplog.at_level(logging.WARNING):
        res = extract(run, run.section("model", ModelConfig), run.section("extract", ExtractConfig), llm=tiny_llm)
    assert [f["clip_id"] for f in res.failed] == ["broken"]
    assert "broken" in caplog.text and "could not be decoded" in caplog.text
    store = ActivationStore(res.store)
    assert store.clip_ids() == [f"c{i}" for i in range(7)]
    prompt = tiny_llm.build_prompt(ExtractConfig().prompt)
    from ard_core.audio import load_audio

    for i in (0, 5):
        audio = load_audio(tmp_path / f"c{i}.wav")
        inputs = tiny_llm.prepare([audio], [prompt])
        with torch.inference_mode():
            hs = tiny_llm.model(**inputs, output_hidden_states=True).hidden_states
        mask = tiny_llm.audio_positions(inputs["input_ids"])[0]
        for l in (1, 2):
            # stored in a batch of 3 with left padding; single-clip forward must agree
            torch.testing.assert_close(torch.from_numpy(store.clip_tokens(l, f"c{i}")), hs[l + 1][0, mask],
                                       rtol=1e-4, atol=1e-5)
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        idx = cat.rows(ActivationIndexRow, "layer = 1", order_by="clip_id")
        assert [r.clip_id for r in idx] == [f"c{i}" for i in range(7)]
        assert sum(r.n_tokens for r in idx) == store.n_tokens(1)
        assert cat.count("clips") == 8


def test_resume_after_interrupt_gives_same_shards(tmp_path, tiny_model_dir, tiny_llm):
    manifest = _write_corpus(tmp_path, broken=False)
    kw = dict(layers=[0, 3], batch_size=2, clips_per_shard=3)
    ref_run = _run(tmp_path / "ref", tiny_model_dir, manifest, **kw)
    extract(ref_run, ref_run.section("model", ModelConfig), ref_run.section("extract", ExtractConfig), llm=tiny_llm)

    run = _run(tmp_path / "int", tiny_model_dir, manifest, **kw)
    cfg = run.section("extract", ExtractConfig)
    extract(run, run.section("model", ModelConfig), cfg, llm=tiny_llm)
    root = run.run.out_dir / "activations"
    # simulate a kill: shard 1 was half-written (only the .tmp dir), shard 2 never started
    (root / shard_name(1)).rename(root / (shard_name(1) + ".tmp"))
    (root / (shard_name(1) + ".tmp") / "layer_00.npy").write_bytes(b"junk")
    import shutil

    shutil.rmtree(root / shard_name(2))
    assert len(ActivationStore(root).shards) == 1  # the half-written shard is not visible
    res = extract(run, run.section("model", ModelConfig), cfg, llm=tiny_llm)
    assert (res.shards_written, res.shards_skipped) == (2, 1)
    ref_root = ref_run.run.out_dir / "activations"
    for shard in sorted(p.name for p in ref_root.iterdir() if p.is_dir()):
        for f in sorted((ref_root / shard).iterdir()):
            assert (root / shard / f.name).read_bytes() == f.read_bytes(), f"{shard}/{f.name} differs"
    assert not any(p.name.endswith(".tmp") for p in root.iterdir())


def test_clips_come_from_the_dataset_stages_manifest_with_the_same_absolute_paths(tmp_path, tiny_model_dir,
                                                                                  tiny_llm):
    """The run's copy of the manifest lies elsewhere (paths relative to it): the catalog gets the
    same resolved paths as the original manifest's, in its order."""
    (tmp_path / "corpus").mkdir()
    manifest = _write_corpus(tmp_path / "corpus", n=3, broken=False)
    run = _run(tmp_path / "elsewhere", tiny_model_dir, manifest, layers=[0])
    assert (run.run.out_dir / "dataset" / "manifest.csv").read_text() != manifest.read_text()
    extract(run, run.section("model", ModelConfig), run.section("extract", ExtractConfig), llm=tiny_llm)
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        paths = [r["path"] for r in cat.query("SELECT path FROM clips ORDER BY clip_id")]
    assert paths == [str((tmp_path / "corpus" / f"c{i}.wav").resolve()) for i in range(3)]
    assert paths == [str(r.path) for r in load_manifest(manifest)]


def test_extract_without_the_dataset_stage_says_which_stage_to_run(tmp_path, tiny_model_dir, capsys):
    run = RunConfig.from_raw({"run": {"out_dir": str(tmp_path / "run"), "device": "cpu"},
                              "model": {"name_or_path": str(tiny_model_dir)}})
    with pytest.raises(StageOutputMissing, match=r"dataset/manifest\.csv does not exist; run `python -m "
                                                 r"precompute dataset --config"):
        extract(run, run.section("model", ModelConfig), ExtractConfig(layers=[0]))
    from precompute.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[run]\nout_dir = "{tmp_path / "run"}"\ndevice = "cpu"\n'
                   f'[model]\nname_or_path = "{tiny_model_dir}"\n[extract]\nlayers = [0]\n')
    assert main(["extract", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert f"run `python -m precompute dataset --config {cfg}` first" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "activations").exists()


def test_drop_sinks_removes_high_norm_tokens():
    from precompute.extract import keep_mask

    acts = np.ones((10, 4), np.float32)
    acts[3] *= 50
    assert keep_mask(acts, 10.0).tolist() == [True] * 3 + [False] + [True] * 6


def test_token_batches_cover_every_token_once(tmp_path):
    from ard_core.store import ActivationWriter, StoreMeta

    w = ActivationWriter(tmp_path, StoreMeta(model="m", layers=[0], d_model=3, dtype="float32"))
    rows = np.arange(3 * 50, dtype=np.float32).reshape(50, 3)
    for s in range(5):
        for c in range(2):
            chunk = rows[s * 10 + c * 5 : s * 10 + c * 5 + 5]
            w.add(f"s{s}c{c}", 0, chunk, np.arange(5))
        w.commit(s)
    store = ActivationStore(tmp_path)
    got = torch.cat(list(store.iter_token_batches(0, batch_size=7, shuffle=True, seed=1, buffer_tokens=16)))
    assert got.shape == (50, 3)
    assert sorted(got[:, 0].tolist()) == rows[:, 0].tolist()
    assert not torch.equal(got, torch.from_numpy(rows))  # actually shuffled
    again = torch.cat(list(store.iter_token_batches(0, batch_size=7, shuffle=True, seed=1, buffer_tokens=16)))
    assert torch.equal(got, again)
