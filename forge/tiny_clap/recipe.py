"""Recipe of the embedded tiny CLAP: tokenizer, processor, model.

The model is a ``transformers.ClapModel`` (HTSAT-style Swin audio encoder, RoBERTa
text encoder) with a small config, a byte-level BPE ``RobertaTokenizer`` trained
on the train captions, and a ``ClapFeatureExtractor`` at 16 kHz cut to the
corpus's clip length, all saved with ``save_pretrained`` so that
``ard_core.clap.load_clap("hf", "assets/models/tiny-clap")`` loads it like
``laion/clap-htsat-unfused``. The training is :mod:`forge.tiny_clap.train`.
"""

from __future__ import annotations

import json
from typing import Sequence

import torch

from forge.tiny_clap.config import TinyClapConfig

CLAP_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
"""RoBERTa's special tokens, in the id order ClapTextConfig expects (bos 0, pad 1, eos 2)."""


def build_clap_tokenizer(texts: Sequence[str], vocab_size: int) -> object:
    """A ``RobertaTokenizer`` (byte-level BPE) trained on ``texts``.

    With a prefix space, so a text's first word is the same token as anywhere else
    ("barking dogs" -> 'Ġbarking' as in "a dog barking"); without it a paraphrase that
    starts with a content word reads as an unseen token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import RobertaTokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(CLAP_SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(list(texts), trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return RobertaTokenizer(vocab=model["vocab"], merges=merges, add_prefix_space=True)


def build_clap_processor(tokenizer: object, cfg: TinyClapConfig) -> object:
    """``ClapProcessor`` at 16 kHz: 10 ms hop, ``n_mels`` bins, one ``chunk_length_s`` crop."""
    from transformers import ClapFeatureExtractor, ClapProcessor

    fe = ClapFeatureExtractor(
        feature_size=cfg.n_mels, sampling_rate=16_000, hop_length=160, fft_window_size=400,
        max_length_s=cfg.chunk_length_s, frequency_min=50, frequency_max=8000,
        # rand_trunc + repeatpad: one channel (no fusion), short clips repeated to fill.
        truncation="rand_trunc", padding="repeatpad",
    )
    return ClapProcessor(feature_extractor=fe, tokenizer=tokenizer)


def build_clap_model(cfg: TinyClapConfig, tokenizer: object, seed: int) -> object:
    """A freshly initialised ``ClapModel`` (seeded) for ``cfg``; the vocabulary comes from ``tokenizer``."""
    from transformers import ClapConfig, ClapModel

    widths = [cfg.audio_width * 2 ** i for i in range(4)]
    config = ClapConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=cfg.text_hidden, num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.text_heads, intermediate_size=2 * cfg.text_hidden,
            max_position_embeddings=cfg.max_text_tokens + 2, projection_dim=cfg.projection_dim,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ),
        audio_config=dict(
            spec_size=4 * cfg.n_mels, num_mel_bins=cfg.n_mels, patch_size=4, patch_stride=[4, 4],
            # The last Swin stage sees a (n_mels / 8)^2 grid; window 4 divides every stage's grid.
            window_size=4, patch_embeds_hidden_size=cfg.audio_width, hidden_size=widths[-1],
            depths=list(cfg.audio_depths), num_attention_heads=[max(1, w // 16) for w in widths],
            projection_dim=cfg.projection_dim, enable_fusion=False,
        ),
        projection_dim=cfg.projection_dim,
    )
    torch.manual_seed(seed)
    return ClapModel(config)
