"""Recipe of the embedded tiny Qwen2-Audio: tokenizer, processor, config, model.

Every piece is the transformers class the real ``Qwen/Qwen2-Audio-7B-Instruct``
uses (``Qwen2Tokenizer``, ``WhisperFeatureExtractor`` with 128 mel bins,
``Qwen2AudioProcessor`` and its chat template, ``Qwen2AudioForConditionalGeneration``),
so ``load_audiollm("assets/models/tiny-audiollm")`` runs the same code path as
the 7B checkpoint. What differs is size:

- the tokenizer is a byte-level BPE trained here (``tokenizers``) on the prompt
  and caption texts, with Qwen2's pre-tokenizer regex and Qwen2-Audio's special
  tokens; every label is forced to be one token in its leading-space form
  (" male", " English", " dog") so the logit lens reads it cleanly;
- the audio encoder's length (``max_source_positions``) and the feature
  extractor's ``chunk_length`` are cut from Whisper's 30 s to the corpus's clip
  length; the encoder requires the two to agree (2 mel frames per position,
  100 frames per second);
- the text decoder has ``text_layers`` layers (8 in the shipped model, so that
  layer-wise curves have a shape; the tests build 4-layer ones from the same recipe).

The training itself lives in :mod:`forge.tiny_audiollm.train`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ard_core.config import ConfigError
from ard_core.prompts import CAPTION_QUESTION, attribute_prompt, p3_options

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
)
"""Qwen2-Audio's special tokens; '<|endoftext|>' pads, '<|im_end|>' ends a turn."""

SAMPLING_RATE = 16_000
MEL_FRAMES_PER_SECOND = 100  # Whisper hop of 160 samples at 16 kHz


@dataclass
class TinyArch:
    """Architecture of the tiny Qwen2-Audio (the ``[tiny_audiollm.arch]`` table)."""

    vocab_size: int = 1024
    """Target BPE vocabulary size (special tokens included)."""
    chunk_length_s: int = 3
    """Audio window in seconds: feature-extractor chunk length and encoder length (clips are padded/cut to it)."""
    audio_d_model: int = 128
    """Width of the audio encoder."""
    audio_layers: int = 4
    """Transformer layers of the audio encoder."""
    audio_heads: int = 4
    """Attention heads of the audio encoder."""
    audio_ffn: int = 512
    """Feed-forward width of the audio encoder."""
    text_hidden: int = 128
    """Width (residual stream) of the text decoder."""
    text_layers: int = 8
    """Decoder layers; the shipped model has 8 so the layer-wise lens curves have a shape."""
    text_heads: int = 4
    """Query heads of the text decoder."""
    text_kv_heads: int = 2
    """Key/value heads of the text decoder (grouped-query attention like Qwen2)."""
    text_ffn: int = 384
    """Feed-forward (SwiGLU) width of the text decoder."""
    max_positions: int = 512
    """Longest text sequence (audio tokens included) the decoder is built for."""

    def __post_init__(self) -> None:
        for key in ("vocab_size", "chunk_length_s", "audio_d_model", "audio_layers", "audio_heads",
                    "audio_ffn", "text_hidden", "text_layers", "text_heads", "text_kv_heads",
                    "text_ffn", "max_positions"):
            if int(getattr(self, key)) <= 0:
                raise ConfigError(f"[tiny_audiollm.arch].{key} must be a positive integer")
        if self.audio_d_model % self.audio_heads:
            raise ConfigError("[tiny_audiollm.arch].audio_d_model must be divisible by audio_heads")
        if self.text_hidden % self.text_heads or self.text_heads % self.text_kv_heads:
            raise ConfigError("[tiny_audiollm.arch]: text_hidden must be divisible by text_heads, "
                              "and text_heads by text_kv_heads")
        if self.vocab_size < 512:
            raise ConfigError("[tiny_audiollm.arch].vocab_size must be >= 512 (256 bytes + merges)")

    @property
    def max_source_positions(self) -> int:
        """Encoder positions: the conv stem halves the mel frames (stride 2)."""
        return self.chunk_length_s * MEL_FRAMES_PER_SECOND // 2


# -- tokenizer ---------------------------------------------------------------------

def chat_texts() -> list[str]:
    """The fixed text of Qwen2-Audio's chat template, so the tokenizer learns it."""
    return [
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",
        "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n",
        "<|im_end|>\n<|im_start|>assistant\n",
    ]


