"""Training pieces shared by the tiny models' stages (``train-tiny-audiollm``, ``train-tiny-clap``).

- data: label sets of a corpus, Whisper log-mel features computed once, a task
  sampler that asks clips the AudioLens questions and caption requests through
  the adapter's chat template, and a collate that expands the audio placeholder
  exactly as ``Qwen2AudioProcessor`` does (so cached features can be used);
- auxiliary heads: per-track linear classifiers on an audio encoder's pooled (and
  per-token) output, the signal that lets a from-scratch encoder learn the harder
  tracks in minutes; they are training aids and never saved;
- schedule: cosine learning rate driven by the larger of step and wall-clock progress.
"""

from __future__ import annotations

import math
import random
import time
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ard_core.attribute_eval import single_label
from ard_core.audio import iter_audio
from ard_core.datasets import LABEL_VOCAB, TRACKS, ClipRecord
from ard_core.models.tiny_recipe import n_audio_tokens
from ard_core.prompts import CAPTION_QUESTION, p3_options, questions_for


# -- data -----------------------------------------------------------------------------

def corpus_label_sets(records: Sequence[ClipRecord]) -> dict[str, tuple[str, ...]]:
    """Track -> label set in P3 order: closed vocabularies whole, open tracks as found."""
    out: dict[str, tuple[str, ...]] = {}
    for track in TRACKS:
        present = {lab for r in records if (lab := single_label(r, track))}
        if not present:
            continue
        out[track] = p3_options(track, LABEL_VOCAB.get(track, ()) or sorted(present))
    return out


class Features(NamedTuple):
    """Cached Whisper log-mel features of a list of clips."""

    records: list[ClipRecord]
    audio: list[np.ndarray]  # 16 kHz waveforms (for evaluation through the adapter)
    mel: torch.Tensor  # (N, 128, frames) float16
    n_frames: torch.Tensor  # (N,) valid frames per clip


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
    return Features(recs, waves, torch.stack(mels), torch.tensor(lens))


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


def spec_augment(mel: torch.Tensor, n_frames: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Two time masks (<= 10% of the clip) and two frequency masks (<= 12 bins) per clip."""
    mel = mel.clone()
    b, n_mel, _ = mel.shape
    fill = mel.amin(dim=(1, 2))
    for j in range(b):
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
            augment: torch.Generator | None) -> dict[str, torch.Tensor]:
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
        mel = spec_augment(mel, n_frames, augment)
    frames = mel.shape[-1]
    return {
        "input_ids": input_ids, "attention_mask": attention, "input_features": mel,
        "feature_attention_mask": (torch.arange(frames)[None, :] < n_frames[:, None]).long(),
        "answer_mask": answer_mask, "clip_index": idx,
    }


# -- auxiliary heads ---------------------------------------------------------------------

class TrackHeads(nn.Module):
    """One linear classifier per track on the mean-pooled audio-encoder output (training only)."""

    def __init__(self, d_audio: int, label_sets: dict[str, tuple[str, ...]]) -> None:
        super().__init__()
        self.label_sets = label_sets
        self.heads = nn.ModuleDict({t: nn.Linear(d_audio, len(labs)) for t, labs in label_sets.items()})

    def targets(self, records: Sequence[ClipRecord]) -> dict[str, torch.Tensor]:
        out = {}
        for t, labs in self.label_sets.items():
            index = {lab: k for k, lab in enumerate(labs)}
            out[t] = torch.tensor([index.get(single_label(r, t) or "", -100) for r in records])
        return out

    def loss(self, pooled: torch.Tensor, targets: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean over tracks present in the batch of the per-track cross-entropy; also accuracies."""
        losses, accs = [], {}
        for t, head in self.heads.items():
            y = targets[t].to(pooled.device)
            keep = y >= 0
            if keep.any():
                logits = head(pooled[keep])
                losses.append(F.cross_entropy(logits, y[keep]))
                accs[t] = float((logits.argmax(-1) == y[keep]).float().mean())
        total = torch.stack(losses).mean() if losses else pooled.sum() * 0.0
        return total, accs

    def token_loss(self, states: torch.Tensor, lengths: torch.Tensor,
                   targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """The same classifiers applied to every valid audio token (batch, T, d) of each clip."""
        valid = torch.arange(states.shape[1])[None, :] < lengths[:, None]  # (batch, T)
        losses = []
        for t, head in self.heads.items():
            y = targets[t].to(states.device)[:, None].expand(-1, states.shape[1])
            keep = valid & (y >= 0)
            if keep.any():
                losses.append(F.cross_entropy(head(states[keep]), y[keep]))
        return torch.stack(losses).mean() if losses else states.sum() * 0.0


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


def cosine_lr(step: int, total: int, warmup: int, peak: float, time_progress: float = 0.0) -> float:
    """Linear warm-up, then cosine to 10% of ``peak``, driven by the larger of step and time progress."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = max((step - warmup) / max(1, total - warmup), time_progress)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class Budget:
    """Wall-clock budget of one phase: ``progress()`` in [0, 1], ``over()`` once spent."""

    def __init__(self, seconds: float) -> None:
        self.start, self.seconds = time.time(), max(1e-6, seconds)

    def progress(self) -> float:
        return min(1.0, (time.time() - self.start) / self.seconds)

    def over(self) -> bool:
        return time.time() - self.start >= self.seconds
