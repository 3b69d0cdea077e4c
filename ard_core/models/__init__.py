"""AudioLLM adapters: one file per model family, all behind ``base.AudioLLM``.

``load_audiollm`` picks the adapter from the checkpoint's ``config.json``
``model_type`` (or ``family=`` when given), so the same call loads the embedded
tiny model from ``assets/models/tiny-audiollm`` and ``Qwen/Qwen2-Audio-7B-Instruct``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

from ard_core.models.base import AudioLLM
from ard_core.models.qwen2_audio import Qwen2AudioAdapter

log = logging.getLogger(__name__)

# model_type (from config.json) -> adapter loader(name_or_path, device, dtype)
ADAPTERS: dict[str, Callable[..., AudioLLM]] = {
    "qwen2_audio": Qwen2AudioAdapter.load,
}


def _model_type(name_or_path: str) -> str | None:
    cfg = Path(name_or_path) / "config.json"
    if cfg.is_file():
        return json.loads(cfg.read_text()).get("model_type")
    if "qwen2-audio" in name_or_path.lower():
        return "qwen2_audio"
    return None


def load_audiollm(
    name_or_path: str | Path, device: str = "cpu", dtype: str = "auto", family: str | None = None
) -> AudioLLM:
    """Load a checkpoint (local folder or hub id) through its family's adapter."""
    name = str(name_or_path)
    if device == "auto":
        from ard_core.config import resolve_device

        device = resolve_device(device)
    family = family or _model_type(name)
    if family is None:
        try:  # a hub id without a local config: ask transformers (may use the HF cache)
            from transformers import AutoConfig

            family = AutoConfig.from_pretrained(name).model_type
        except OSError as exc:
            raise OSError(
                f"cannot tell the model family of {name!r} (no local config.json, hub unreachable); "
                f"pass family= one of {sorted(ADAPTERS)}"
            ) from exc
    if family not in ADAPTERS:
        raise ValueError(f"no adapter for model_type {family!r}; available: {sorted(ADAPTERS)}")
    log.info("loading %s (%s) on %s", name, family, device)
    return ADAPTERS[family](name, device=device, dtype=dtype)


__all__ = ["ADAPTERS", "AudioLLM", "Qwen2AudioAdapter", "load_audiollm"]


from dataclasses import dataclass  # noqa: E402

from ard_core.config import ConfigError  # noqa: E402


@dataclass
class ModelConfig:
    """The ``[model]`` table: which AudioLLM to load and how."""

    name_or_path: str = "assets/models/tiny-audiollm"
    """Local folder (save_pretrained layout) or hub id, e.g. 'Qwen/Qwen2-Audio-7B-Instruct'."""
    dtype: str = "auto"
    """'auto' (bf16 on GPU, fp32 on CPU), 'float32', 'bfloat16' or 'float16'."""
    family: str | None = None
    """Adapter to use; None reads model_type from the checkpoint's config.json."""

    def __post_init__(self) -> None:
        if not self.name_or_path:
            raise ConfigError("[model].name_or_path is empty; give a local folder or a hub id")
        if self.dtype not in ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"):
            raise ConfigError(f"[model].dtype {self.dtype!r}: use auto, float32, bfloat16 or float16")
        if self.family is not None and self.family not in ADAPTERS:
            raise ConfigError(f"[model].family {self.family!r}: available adapters are {sorted(ADAPTERS)}")

    def load(self, device: str) -> AudioLLM:
        return load_audiollm(self.name_or_path, device=device, dtype=self.dtype, family=self.family)


__all__ += ["ModelConfig"]
