"""The tiny AudioLLM's training data: cached features, sampled tasks, and batches.

- :func:`compute_features`: Whisper log-mel features of every clip, computed once;
- :class:`TaskSampler`: asks clips the AudioLens questions and caption requests
  through the adapter's chat template (``AudioLLM.build_prompt``);
- :func:`collate`: expands the audio placeholder exactly as ``Qwen2AudioProcessor``
  does, so the cached features can be used (checked token for token at the start
  of training and in the tests);
- :func:`spec_augment`, and the model-side helpers of the loss:
  :func:`encoder_states`, :func:`masked_mean`, :func:`lm_loss`.
"""

from __future__ import annotations

import random
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ard_core.audio import iter_audio
from ard_core.datasets import ClipRecord
from ard_core.prompts import CAPTION_QUESTION, questions_for
from forge.measure import single_label
from forge.tiny_audiollm.recipe import n_audio_tokens


MEL_FRAMES_PER_S = 100  # Whisper's hop of 160 samples at 16 kHz


class Features(NamedTuple):
    """Cached Whisper log-mel features of a list of clips."""

    records: list[ClipRecord]
    audio: list[np.ndarray]  # 16 kHz waveforms (for evaluation through the adapter)
    mel: torch.Tensor  # (N, 128, frames) float16
    n_frames: torch.Tensor  # (N,) valid frames per clip
    sounding: dict[str, torch.Tensor]
    """track -> (N, frames) bool: the mel frames where the clip's label of that track sounds (its
    manifest spans; every valid frame when the clip has no spans for the track)."""


def sounding_frames(records: Sequence[ClipRecord], n_frames: torch.Tensor, width: int,
                    tracks: Sequence[str]) -> dict[str, torch.Tensor]:
    """Per track, a (N, width) mask of the frames inside the clip's spans of that track."""
    out = {}
    for track in tracks:
        mask = torch.zeros(len(records), width, dtype=torch.bool)
        for i, rec in enumerate(records):
            segs = rec.spans.get(track)
            if not segs:
                mask[i, : int(n_frames[i])] = True
                continue
            for a, b in segs:
                mask[i, int(a * MEL_FRAMES_PER_S): int(np.ceil(b * MEL_FRAMES_PER_S))] = True
        out[track] = mask
    return out


