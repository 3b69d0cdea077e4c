"""Shared fixtures: a tiny random Qwen2-Audio built from configs (no downloads),
synthetic audio, and a temporary catalog."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"]


def build_tiny_qwen2_audio(folder: Path, n_layers: int = 4, d_model: int = 32, seed: int = 0) -> Path:
    """Save a random tiny Qwen2-Audio (model + processor) to ``folder``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [
        "system You are a helpful assistant. user assistant Audio 1: ",
        "What is the gender of the speaker in the speech? The speaker's gender is male female",
        "Generate a detailed caption for the audio clip. a dog barking a woman speaking",
    ]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_input_names=["input_ids", "attention_mask"],
        additional_special_tokens=SPECIALS[1:],
    )
    fe = WhisperFeatureExtractor(feature_size=128, chunk_length=2, sampling_rate=16000)
    processor = Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tokenizer)
    vocab = len(tokenizer)
    config = Qwen2AudioConfig(
        audio_config=dict(d_model=d_model, encoder_layers=1, encoder_attention_heads=2,
                          encoder_ffn_dim=2 * d_model, num_mel_bins=128, max_source_positions=100),
        text_config=dict(model_type="qwen2", vocab_size=vocab, hidden_size=d_model,
                         intermediate_size=2 * d_model, num_hidden_layers=n_layers,
                         num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=False),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


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

def build_tiny_clap(folder: Path, seed: int = 0) -> Path:
    """Save a random tiny LAION-style ClapModel (+ processor) to ``folder``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(["a man speaking", "a woman speaking", "a dog barking", "a siren wailing"],
                            trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    tokenizer = RobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                     unk_token="<unk>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")
    # 32 mel bins and spec_size 128: HTSAT folds time into frequency by 128 // 32 = 4, so up to
    # 512 frames (~5 s at hop 480 / 48 kHz) fit; "rand_trunc" gives the 1-channel input.
    fe = ClapFeatureExtractor(feature_size=32, sampling_rate=48000, max_length_s=2, fft_window_size=1024,
                              hop_length=480, truncation="rand_trunc", padding="repeatpad")
    config = ClapConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=66, pad_token_id=tokenizer.pad_token_id),
        audio_config=dict(num_mel_bins=32, spec_size=128, patch_size=4, patch_stride=[4, 4], window_size=4,
                          patch_embeds_hidden_size=16, depths=[1, 1], num_attention_heads=[2, 2], hidden_size=32,
                          enable_fusion=False),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    ClapModel(config).eval().save_pretrained(folder)
    ClapProcessor(feature_extractor=fe, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clap_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clap(tmp_path_factory.mktemp("tiny-clap"))
