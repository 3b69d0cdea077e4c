"""CLAP backends behind one interface: shapes, normalisation, batching, msclap's shim, retrieval."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from ard_core.clap import ClapEmbedder, HFClap, MSClap, load_clap, shim_encode_plus
from forge.measure import evaluate_clap, recall_at_k
from forge.tiny_clap.config import TinyClapConfig
from forge.tiny_clap.recipe import build_clap_tokenizer
from forge.tiny_clap.train import distinct_caption_batch, train_clap
from conftest import tone

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = ["a dog barking", "a cat meowing", "a man speaking English", "rain falling", "a siren wailing"]


@pytest.fixture(scope="module")
def clap(tiny_clap_dir: Path) -> HFClap:
    """conftest's random tiny CLAP: the shipped model's recipe at test size (16 kHz, 24-d)."""
    return load_clap("hf", tiny_clap_dir)


@pytest.fixture(scope="module")
def laion_rate_clap_dir(tiny_clap_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model behind a LAION-style 48 kHz feature extractor (10 ms hop at 48 kHz), as
    ``laion/clap-htsat-unfused`` ships: 32 bins x 201 frames still fit its 128 x 128 Swin input."""
    from transformers import ClapFeatureExtractor, ClapModel, ClapProcessor

    folder = tmp_path_factory.mktemp("tiny-clap-48k")
    ClapModel.from_pretrained(tiny_clap_dir).save_pretrained(folder)
    fe = ClapFeatureExtractor(feature_size=32, sampling_rate=48000, max_length_s=2, fft_window_size=1024,
                              hop_length=480, truncation="rand_trunc", padding="repeatpad")
    ClapProcessor(feature_extractor=fe, tokenizer=ClapProcessor.from_pretrained(tiny_clap_dir).tokenizer
                  ).save_pretrained(folder)
    return folder


def test_hf_backend_shapes_and_unit_norm(clap: HFClap) -> None:
    assert isinstance(clap, ClapEmbedder) and clap.dim == 24
    waves = [tone(1.0, 300), tone(2.5, 800, seed=1), tone(4.0, 150, seed=2)]  # 4 s > the 3 s window
    a = clap.embed_audio(waves, progress=False)
    t = clap.embed_text(CAPTIONS, progress=False)
    assert a.shape == (3, 24) and t.shape == (5, 24)
    assert a.dtype == np.float32 and t.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(a[0], a[1])  # different sounds, different embeddings


def test_hf_backend_matches_the_model_called_directly(clap: HFClap) -> None:
    """The wrapper is the plain ClapModel call plus normalisation, batch size aside."""
    waves = [tone(1.5, 440), tone(2.0, 660, seed=3), tone(3.0, 220, seed=4)]
    one_by_one = clap.embed_audio(waves, batch_size=1, progress=False)
    batched = clap.embed_audio(waves, batch_size=3, progress=False)
    np.testing.assert_allclose(one_by_one, batched, atol=1e-5)
    with torch.no_grad():
        ref = clap.model.get_audio_features(**clap.audio_inputs(waves))
    ref = getattr(ref, "pooler_output", ref)
    np.testing.assert_allclose(batched, torch.nn.functional.normalize(ref, dim=-1).numpy(), atol=1e-5)
    t1 = clap.embed_text(CAPTIONS, batch_size=2, progress=False)
    t2 = clap.embed_text(CAPTIONS, batch_size=64, progress=False)  # padding must not change a row
    np.testing.assert_allclose(t1, t2, atol=1e-5)


