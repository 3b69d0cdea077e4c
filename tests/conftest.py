"""Shared fixtures: a tiny random Qwen2-Audio and a tiny random CLAP built by the shipped
models' recipes (``forge``) at test size (no downloads), and synthetic audio."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def build_tiny_qwen2_audio(folder: Path, n_layers: int = 4, d_model: int = 32, seed: int = 0,
                           chunk_length_s: int = 2, max_positions: int = 512) -> Path:
    """Save a random tiny Qwen2-Audio (model + processor) to ``folder``: the shipped model's recipe
    (:mod:`forge.tiny_audiollm.recipe`) at test size, with a tokenizer trained on the prompts of
    the speech tracks so that every speech label is one token. ``chunk_length_s`` = 30 gives the
    real model's audio window (750 audio tokens)."""
    from ard_core.datasets import LABEL_VOCAB
    from forge.tiny_audiollm.recipe import (
        TinyArch, build_config, build_model, build_processor, check_single_token_labels, save_tiny, tokenizer_texts,
        train_tokenizer,
    )

    arch = TinyArch(vocab_size=512, chunk_length_s=chunk_length_s, audio_d_model=d_model, audio_layers=1,
                    audio_heads=2, audio_ffn=2 * d_model, text_hidden=d_model, text_layers=n_layers, text_heads=4,
                    text_kv_heads=2, text_ffn=2 * d_model, max_positions=max_positions)
    captions = ["a dog barking", "a man speaking English", "a woman speaking German in a sad voice"]
    tokenizer = train_tokenizer(tokenizer_texts(LABEL_VOCAB, captions, label_repeats=20), arch.vocab_size)
    check_single_token_labels(tokenizer, LABEL_VOCAB)
    model = build_model(build_config(arch, tokenizer), seed).eval()
    return save_tiny(model, build_processor(tokenizer, arch), folder)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny-qwen2-audio"))


@pytest.fixture(scope="session")
def tiny_llm(tiny_model_dir: Path):
    from ard_core.models import load_audiollm

    return load_audiollm(tiny_model_dir, device="cpu")


def tone(seconds: float, freq: float = 440.0, sr: int = 16000, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    """A sine with a little noise: synthetic audio for tests."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(t.size)).astype(np.float32)


def gender_tone_manifest(folder: Path, name: str = "manifest.csv", n: int = 24) -> Path:
    """``n`` short tones of varied pitch, length and noise, labelled male/female in turn and spread
    over train/probe/test: a manifest small enough for whole-stage tests."""
    import soundfile as sf

    from ard_core.datasets import ClipRecord, save_manifest

    recs = []
    for i in range(n):
        p = folder / f"c{i:02d}.wav"
        sf.write(p, tone(0.5 + 0.1 * (i % 5), 120 + 60 * i, noise=0.02 * (i % 3), seed=i), 16000)
        recs.append(ClipRecord(f"c{i:02d}", p, "t", ["train", "probe", "test"][i % 3], 0.5,
                               {"gender": ["male", "female"][i % 2]}, ["a man", "a woman"][i % 2] + " speaking"))
    return save_manifest(recs, folder / name)

CLAP_CAPTIONS = ["a man speaking", "a woman speaking", "a dog barking", "a cat meowing", "a siren wailing",
                 "a man speaking English", "rain falling"]


def build_tiny_clap(folder: Path, seed: int = 0) -> Path:
    """Save a random tiny CLAP (model + 16 kHz processor) to ``folder``: the shipped model's recipe
    (:mod:`forge.tiny_clap.recipe`) at test size; loads with ``load_clap("hf", folder)``."""
    from forge.tiny_clap.config import TinyClapConfig
    from forge.tiny_clap.recipe import build_clap_model, build_clap_processor, build_clap_tokenizer

    cfg = TinyClapConfig(n_mels=32, audio_width=16, text_hidden=32, text_layers=1, text_heads=2,
                         projection_dim=24, vocab_size=300)
    tokenizer = build_clap_tokenizer(CLAP_CAPTIONS * 5, cfg.vocab_size)
    build_clap_model(cfg, tokenizer, seed).eval().save_pretrained(folder)
    build_clap_processor(tokenizer, cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clap_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clap(tmp_path_factory.mktemp("tiny-clap"))
