"""CLAP audio-text embedders behind one interface.

AR&D ranks clips and names concepts with a contrastive audio-text model. Every
backend here answers the same two calls, with L2-normalised rows:

- ``embed_audio(waveforms) -> (N, D)`` for 16 kHz mono float waveforms (each backend
  resamples to its own rate);
- ``embed_text(texts) -> (N, D)``.

Backends (pick with :func:`load_clap`):

- ``hf``: any ``transformers.ClapModel`` folder or hub id (the embedded tiny CLAP in
  ``assets/models/tiny-clap``, ``laion/clap-htsat-unfused``, ...).
- ``msclap``: Microsoft CLAP (2022/2023, the AR&D paper's choice) from the optional
  ``msclap`` package, imported only when chosen. msclap 1.3.4 calls the tokenizer's
  ``encode_plus``, which transformers 5 removed; :func:`shim_encode_plus` puts it back.
  It also loads its text encoder (``gpt2``) from the hub, so it needs network or a
  warm Hugging Face cache.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from ard_core.catalog import Catalog

log = logging.getLogger(__name__)

INPUT_RATE = 16_000
"""Rate of the waveforms handed to ``embed_audio`` (the project's rate)."""

BACKENDS: tuple[str, ...] = ("hf", "msclap")


@runtime_checkable
class ClapEmbedder(Protocol):
    """What every backend exposes."""

    name: str
    """Short model name (for logs and catalog rows)."""
    dim: int
    """Embedding width D."""

    def embed_audio(self, waveforms: Sequence[np.ndarray], batch_size: int = 16,
                    progress: bool = True) -> np.ndarray:
        """(N, D) float32, L2-normalised rows, for 16 kHz mono waveforms."""

    def embed_text(self, texts: Sequence[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
        """(N, D) float32, L2-normalised rows."""


def _normalise(x: torch.Tensor) -> np.ndarray:
    x = x.detach().float().cpu()
    return torch.nn.functional.normalize(x, dim=-1).numpy().astype(np.float32)


def _resample(wave: np.ndarray, target: int) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"expected a non-empty mono waveform, got shape {wave.shape}")
    if target == INPUT_RATE:
        return wave
    import librosa

    return librosa.resample(wave, orig_sr=INPUT_RATE, target_sr=target, res_type="soxr_hq").astype(np.float32)


def _batches(n: int, batch_size: int, desc: str, progress: bool):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return tqdm(range(0, n, batch_size), desc=desc, disable=not progress or n <= batch_size, leave=False)


def _features(output: object) -> torch.Tensor:
    """transformers 4.x returns the projected tensor; 5.x an output whose pooler_output holds it."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


class HFClap:
    """A ``transformers.ClapModel`` with its processor (feature extractor + tokenizer)."""

    def __init__(self, model: torch.nn.Module, processor: object, name: str) -> None:
        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.sampling_rate = int(processor.feature_extractor.sampling_rate)
        self.dim = int(model.config.projection_dim)
        # Roberta positions start after the padding index, hence the -2.
        self.max_text_tokens = int(model.config.text_config.max_position_embeddings) - 2

    @classmethod
    def load(cls, name_or_path: str | Path, device: str = "cpu") -> "HFClap":
        from transformers import ClapModel, ClapProcessor

        try:
            model = ClapModel.from_pretrained(str(name_or_path))
            processor = ClapProcessor.from_pretrained(str(name_or_path))
        except OSError as exc:
            raise OSError(f"could not load CLAP model {str(name_or_path)!r}: {exc}. Give a folder made by "
                          "save_pretrained or a hub id with network access (or a warm HF cache).") from exc
        return cls(model.to(device), processor, Path(str(name_or_path).rstrip("/")).name.lower())

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def audio_inputs(self, waveforms: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """Feature-extractor output for 16 kHz waveforms, on the model's device."""
        waves = [_resample(w, self.sampling_rate) for w in waveforms]
        feats = self.processor.feature_extractor(waves, sampling_rate=self.sampling_rate, return_tensors="pt")
        return {k: v.to(self.device) for k, v in feats.items() if isinstance(v, torch.Tensor)}

    def text_inputs(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        tok = self.processor.tokenizer(list(texts), padding=True, truncation=True,
                                       max_length=self.max_text_tokens, return_tensors="pt")
        return {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}

    def embed_audio(self, waveforms: Sequence[np.ndarray], batch_size: int = 16,
                    progress: bool = True) -> np.ndarray:
        return self._embed(waveforms, batch_size, "audio", progress,
                           lambda b: self.model.get_audio_features(**self.audio_inputs(b)))

    def embed_text(self, texts: Sequence[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
        return self._embed(texts, batch_size, "text", progress,
                           lambda b: self.model.get_text_features(**self.text_inputs(b)))

    def _embed(self, items: Sequence, batch_size: int, what: str, progress: bool,
               forward: Callable[[Sequence], object]) -> np.ndarray:
        """(N, D) L2-normalised embeddings of ``items``, ``batch_size`` at a time."""
        out = []
        for s in _batches(len(items), batch_size, f"{self.name} {what}", progress):
            with torch.no_grad():
                out.append(_normalise(_features(forward(items[s:s + batch_size]))))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def shim_encode_plus(tokenizer: object) -> object:
    """Give ``tokenizer`` the ``encode_plus`` msclap calls (removed in transformers 5).

    ``encode_plus(text=..., **kwargs)`` was the single-text form of ``__call__``.
    """
    if not hasattr(tokenizer, "encode_plus"):
        def encode_plus(text: str, text_pair: str | None = None, **kwargs: object) -> object:
            return tokenizer(text, text_pair, **kwargs)

        tokenizer.encode_plus = encode_plus
    return tokenizer


class MSClap:
    """Microsoft CLAP through the ``msclap`` package (optional extra)."""

    def __init__(self, wrapper: object, name: str) -> None:
        self.wrapper = wrapper
        self.name = name
        shim_encode_plus(wrapper.tokenizer)
        self.sampling_rate = int(wrapper.args.sampling_rate)
        self.duration_s = float(wrapper.args.duration)
        self.dim = int(wrapper.args.d_proj)

    @classmethod
    def load(cls, name_or_path: str | Path | None = "2023", device: str = "cpu") -> "MSClap":
        """``name_or_path``: a version ('2022', '2023') or a local weights file (version 2023)."""
        try:
            from msclap import CLAP
        except ImportError as exc:
            raise ImportError(
                "the 'msclap' CLAP backend needs the msclap package, which is not installed. Install it "
                "without its pins (they want transformers<5 and a CUDA torchaudio): "
                "`pip install --no-deps msclap torchlibrosa pyyaml` (plus a torchaudio that matches "
                "your torch), or use backend 'hf' (e.g. assets/models/tiny-clap)."
            ) from exc
        use_cuda = device.startswith("cuda")
        value = str(name_or_path or "2023")
        if Path(value).is_file():
            wrapper, name = CLAP(model_fp=value, version="2023", use_cuda=use_cuda), "msclap-2023"
        else:
            wrapper, name = CLAP(version=value, use_cuda=use_cuda), f"msclap-{value}"
        return cls(wrapper, name)

    def audio_tensor(self, waveforms: Sequence[np.ndarray]) -> torch.Tensor:
        """(batch, 1, samples) at msclap's rate, repeated or cut to its fixed duration.

        msclap pads short clips by repetition and crops long ones at a random
        offset; here the crop is centred so embeddings are deterministic.
        """
        n = int(round(self.duration_s * self.sampling_rate))
        rows = []
        for w in waveforms:
            x = _resample(w, self.sampling_rate)
            if x.size < n:
                x = np.tile(x, int(np.ceil(n / x.size)))[:n]
            else:
                start = (x.size - n) // 2
                x = x[start:start + n]
            rows.append(torch.from_numpy(np.ascontiguousarray(x)).reshape(1, -1))
        batch = torch.stack(rows)
        return batch.cuda() if self.wrapper.use_cuda and torch.cuda.is_available() else batch

    def embed_audio(self, waveforms: Sequence[np.ndarray], batch_size: int = 16,
                    progress: bool = True) -> np.ndarray:
        out = []
        for s in _batches(len(waveforms), batch_size, f"{self.name} audio", progress):
            out.append(_normalise(self.wrapper._get_audio_embeddings(self.audio_tensor(waveforms[s:s + batch_size]))))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def embed_text(self, texts: Sequence[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
        out = []
        for s in _batches(len(texts), batch_size, f"{self.name} text", progress):
            with torch.no_grad():
                out.append(_normalise(self.wrapper.get_text_embeddings(list(texts[s:s + batch_size]))))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def load_clap(backend: str, name_or_path: str | Path, device: str = "cpu") -> ClapEmbedder:
    """A CLAP embedder: ``backend`` 'hf' (ClapModel folder or hub id) or 'msclap' (version or weights file)."""
    if device == "auto":
        from ard_core.config import resolve_device

        device = resolve_device(device)
    if backend == "hf":
        return HFClap.load(name_or_path, device)
    if backend == "msclap":
        return MSClap.load(name_or_path, device)
    raise ValueError(f"unknown CLAP backend {backend!r}; use one of {BACKENDS}")


def similarity(audio_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
    """Cosine similarity (n_audio, n_text) of normalised embeddings."""
    return audio_emb @ text_emb.T


def embedder_name(backend: str, name_or_path: str | Path) -> str:
    """How the catalog's ``clip_embeddings`` names an embedder: ``BACKEND:MODEL``."""
    return f"{backend}:{name_or_path}"


def cached_audio_embeddings(cat: "Catalog", paths: dict[str, str], needed: set[str], backend: str,
                            name_or_path: str | Path, device: str) -> dict[str, np.ndarray]:
    """CLAP audio embeddings of the ``needed`` clips (``paths``: clip id -> audio file), from the
    catalog's ``clip_embeddings`` cache; the missing ones are computed (CLAP loaded only then) and cached.
    Returns every cached embedding of this embedder, the needed ones included."""
    from ard_core.audio import load_audio
    from ard_core.catalog import ClipEmbeddingRow

    name = embedder_name(backend, name_or_path)
    have = {r["clip_id"]: np.asarray(r["embedding"], np.float32) for r in cat.query(
        "SELECT clip_id, embedding FROM clip_embeddings WHERE embedder = ?", [name])}
    missing = sorted(needed - set(have))
    if missing:
        clap = load_clap(backend, name_or_path, device=device)
        emb = clap.embed_audio([load_audio(paths[c]) for c in missing])
        cat.upsert([ClipEmbeddingRow(name, c, e.astype(np.float32).tolist()) for c, e in zip(missing, emb)])
        have.update(zip(missing, emb.astype(np.float32)))
    return have