def test_hf_backend_resamples_16k_input_to_the_model_rate(laion_rate_clap_dir: Path) -> None:
    """A LAION-style CLAP reads 48 kHz: 16 kHz input must be resampled, not reinterpreted."""
    import librosa

    emb = load_clap("hf", laion_rate_clap_dir)
    assert emb.sampling_rate == 48_000
    wave = tone(1.0, 440)
    got = emb.embed_audio([wave], progress=False)
    up = librosa.resample(wave, orig_sr=16_000, target_sr=48_000, res_type="soxr_hq")
    feats = emb.processor.feature_extractor([up], sampling_rate=48_000, return_tensors="pt")
    with torch.no_grad():
        ref = emb.model.get_audio_features(input_features=feats["input_features"])
    ref = torch.nn.functional.normalize(getattr(ref, "pooler_output", ref), dim=-1).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_empty_inputs_and_bad_backend(clap: HFClap) -> None:
    assert clap.embed_audio([], progress=False).shape == (0, 24)
    assert clap.embed_text([], progress=False).shape == (0, 24)
    with pytest.raises(ValueError, match="unknown CLAP backend"):
        load_clap("laion", "x")
    with pytest.raises(ValueError, match="mono waveform"):
        clap.embed_audio([np.zeros((2, 100), np.float32)], progress=False)


def test_msclap_missing_gives_an_actionable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "msclap", None)  # import msclap -> ImportError
    with pytest.raises(ImportError, match="pip install --no-deps msclap"):
        load_clap("msclap", "2023")


def test_shim_encode_plus_is_the_single_text_call() -> None:
    tok = build_clap_tokenizer(CAPTIONS * 5, 300)
    assert not hasattr(tok, "encode_plus")  # transformers 5 removed it
    shim_encode_plus(tok)
    got = tok.encode_plus(text="a dog barking", add_special_tokens=True, max_length=12,
                          padding="max_length", return_tensors="pt")
    ref = tok("a dog barking", max_length=12, padding="max_length", return_tensors="pt")
    assert torch.equal(got["input_ids"], ref["input_ids"]) and got["input_ids"].shape == (1, 12)


class _FakeMsclapWrapper:
    """Mimics msclap 1.3.4's CLAPWrapper surface that MSClap uses (no weights, no hub)."""

    def __init__(self, model_fp=None, version="2023", use_cuda=False) -> None:
        self.args = types.SimpleNamespace(sampling_rate=8000, duration=2, d_proj=6, text_len=10)
        self.use_cuda = use_cuda
        self.tokenizer = build_clap_tokenizer(CAPTIONS * 5, 300)
        self.seen_audio: list[torch.Tensor] = []
        torch.manual_seed(0)
        self.text_proj = torch.randn(10, 6)

    def _get_audio_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_audio.append(x)
        x = x.reshape(x.shape[0], x.shape[2])  # as msclap does: (batch, 1, samples) -> (batch, samples)
        return torch.stack([x.mean(1), x.std(1), x.abs().max(1).values, x[:, :100].mean(1),
                            x[:, -100:].mean(1), (x > 0).float().mean(1)], dim=1) * 3.0

    def get_text_embeddings(self, texts):
        rows = [self.tokenizer.encode_plus(text=t, add_special_tokens=True, max_length=self.args.text_len,
                                           padding="max_length", return_tensors="pt")["input_ids"].reshape(-1)
                for t in texts]
        return torch.stack(rows).float() @ self.text_proj


def test_msclap_backend_through_a_fake_package(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("msclap")
    fake.CLAP = _FakeMsclapWrapper
    monkeypatch.setitem(sys.modules, "msclap", fake)
    emb = load_clap("msclap", "2023")
    assert isinstance(emb, MSClap) and emb.dim == 6 and emb.name == "msclap-2023"
    short, long = tone(0.5, 300), tone(3.0, 300, seed=5)
    a = emb.embed_audio([short, long], progress=False)
    assert a.shape == (2, 6)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    x = emb.wrapper.seen_audio[0]
    assert x.shape == (2, 1, 2 * 8000)  # msclap's rate x its fixed duration
    # The 0.5 s clip is repeated (msclap's padding): its second half-second equals its first.
    torch.testing.assert_close(x[0, 0, :4000], x[0, 0, 4000:8000])
    t = emb.embed_text(CAPTIONS, progress=False)  # goes through the encode_plus shim
    assert t.shape == (5, 6)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)