def tokenizer_texts(label_sets: Mapping[str, Sequence[str]], captions: Iterable[str],
                    label_repeats: int = 200) -> list[str]:
    """Training text for the BPE: chat template, every prompt, captions, and the labels.

    Labels are repeated ``label_repeats`` times in their leading-space form so
    that BPE merges each into one token (checked by :func:`check_single_token_labels`).
    """
    texts = chat_texts() * 20
    for track, labels in label_sets.items():
        opts = p3_options(track, labels)
        for fmt in ("P1", "P2", "P3"):
            p = attribute_prompt(track, fmt, opts)
            texts += [f"{p.question} {p.prefix}"] * 20
        if track == "emotion":
            p = attribute_prompt(track, "P3n", opts)
            texts += [f"{p.question} {p.prefix}"] * 20
        texts += [" ".join(f" {label}" for label in labels)] * label_repeats
    texts += [CAPTION_QUESTION] * 20
    texts += list(captions)
    return texts


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> "object":
    """A ``Qwen2Tokenizer`` whose byte-level BPE is trained on ``texts``."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    # Same normalizer and pre-tokenizer as Qwen2Tokenizer builds, so the trained
    # merges mean what they will mean once wrapped.
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    # Special tokens would be split into bytes by the trainer; the template text is
    # learned without them.
    plain = [t for text in texts for t in _strip_specials(text)]
    bpe.train_from_iterator(plain, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return Qwen2Tokenizer(
        vocab=model["vocab"], merges=merges,
        eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>",
        extra_special_tokens=list(SPECIAL_TOKENS[1:]),
        # Without this the tokenizer may emit token_type_ids, which the model's forward rejects.
        model_input_names=["input_ids", "attention_mask"],
    )


def _strip_specials(text: str) -> list[str]:
    parts = [text]
    for tok in SPECIAL_TOKENS:
        parts = [q for p in parts for q in p.split(tok)]
    return [p for p in parts if p]


def check_single_token_labels(tokenizer: object, label_sets: Mapping[str, Sequence[str]]) -> None:
    """Raise ValueError unless every label is exactly one token with its leading space."""
    bad = []
    for track, labels in label_sets.items():
        for label in labels:
            ids = tokenizer.encode(" " + label, add_special_tokens=False)
            if len(ids) != 1:
                bad.append(f"{track}:{label!r} -> {tokenizer.convert_ids_to_tokens(ids)}")
    if bad:
        raise ValueError("labels that are not one token in the tiny tokenizer (raise "
                         f"[tiny_audiollm.arch].vocab_size or label_repeats): {bad}")


# -- processor, config, model ---------------------------------------------------------

def build_processor(tokenizer: object, arch: TinyArch) -> "object":
    """``Qwen2AudioProcessor`` = Whisper features (128 mel, short chunk) + the tokenizer."""
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=SAMPLING_RATE,
                                 chunk_length=arch.chunk_length_s, padding_value=0.0)
    # chat_template=None -> Qwen2-Audio's own template (system turn, "Audio 1: ..." line).
    return Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tokenizer)


def build_config(arch: TinyArch, tokenizer: object) -> "object":
    """A ``Qwen2AudioConfig`` for ``arch``; the vocabulary comes from ``tokenizer``."""
    from transformers import Qwen2AudioConfig

    audio = dict(
        model_type="qwen2_audio_encoder", num_mel_bins=128, d_model=arch.audio_d_model,
        encoder_layers=arch.audio_layers, encoder_attention_heads=arch.audio_heads,
        encoder_ffn_dim=arch.audio_ffn, max_source_positions=arch.max_source_positions,
    )
    text = dict(
        model_type="qwen2", vocab_size=len(tokenizer), hidden_size=arch.text_hidden,
        intermediate_size=arch.text_ffn, num_hidden_layers=arch.text_layers,
        num_attention_heads=arch.text_heads, num_key_value_heads=arch.text_kv_heads,
        max_position_embeddings=arch.max_positions, tie_word_embeddings=False,
        rms_norm_eps=1e-6, rope_theta=10000.0,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )
    return Qwen2AudioConfig(audio_config=audio, text_config=text,
                            audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"))


def build_model(config: object, seed: int) -> "object":
    """A freshly initialised ``Qwen2AudioForConditionalGeneration`` (seeded)."""
    import torch
    from transformers import Qwen2AudioForConditionalGeneration

    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(config)
    ids = [config.text_config.eos_token_id, config.text_config.pad_token_id]
    model.generation_config.eos_token_id = ids  # stop at <|im_end|> or <|endoftext|>
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    return model


def save_tiny(model: object, processor: object, folder: Path) -> Path:
    """``save_pretrained`` of model and processor into one folder (loads with ``load_audiollm``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def n_audio_tokens(n_mel_frames: int) -> int:
    """Audio tokens for ``n_mel_frames`` real frames; mirrors ``Qwen2AudioProcessor``."""
    return (((n_mel_frames - 1) // 2 + 1) - 2) // 2 + 1