def token_mask(frames: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """(B, frames) frame mask -> (B, n_tokens): a token counts when any of its frames does."""
    per = frames.shape[1] // n_tokens
    return frames[:, : per * n_tokens].reshape(frames.shape[0], n_tokens, per).any(-1)


def compute_features(records: Sequence[ClipRecord], feature_extractor: object, desc: str) -> Features:
    """Decode every clip once and run the feature extractor (skips clips that fail to load)."""
    recs, waves, mels, lens = [], [], [], []
    for clip in tqdm(iter_audio(records), total=len(records), desc=f"features ({desc})"):
        out = feature_extractor(clip.audio, sampling_rate=feature_extractor.sampling_rate,
                                return_attention_mask=True, padding="max_length", return_tensors="np")
        recs.append(clip.record)
        waves.append(clip.audio)
        mels.append(torch.from_numpy(out["input_features"][0]).to(torch.float16))
        lens.append(int(out["attention_mask"][0].sum()))
    if not recs:
        raise ValueError(f"no clip of the {desc} split could be loaded")
    mel, n_frames = torch.stack(mels), torch.tensor(lens)
    tracks = sorted({t for r in recs for t in r.labels})
    return Features(recs, waves, mel, n_frames, sounding_frames(recs, n_frames, mel.shape[-1], tracks))


class PromptIds(NamedTuple):
    """A chat prompt (``AudioLLM.build_prompt`` text), tokenised, with its audio placeholder at ``audio_at``."""

    text: str
    ids: list[int]
    audio_at: int


class Example(NamedTuple):
    clip: int  # index into Features
    prompt: PromptIds
    answer: list[int]  # tokens the loss is taken on (answer + <|im_end|>)


class TaskSampler:
    """Draws training examples: a track (by ``track_weights``), a clip of it, one of its prompts."""

    def __init__(self, feats: Features, label_sets: dict[str, tuple[str, ...]], tokenizer: object,
                 build_prompt, caption_fraction: float, seed: int,
                 track_weights: dict[str, float] | None = None) -> None:
        self.rng = random.Random(seed)
        self.caption_fraction = caption_fraction
        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        audio_id = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
        cache: dict[tuple[str, str], PromptIds] = {}

        def tok_prompt(question: str, prefix: str) -> PromptIds:
            key = (question, prefix)
            if key not in cache:
                text = build_prompt(question, prefix or None)
                ids = tokenizer.encode(text, add_special_tokens=False)
                cache[key] = PromptIds(text, ids, ids.index(audio_id))
            return cache[key]

        self.by_track: dict[str, list[tuple[int, list[tuple[PromptIds, list[int]]]]]] = {}
        for track, options in label_sets.items():
            items = []
            for i, rec in enumerate(feats.records):
                label = single_label(rec, track)
                if label is None or label not in options:
                    continue
                answer = tokenizer.encode(" " + label, add_special_tokens=False) + [end]
                items.append((i, [(tok_prompt(p.question, p.prefix), answer)
                                  for p in questions_for(track, label, options)]))
            if items:
                self.by_track[track] = items
        self.captions = [(i, tokenizer.encode(r.caption, add_special_tokens=False) + [end])
                         for i, r in enumerate(feats.records) if r.caption.strip()]
        self.caption_prompt = tok_prompt(CAPTION_QUESTION, "")
        self.tracks = sorted(self.by_track)
        self.weights = [(track_weights or {}).get(t, 1.0) for t in self.tracks]

    def sample(self) -> Example:
        if self.captions and self.rng.random() < self.caption_fraction:
            i, answer = self.rng.choice(self.captions)
            return Example(i, self.caption_prompt, answer)
        track = self.rng.choices(self.tracks, weights=self.weights)[0]
        i, prompts = self.rng.choice(self.by_track[track])
        prompt, answer = self.rng.choice(prompts)
        return Example(i, prompt, answer)


def shift_mel(mel: torch.Tensor, k: int) -> torch.Tensor:
    """(n_mels, frames) moved up the mel axis by ``k`` bins (down if negative); the bins shifted in
    repeat the edge bin."""
    if k == 0:
        return mel
    out = torch.empty_like(mel)
    if k > 0:
        out[k:], out[:k] = mel[:-k], mel[:1]
    else:
        out[:k], out[k:] = mel[-k:], mel[-1:]
    return out


def spec_augment(mel: torch.Tensor, n_frames: torch.Tensor, gen: torch.Generator,
                 shift_bins: int = 0) -> torch.Tensor:
    """Two time masks (<= 10% of the clip) and two frequency masks (<= 12 bins) per clip; with
    ``shift_bins``, first a random shift of the mel axis by up to that many bins (a vocal-tract-length
    perturbation: every formant and the pitch move together by a few percent, so a voice never heard
    in training is nearer one that was)."""
    mel = mel.clone()
    b, n_mel, _ = mel.shape
    fill = mel.amin(dim=(1, 2))
    for j in range(b):
        if shift_bins:
            mel[j] = shift_mel(mel[j], int(torch.randint(-shift_bins, shift_bins + 1, (1,), generator=gen)))
        for _ in range(2):
            w = int(torch.randint(0, 13, (1,), generator=gen))
            f0 = int(torch.randint(0, n_mel - w + 1, (1,), generator=gen))
            mel[j, f0:f0 + w, :] = fill[j]
            t_max = max(1, int(n_frames[j]) // 10)
            w = int(torch.randint(0, t_max + 1, (1,), generator=gen))
            t0 = int(torch.randint(0, max(1, int(n_frames[j]) - w + 1), (1,), generator=gen))
            mel[j, :, t0:t0 + w] = fill[j]
    return mel


def collate(examples: Sequence[Example], feats: Features, pad_id: int, audio_id: int,
            augment: torch.Generator | None, shift_bins: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded batch with the audio placeholder expanded like ``Qwen2AudioProcessor``.

    ``answer_mask[b, t]`` marks the positions whose *next* token is an answer token.
    """
    idx = torch.tensor([e.clip for e in examples])
    n_frames = feats.n_frames[idx]
    rows, masks = [], []
    for e, nf in zip(examples, n_frames.tolist()):
        ids = e.prompt.ids
        full = ids[:e.prompt.audio_at] + [audio_id] * n_audio_tokens(nf) + ids[e.prompt.audio_at + 1:]
        rows.append(full + e.answer)
        masks.append([0] * (len(full) - 1) + [1] * len(e.answer) + [0])
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    answer_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for j, (r, m) in enumerate(zip(rows, masks)):
        input_ids[j, :len(r)] = torch.tensor(r)
        attention[j, :len(r)] = 1
        answer_mask[j, :len(m)] = torch.tensor(m, dtype=torch.bool)
    mel = feats.mel[idx].float()
    if augment is not None:
        mel = spec_augment(mel, n_frames, augment, shift_bins)
    frames = mel.shape[-1]
    return {
        "input_ids": input_ids, "attention_mask": attention, "input_features": mel,
        "feature_attention_mask": (torch.arange(frames)[None, :] < n_frames[:, None]).long(),
        "answer_mask": answer_mask, "clip_index": idx,
    }


def encoder_states(model: nn.Module, input_features: torch.Tensor,
                   feature_attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Audio-encoder output (batch, T, d) and valid lengths, masked as ``Qwen2AudioModel.forward`` masks it."""
    from transformers.masking_utils import create_bidirectional_mask

    tower = model.model.audio_tower
    conv_lengths, out_lengths = tower._get_feat_extract_output_lengths(feature_attention_mask.sum(-1))
    b, _, n_mel_frames = input_features.shape
    max_len = (n_mel_frames - 2) // 2 + 1
    mask_2d = (torch.arange(max_len)[None, :] < conv_lengths[:, None]).long()
    mask = create_bidirectional_mask(config=tower.config, inputs_embeds=torch.zeros(b, max_len, 1),
                                     attention_mask=mask_2d)
    return tower(input_features, attention_mask=mask).last_hidden_state, out_lengths


def masked_mean(states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    keep = (torch.arange(states.shape[1])[None, :] < lengths[:, None]).to(states.dtype)
    return (states * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1)


def lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """Per-example mean CE over answer tokens, averaged over examples (captions don't outweigh answers)."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (batch, seq-1)
    m = answer_mask[:, :-1].float()
    return ((nll * m).sum(1) / m.sum(1).clamp(min=1)).mean()