def test_recall_at_k_recovers_a_planted_ranking() -> None:
    distinct = ["a", "b", "c", "d"]
    text = np.eye(4, dtype=np.float32)
    # clip 0 -> 'a' ranked first; clip 1 (gold 'b') ranks 'c' first, 'b' second; clip 2 (gold 'd') last.
    audio = np.array([[1, 0, 0, 0], [0, 0.8, 0.9, 0], [0.9, 0.8, 0.7, 0.1]], dtype=np.float32)
    res = recall_at_k(audio, text, ["a", "b", "d"], distinct, ks=(1, 2, 4))
    assert res.recall == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 4: 1.0}
    assert res.chance == {1: 0.25, 2: 0.5, 4: 1.0} and res.n_captions == 4


def test_distinct_caption_batches() -> None:
    import random

    caps = ["x"] * 10 + ["y"] * 5 + ["z"]
    idx = distinct_caption_batch(caps, 8, random.Random(0))
    assert len(idx) == 3 and sorted(caps[i] for i in idx) == ["x", "y", "z"]


SHIPPED = REPO / "assets" / "models" / "tiny-clap"
MANIFEST = REPO / "assets" / "corpus" / "manifest.csv"


@pytest.mark.skipif(not (SHIPPED / "config.json").is_file() or not MANIFEST.is_file(),
                    reason="shipped tiny CLAP or mini corpus not built (python -m forge tiny-clap)")
def test_shipped_tiny_clap_loads_offline_and_retrieves_above_chance(monkeypatch: pytest.MonkeyPatch) -> None:
    from ard_core.audio import iter_audio
    from ard_core.datasets import load_manifest
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    emb = load_clap("hf", SHIPPED)
    recs = [r for r in load_manifest(MANIFEST) if r.split == "test" and "animal" in r.labels]
    clips = list(iter_audio(recs))
    res = evaluate_clap(emb, [c.record for c in clips], [c.audio for c in clips], ks=(1, 5), progress=False)
    # 10 animal captions (+ noisy variants): chance R@1 is about 1/n_captions.
    assert res.recall[1] > 3 * res.chance[1]


def test_tiny_clap_training_runs_and_saves_a_loadable_model(tmp_path: Path) -> None:
    from safetensors import safe_open

    from ard_core.audio import save_audio
    from ard_core.datasets import ClipRecord

    recs = []
    for i in range(24):
        kind = ("dog", "cat", "cow")[i % 3]
        path = tmp_path / f"c{i}.wav"
        save_audio(path, tone(1.0 + 0.1 * (i % 4), 300.0 + 500.0 * (i % 3), seed=i))
        recs.append(ClipRecord(f"c{i}", path, "synth", "train", 1.0, {"animal": kind}, f"a {kind} sound"))
    cfg = TinyClapConfig(out_dir=tmp_path / "clap", audio_steps=20, steps=25, batch_size=3, warmup_steps=3,
                         n_mels=32, audio_width=16, text_hidden=32, text_layers=1, text_heads=2,
                         projection_dim=16, vocab_size=300, chunk_length_s=2)
    res = train_clap(cfg, seed=0, train_records=recs, progress=False)
    assert (res.audio_steps_done, res.steps_done) == (20, 25) and len(res.losses) == 25
    # The contrastive loss comes down from its random-init level (~2.7 here, ln 3 = 1.1 at chance
    # for 3 captions per batch): the loop, the distinct-caption batches and the optimiser are wired.
    assert np.mean(res.losses[-5:]) < np.mean(res.losses[:5]) - 0.5
    with safe_open(str(res.out_dir / "model.safetensors"), "pt") as f:
        assert not any("heads" in k for k in f.keys())  # training aids are not shipped
    emb = load_clap("hf", res.out_dir)
    assert emb.embed_audio([tone(1.0, 300)], progress=False).shape == (1, 16)
