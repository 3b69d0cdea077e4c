"""A model's shapes without its weights: build it on PyTorch's ``meta`` device from its config.

``python -m precompute plan`` needs the number of decoder layers, the width of the residual
stream, the parameter counts (text decoder vs audio encoder, for FLOP estimates), the audio
token id and the audio window before any weights are downloaded. They come from the
checkpoint's ``config.json`` and ``preprocessor_config.json``, found (in this order) in the
local folder ``[model].name_or_path`` names, or in ``configs/models/<name>/`` where a copy of a
published model's config ships with the repository (``Qwen/Qwen2-Audio-7B-Instruct`` ->
``configs/models/qwen2-audio-7b-instruct``). The model is then built on the ``meta`` device:
every tensor has its shape and no storage, so the 7B builds in a fraction of a second, and the
adapter's own module lookup (:func:`~ard_core.models.qwen2_audio.resolve_text_modules`) runs on
it, as it will on the real weights.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

from ard_core.config import ConfigError
from ard_core.models.qwen2_audio import _short_name, audio_token_count, audio_token_id_of, resolve_text_modules

SHIPPED_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "models"
"""Copies of published models' config files (no weights), one folder per model."""

AUDIO_TOKEN = "<|AUDIO|>"


class ModelShape(NamedTuple):
    """What a run needs to know about a model before loading it."""

    name: str
    """Short name used in SAE ids (e.g. 'qwen2-audio-7b-instruct')."""
    config_dir: Path
    """Folder whose config.json (and preprocessor_config.json) the shapes were built from."""
    n_layers: int
    """Decoder layers the adapter resolved (hook points 0..n_layers-1)."""
    d_model: int
    """Width of the residual stream (what an SAE of any layer reads)."""
    params: int
    """All parameters."""
    audio_params: int
    """Parameters of the audio encoder and its projector."""
    embed_params: int
    """Parameters of the input embedding (a lookup: no FLOPs)."""
    audio_token_id: int
    """Id of the audio placeholder token; one per audio embedding position."""
    vocab_rows: int
    """Rows of the input embedding (the audio token id must be one of them)."""
    sampling_rate: int
    """Audio sampling rate of the feature extractor."""
    hop_length: int
    """Samples per mel frame."""
    window_s: float
    """Audio window: clips are padded or cut to it (30 s for Whisper-style encoders)."""
    encoder_positions: int
    """Positions of the audio encoder (it runs on the whole padded window, whatever the clip's length)."""

    @property
    def text_flop_params(self) -> int:
        """Parameters a decoder position multiplies through (decoder layers and LM head, not the lookup)."""
        return self.params - self.audio_params - self.embed_params

    @property
    def max_audio_tokens(self) -> int:
        return self.audio_tokens(self.window_s)

    def audio_tokens(self, seconds: float) -> int:
        """Audio positions of a clip of ``seconds``: mel frames, halved by the encoder's stride-2
        convolution and again by its pooling (Qwen2AudioProcessor's count); 25 per second, 750 at 30 s."""
        return audio_token_count(min(float(seconds), self.window_s) * self.sampling_rate, self.hop_length)


def find_config_dir(name_or_path: str) -> Path:
    """The local folder, or the shipped copy for a hub id, holding the model's config.json."""
    local = Path(name_or_path)
    if (local / "config.json").is_file():
        return local
    shipped = SHIPPED_CONFIGS / _short_name(name_or_path)
    if (shipped / "config.json").is_file():
        return shipped
    raise ConfigError(
        f"[model].name_or_path {name_or_path!r}: no config.json in that folder and no shipped copy in "
        f"{shipped}; download the model's config.json and preprocessor_config.json (no weights needed) "
        "into a folder and point --set model.name_or_path at it"
    )


def meta_shape(name_or_path: str, family: str | None = None) -> ModelShape:
    """Build the model named by ``name_or_path`` on the meta device and read its shapes."""
    import torch
    from transformers import AutoConfig, WhisperFeatureExtractor

    config_dir = find_config_dir(name_or_path)
    model_type = family or json.loads((config_dir / "config.json").read_text()).get("model_type")
    if model_type != "qwen2_audio":
        raise ConfigError(f"{config_dir / 'config.json'}: model_type {model_type!r}; plan knows the "
                          "qwen2_audio family only (add its shapes to ard_core/models/meta.py)")
    from transformers import Qwen2AudioForConditionalGeneration

    cfg = AutoConfig.from_pretrained(config_dir)
    with torch.device("meta"):
        model = Qwen2AudioForConditionalGeneration._from_config(cfg)
    text = resolve_text_modules(model)  # the adapter's hook points, as on the real weights
    if not any((config_dir / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
        raise ConfigError(f"{config_dir} has no preprocessor_config.json (the feature extractor's window "
                          "and hop length); copy it from the checkpoint")
    fe = WhisperFeatureExtractor.from_pretrained(config_dir)  # transformers 5 also reads processor_config.json
    audio = sum(p.numel() for n, p in model.named_parameters() if "audio_tower" in n or "multi_modal_projector" in n)
    embed = model.get_input_embeddings().weight
    return ModelShape(
        name=_short_name(name_or_path), config_dir=config_dir, n_layers=len(text.layers),
        d_model=int(text.lm_head.in_features), params=sum(p.numel() for p in model.parameters()),
        audio_params=audio, embed_params=embed.numel(), audio_token_id=audio_token_id_of(model.config),
        vocab_rows=int(embed.shape[0]), sampling_rate=int(fe.sampling_rate), hop_length=int(fe.hop_length),
        window_s=float(fe.chunk_length), encoder_positions=int(cfg.audio_config.max_source_positions),
    )


def check_shape(shape: ModelShape) -> list[str]:
    """Problems that would stop a run on this model: the audio token outside the vocabulary, an
    encoder whose length disagrees with the feature extractor's window, a tokenizer whose audio
    token is not the config's."""
    problems = []
    if not 0 <= shape.audio_token_id < shape.vocab_rows:
        problems.append(f"audio token id {shape.audio_token_id} is outside the {shape.vocab_rows}-row embedding")
    frames = round(shape.window_s * shape.sampling_rate / shape.hop_length)
    if frames != 2 * shape.encoder_positions:
        problems.append(f"the feature extractor's {shape.window_s:g} s window gives {frames} mel frames, but the "
                        f"audio encoder has {shape.encoder_positions} positions (needs {frames // 2})")
    if any((shape.config_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        from transformers import AutoTokenizer

        got = AutoTokenizer.from_pretrained(shape.config_dir).convert_tokens_to_ids(AUDIO_TOKEN)
        if got != shape.audio_token_id:
            problems.append(f"the tokenizer maps {AUDIO_TOKEN} to {got}, the config says {shape.audio_token_id}")
    return problems
