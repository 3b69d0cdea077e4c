"""Stage ``train-tiny-audiollm``: train the embedded tiny Qwen2-Audio on the mini corpus.

The recipe (tokenizer, processor, config) is :mod:`ard_core.models.tiny_recipe`.
Training has two phases, both on the corpus's train split, with the log-mel
features computed once up front:

1. **encoder** (``steps_encoder``): the audio encoder alone, with one linear
   classification head per track on its mean-pooled output. An LM that learns
   its answers only through the answer token underfits the harder tracks
   (language stayed below 50% in the trial in FINDINGS.md); the heads give the
   encoder a direct signal.
2. **joint** (``steps``): the whole model on a mix of tasks, asked through the
   same chat template the adapter builds (``AudioLLM.build_prompt``): AudioLens
   P1/P2/P3 attribute questions for every track (loss on the answer token and
   the end of turn) and captioning (``CAPTION_QUESTION`` -> the manifest caption;
   loss on the caption tokens), plus the auxiliary heads' loss.

The heads are dropped before saving: the shipped folder is a plain
``Qwen2AudioForConditionalGeneration`` + ``Qwen2AudioProcessor``. Next to it go
``train_log.csv`` (losses), ``training_config.json`` (this config), ``eval.json``
and the model card ``README.md`` with test-split accuracies (reproduce them with
``python scripts/eval_tiny_models.py``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ard_core.audio import iter_audio
from ard_core.config import ConfigError, RunConfig, from_dict, save_json, to_dict
from ard_core.datasets import LABEL_VOCAB, TRACKS, ClipRecord, load_manifest
from ard_core.models.tiny_recipe import (
    TinyArch, build_config, build_model, build_processor, check_single_token_labels,
    n_audio_tokens, save_tiny, tokenizer_texts, train_tokenizer,
)
from ard_core.prompts import (
    CAPTION_QUESTION, FORMATS, candidate_labels, label_token_ids, p3_options, questions_for,
)

log = logging.getLogger(__name__)


@dataclass
class TinyAudioLLMConfig:
    """The ``[tiny_audiollm]`` table (architecture in ``[tiny_audiollm.arch]``)."""

    manifest: Path = Path("assets/corpus/manifest.csv")
    """Corpus manifest; the train split trains, the probe split monitors, the test split is reported."""
    out_dir: Path = Path("assets/models/tiny-audiollm")
    """Folder that receives the model, processor, card and logs."""
    steps_encoder: int = 800
    """Phase 1 steps: audio encoder + per-track heads only."""
    steps: int = 2000
    """Phase 2 steps: the whole model on attribute questions and captions (+ heads)."""
    max_minutes: float = 55.0
    """Wall-clock budget of both phases; past it training stops (and says so). The learning-rate
    schedules follow whichever of step count or budget is further along, so they always anneal."""
    encoder_share: float = 0.2
    """Share of ``max_minutes`` that phase 1 may use."""
    batch_size: int = 16
    """Phase-2 examples per step (one clip and one task each)."""
    encoder_batch_size: int = 32
    """Phase-1 clips per step."""
    lr: float = 1e-3
    """Peak AdamW learning rate of phase 2."""
    encoder_lr: float = 2e-3
    """Peak AdamW learning rate of phase 1."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 100
    """Linear warm-up steps of each phase (then cosine decay to 10%)."""
    caption_fraction: float = 0.2
    """Fraction of phase-2 examples that are captioning tasks."""
    aux_weight: float = 0.5
    """Weight of the auxiliary head loss in phase 2."""
    token_aux: bool = True
    """Heads also classify every audio token (not only the pooled clip), so that each token the
    decoder attends to carries the labels and the features stay local (phonemes rather than
    whole-sentence identity; the corpus has only 10 training sentences per language)."""
    track_weights: dict[str, float] = field(default_factory=lambda: {"language": 3.0, "emotion": 1.5})
    """Relative frequency of each track's questions in phase 2 (tracks not listed: 1.0)."""
    spec_augment: bool = True
    """Random time and frequency masks on the training features."""
    eval_every: int = 500
    """Monitor probe-split P3 accuracy every N phase-2 steps."""
    monitor_clips: int = 48
    """Probe clips per track used by that monitor."""
    eval_batch_size: int = 32
    """Clips per forward pass when evaluating."""
    arch: TinyArch = field(default_factory=TinyArch)
    """Architecture (``[tiny_audiollm.arch]``)."""

    def __post_init__(self) -> None:
        self.manifest = Path(self.manifest)
        self.out_dir = Path(self.out_dir)
        if isinstance(self.arch, dict):
            self.arch = from_dict(TinyArch, self.arch, where="tiny_audiollm.arch")
        for key in ("steps_encoder", "steps", "warmup_steps"):
            if getattr(self, key) < 0:
                raise ConfigError(f"[tiny_audiollm].{key} must be >= 0")
        for key in ("batch_size", "encoder_batch_size", "eval_every", "eval_batch_size", "monitor_clips"):
            if getattr(self, key) < 1:
                raise ConfigError(f"[tiny_audiollm].{key} must be >= 1")
        if self.max_minutes <= 0:
            raise ConfigError("[tiny_audiollm].max_minutes must be > 0")
        if not 0.0 < self.encoder_share < 1.0:
            raise ConfigError("[tiny_audiollm].encoder_share must be in (0, 1)")
        if not 0.0 <= self.caption_fraction < 1.0:
            raise ConfigError("[tiny_audiollm].caption_fraction must be in [0, 1)")
        if self.lr <= 0 or self.encoder_lr <= 0:
            raise ConfigError("[tiny_audiollm].lr and encoder_lr must be > 0")
        self.track_weights = dict(self.track_weights)
        bad = {k: v for k, v in self.track_weights.items() if k not in TRACKS or not v > 0}
        if bad:
            raise ConfigError(f"[tiny_audiollm].track_weights {bad}: keys must be tracks {TRACKS}, values > 0")


# -- data -----------------------------------------------------------------------------

def single_label(rec: ClipRecord, track: str) -> str | None:
    """The clip's one label on ``track`` (None when absent or multi-label)."""
    labels = rec.label_set(track)
    return labels[0] if len(labels) == 1 else None


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


# -- evaluation ---------------------------------------------------------------------------

class AccuracyRow(NamedTuple):
    """Accuracy of one track in one prompt format."""

    track: str
    fmt: str
    n: int
    accuracy: float
    """Argmax over the candidate labels' first tokens equals the gold label."""
    free_accuracy: float
    """The unconstrained top-1 next token is the gold label's token."""
    chance: float
    """1 / number of candidate labels."""


def evaluate_attributes(llm: object, records: Sequence[ClipRecord], audio: Sequence[np.ndarray],
                        label_sets: dict[str, tuple[str, ...]], batch_size: int = 32,
                        formats: Sequence[str] | None = None, tracks: Sequence[str] | None = None,
                        progress: bool = True) -> list[AccuracyRow]:
    """Ask every clip the prompts of :func:`questions_for` through the adapter and score the next token."""
    rows = []
    for track, options in label_sets.items():
        if tracks is not None and track not in tracks:
            continue
        jobs: dict[str, list[tuple[int, str, object]]] = {}
        for i, rec in enumerate(records):
            label = single_label(rec, track)
            if label is None or label not in options:
                continue
            for p in questions_for(track, label, options):
                if formats is None or p.fmt in formats:
                    jobs.setdefault(p.fmt, []).append((i, label, p))
        for fmt, items in jobs.items():
            cands = candidate_labels(track, fmt, options)
            cand_ids = torch.tensor(label_token_ids(llm.tokenizer, cands))
            correct = free = 0
            for s in tqdm(range(0, len(items), batch_size), desc=f"eval {track} {fmt}", disable=not progress,
                          leave=False):
                chunk = items[s:s + batch_size]
                batch = llm.prepare([audio[i] for i, _, _ in chunk],
                                    [llm.build_prompt(p.question, p.prefix) for _, _, p in chunk])
                with torch.no_grad():
                    last = llm.model(**batch).logits[:, -1].float().cpu()  # left padding: -1 is real
                pred = last[:, cand_ids].argmax(-1)
                top1 = last.argmax(-1)
                for j, (_, label, _) in enumerate(chunk):
                    gold = cands.index(label)
                    correct += int(pred[j] == gold)
                    free += int(top1[j] == cand_ids[gold])
            n = len(items)
            rows.append(AccuracyRow(track, fmt, n, correct / n, free / n, 1.0 / len(cands)))
    return rows


class CaptionSample(NamedTuple):
    clip_id: str
    reference: str
    generated: str


def generate_captions(llm: object, records: Sequence[ClipRecord], audio: Sequence[np.ndarray],
                      batch_size: int = 16, max_new_tokens: int = 40) -> list[CaptionSample]:
    """Greedy captions for ``CAPTION_QUESTION`` through the adapter."""
    out = []
    prompt = llm.build_prompt(CAPTION_QUESTION)
    for s in range(0, len(records), batch_size):
        batch = llm.prepare(list(audio[s:s + batch_size]), [prompt] * len(records[s:s + batch_size]))
        with torch.no_grad():
            gen = llm.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        texts = llm.tokenizer.batch_decode(gen[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        out += [CaptionSample(r.clip_id, r.caption, t.strip()) for r, t in zip(records[s:s + batch_size], texts)]
    return out


def word_f1(reference: str, hypothesis: str) -> float:
    """Unigram F1 between lower-cased word bags (a crude caption-overlap score)."""
    ref, hyp = reference.lower().replace(".", " ").split(), hypothesis.lower().replace(".", " ").split()
    if not ref or not hyp:
        return 0.0
    common = sum(min(ref.count(w), hyp.count(w)) for w in set(hyp))
    if common == 0:
        return 0.0
    p, r = common / len(hyp), common / len(ref)
    return 2 * p * r / (p + r)


def accuracy_table(rows: Sequence[AccuracyRow]) -> str:
    """Markdown table: one line per track, one column per prompt format, chance alongside."""
    fmts = [f for f in (*FORMATS, "P3n") if any(r.fmt == f for r in rows)]
    lines = ["| track | " + " | ".join(f"{f} acc (free)" for f in fmts) + " | n (P1) | chance |",
             "|---|" + "---|" * (len(fmts) + 2)]
    for track in dict.fromkeys(r.track for r in rows):
        by = {r.fmt: r for r in rows if r.track == track}
        cells = [f"{100 * by[f].accuracy:.1f}% ({100 * by[f].free_accuracy:.1f}%)" if f in by else "-"
                 for f in fmts]
        chance = ", ".join(sorted({f"{100 * r.chance:.1f}%" for r in by.values()}))
        n = by["P1"].n if "P1" in by else next(iter(by.values())).n
        lines.append(f"| {track} | " + " | ".join(cells) + f" | {n} | {chance} |")
    return "\n".join(lines)


# -- training ---------------------------------------------------------------------------

class StepLoss(NamedTuple):
    phase: str  # 'encoder' or 'joint'
    step: int
    lm_loss: float  # nan in the encoder phase
    aux_loss: float


class TrainResult(NamedTuple):
    out_dir: Path
    steps_done: int
    encoder_steps_done: int
    minutes: float
    stopped_early: bool
    history: list[StepLoss]


def train(cfg: TinyAudioLLMConfig, seed: int, train_records: Sequence[ClipRecord],
          probe_records: Sequence[ClipRecord] = (), progress: bool = True,
          manifest_sha256: str = "") -> TrainResult:
    """Build the recipe, train both phases, save the folder (without the heads) and the logs."""
    from ard_core.models.qwen2_audio import Qwen2AudioAdapter

    t_start = time.time()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    label_sets = corpus_label_sets(train_records)
    if not label_sets:
        raise ValueError("the train split has no labelled clips on any track")
    arch = cfg.arch
    tokenizer = train_tokenizer(tokenizer_texts(label_sets, [r.caption for r in train_records]),
                                arch.vocab_size)
    check_single_token_labels(tokenizer, label_sets)
    processor = build_processor(tokenizer, arch)
    model = build_model(build_config(arch, tokenizer), seed)
    heads = TrackHeads(arch.audio_d_model, label_sets)
    # The adapter (eval mode, left padding) is the reference for prompts and evaluation.
    llm = Qwen2AudioAdapter(model, processor, cfg.out_dir.name)
    feats = compute_features(train_records, processor.feature_extractor, "train")
    probe = (compute_features(monitor_subset(probe_records, label_sets, cfg.monitor_clips),
                              processor.feature_extractor, "probe") if probe_records else None)
    sampler = TaskSampler(feats, label_sets, tokenizer, llm.build_prompt, cfg.caption_fraction, seed,
                          cfg.track_weights)
    pad_id, audio_id = tokenizer.pad_token_id, llm.audio_token_id
    _check_collate_matches_processor(llm, feats, sampler, pad_id, audio_id)
    targets_all = heads.targets(feats.records)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("tiny AudioLLM: %.2fM parameters, vocab %d, %d train clips, tracks %s",
             n_params / 1e6, len(tokenizer), len(feats.records), {t: len(v) for t, v in label_sets.items()})

    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    log_path = cfg.out_dir / "train_log.csv"
    log_file = log_path.open("w", newline="")
    writer = csv.writer(log_file)
    writer.writerow(["phase", "step", "elapsed_s", "lr", "lm_loss", "aux_loss", "aux_acc"])
    gen = torch.Generator().manual_seed(seed)
    encoder_timed_out = joint_timed_out = False
    history: list[StepLoss] = []

    # Phase 1: encoder + heads.
    model.train()
    enc_params = list(model.model.audio_tower.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(enc_params, lr=cfg.encoder_lr, weight_decay=cfg.weight_decay)
    enc_done = 0
    bar = tqdm(range(cfg.steps_encoder), desc="phase 1 (encoder + heads)", disable=not progress)
    n_train = len(feats.records)
    budget = Budget(60.0 * cfg.max_minutes * cfg.encoder_share - (time.time() - t_start))
    for step in bar:
        if budget.over():
            encoder_timed_out = True
            break
        lr = cosine_lr(step, cfg.steps_encoder, cfg.warmup_steps, cfg.encoder_lr, budget.progress())
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, n_train, (cfg.encoder_batch_size,), generator=gen)
        nf = feats.n_frames[idx]
        mel = feats.mel[idx].float()
        if cfg.spec_augment:
            mel = spec_augment(mel, nf, gen)
        fam = (torch.arange(mel.shape[-1])[None, :] < nf[:, None]).long()
        states, lengths = encoder_states(model, mel, fam)
        targets = {t: v[idx] for t, v in targets_all.items()}
        loss, accs = heads.loss(masked_mean(states, lengths), targets)
        if cfg.token_aux:
            loss = loss + heads.token_loss(states, lengths, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(enc_params, 1.0)
        opt.step()
        enc_done = step + 1
        history.append(StepLoss("encoder", step, float("nan"), loss.item()))
        if step % 10 == 0:
            writer.writerow(["encoder", step, f"{time.time() - t_start:.1f}", f"{lr:.2e}", "",
                             f"{loss.item():.4f}", json.dumps({k: round(v, 3) for k, v in accs.items()})])
            log_file.flush()
            bar.set_postfix(aux=f"{loss.item():.3f}")

    # Phase 2: whole model, attribute questions + captions (+ heads).
    params = list(model.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    done = 0
    bar = tqdm(range(cfg.steps), desc="phase 2 (joint)", disable=not progress)
    hook_out: dict[str, torch.Tensor] = {}
    budget = Budget(60.0 * cfg.max_minutes - (time.time() - t_start))
    handle = model.model.audio_tower.register_forward_hook(
        lambda _m, _i, out: hook_out.__setitem__("states", out.last_hidden_state))
    try:
        for step in bar:
            if budget.over():
                joint_timed_out = True
                break
            model.train()
            lr = cosine_lr(step, cfg.steps, cfg.warmup_steps, cfg.lr, budget.progress())
            for g in opt.param_groups:
                g["lr"] = lr
            batch = collate([sampler.sample() for _ in range(cfg.batch_size)], feats, pad_id, audio_id,
                            gen if cfg.spec_augment else None)
            idx = batch.pop("clip_index")
            answer_mask = batch.pop("answer_mask")
            out = model(**batch)
            l_lm = lm_loss(out.logits, batch["input_ids"], answer_mask)
            _, lengths = model.model.audio_tower._get_feat_extract_output_lengths(
                batch["feature_attention_mask"].sum(-1))
            targets = {t: v[idx] for t, v in targets_all.items()}
            l_aux, accs = heads.loss(masked_mean(hook_out["states"], lengths), targets)
            if cfg.token_aux:
                l_aux = l_aux + heads.token_loss(hook_out["states"], lengths, targets)
            loss = l_lm + cfg.aux_weight * l_aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            done = step + 1
            history.append(StepLoss("joint", step, l_lm.item(), l_aux.item()))
            if step % 10 == 0:
                writer.writerow(["joint", step, f"{time.time() - t_start:.1f}", f"{lr:.2e}",
                                 f"{l_lm.item():.4f}", f"{l_aux.item():.4f}",
                                 json.dumps({k: round(v, 3) for k, v in accs.items()})])
                log_file.flush()
                bar.set_postfix(lm=f"{l_lm.item():.3f}", aux=f"{l_aux.item():.3f}")
            if probe is not None and (step + 1) % cfg.eval_every == 0:
                _monitor(llm, probe, label_sets, cfg.eval_batch_size, step + 1)
    finally:
        handle.remove()
        log_file.close()
    model.eval()
    stopped_early = encoder_timed_out or joint_timed_out
    if stopped_early:
        log.warning("time budget (max_minutes=%.1f) reached: %d/%d encoder and %d/%d joint steps done",
                    cfg.max_minutes, enc_done, cfg.steps_encoder, done, cfg.steps)
    save_tiny(model, processor, cfg.out_dir)
    (cfg.out_dir / "label_sets.json").write_text(json.dumps(label_sets, indent=2) + "\n")
    minutes = (time.time() - t_start) / 60
    save_json(cfg, cfg.out_dir / "training_config.json")
    summary = {"seed": seed, "parameters": n_params, "manifest_sha256": manifest_sha256, "vocab": len(tokenizer), "train_clips": len(feats.records),
               "encoder_steps_done": enc_done, "steps_done": done, "train_minutes": round(minutes, 2),
               "stopped_early": stopped_early, "encoder_timed_out": encoder_timed_out,
               "joint_timed_out": joint_timed_out, "torch_threads": torch.get_num_threads()}
    (cfg.out_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return TrainResult(cfg.out_dir, done, enc_done, minutes, stopped_early, history)


def _check_collate_matches_processor(llm: object, feats: Features, sampler: TaskSampler,
                                     pad_id: int, audio_id: int) -> None:
    """The cached-feature batches must equal what the adapter feeds the model at inference."""
    ex = sampler.sample()
    mine = collate([ex], feats, pad_id, audio_id, None)
    ref = llm.prepare([feats.audio[ex.clip]], [ex.prompt.text])
    n = ref["input_ids"].shape[1]
    if not torch.equal(mine["input_ids"][0, :n].cpu(), ref["input_ids"][0].cpu()):
        raise RuntimeError("training batch differs from Qwen2AudioProcessor's tokenisation; "
                           "the shipped model would be trained on prompts it never sees")
    if not torch.allclose(mine["input_features"][0], ref["input_features"][0].float().cpu(), atol=2e-3):
        raise RuntimeError("cached features differ from the processor's features")


def monitor_subset(records: Sequence[ClipRecord], label_sets: dict[str, tuple[str, ...]],
                   per_track: int) -> list[ClipRecord]:
    """Up to ``per_track`` clips of each track, evenly spread over the list (deterministic)."""
    keep: dict[str, ClipRecord] = {}
    for track in label_sets:
        having = [r for r in records if single_label(r, track)]
        step = max(1, len(having) // per_track)
        keep.update({r.clip_id: r for r in having[::step][:per_track]})
    return [r for r in records if r.clip_id in keep]


def _monitor(llm: object, probe: Features, label_sets: dict[str, tuple[str, ...]], batch_size: int,
             step: int) -> None:
    llm.model.eval()  # the training loop sets train() again at its next step
    rows = evaluate_attributes(llm, probe.records, probe.audio, label_sets, batch_size,
                               formats=("P3", "P3n"), progress=False)
    msg = ", ".join(f"{r.track}/{r.fmt} {100 * r.accuracy:.0f}%" for r in rows)
    log.info("step %d probe accuracy: %s", step, msg)


# -- model card --------------------------------------------------------------------------

def evaluate_folder(folder: Path, manifest: Path, split: str = "test", batch_size: int = 32,
                    n_captions: int = 60, progress: bool = True) -> dict:
    """Load ``folder`` through the adapter and measure it on ``split`` (what the card reports)."""
    from ard_core.models import load_audiollm

    llm = load_audiollm(folder, device="cpu")
    label_sets = {k: tuple(v) for k, v in json.loads((Path(folder) / "label_sets.json").read_text()).items()}
    records = [r for r in load_manifest(manifest) if r.split == split]
    clips = list(iter_audio(records))
    recs, audio = [c.record for c in clips], [c.audio for c in clips]
    rows = evaluate_attributes(llm, recs, audio, label_sets, batch_size, progress=progress)
    # Captions on an evenly spaced subset (generation is the slow part).
    step = max(1, len(recs) // n_captions)
    caps = generate_captions(llm, recs[::step][:n_captions], audio[::step][:n_captions])
    f1 = float(np.mean([word_f1(c.reference, c.generated) for c in caps])) if caps else 0.0
    exact = float(np.mean([c.reference.strip().lower() == c.generated.lower() for c in caps])) if caps else 0.0
    return {"split": split, "accuracy": [r._asdict() for r in rows],
            "captions": {"n": len(caps), "word_f1": f1, "exact_match": exact,
                         "samples": [c._asdict() for c in caps[:6]]}}


def audiollm_card(folder: Path, result: dict, cfg: TinyAudioLLMConfig) -> str:
    """The model card text (README.md) from the saved folder's files and a measured ``result``."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    summary = json.loads((folder / "train_summary.json").read_text())
    labels = json.loads((folder / "label_sets.json").read_text())
    a, t = config["audio_config"], config["text_config"]
    rows = [AccuracyRow(**r) for r in result["accuracy"]]
    caps = result["captions"]
    samples = "\n".join(f"| {c['clip_id']} | {c['reference']} | {c['generated']} |" for c in caps["samples"])
    token_note = " and on every audio token" if cfg.token_aux else ""
    weights = ", ".join(f"{k} {cfg.track_weights.get(k, 1.0):g}" for k in labels)
    label_lines = "\n".join(f"- **{k}** ({len(v)}): {', '.join(v)}" for k, v in labels.items())
    notes = [n for n, hit in (("phase 1 ended at its share of the time budget", summary.get("encoder_timed_out")),
                              ("phase 2 ended at the time budget", summary.get("joint_timed_out"))) if hit]
    stopped = f" ({'; '.join(notes)})" if notes else ""
    return f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: audio-text-to-text
---
# tiny-audiollm

A {summary['parameters'] / 1e6:.2f}M-parameter audio-language model with the architecture of
Qwen2-Audio (`Qwen2AudioForConditionalGeneration` + `Qwen2AudioProcessor`), trained from
scratch on this repository's mini corpus so that the workbench has a real, offline model to
interpret. It loads through the same adapter as `Qwen/Qwen2-Audio-7B-Instruct`:

```python
from ard_core.models import load_audiollm
llm = load_audiollm("assets/models/tiny-audiollm")   # works with HF_HUB_OFFLINE=1
```

It is a toy: it knows only the corpus's labels and caption phrasing, and it is not useful outside
this workbench.

## Architecture

| part | setting |
|---|---|
| audio encoder (Whisper-style) | {a['encoder_layers']} layers, d={a['d_model']}, {a['encoder_attention_heads']} heads, ffn {a['encoder_ffn_dim']}, `max_source_positions`={a['max_source_positions']} ({cfg.arch.chunk_length_s} s of audio, {a['max_source_positions'] // 2} audio tokens) |
| projector | linear {a['d_model']} -> {t['hidden_size']} |
| text decoder (Qwen2) | {t['num_hidden_layers']} layers, d={t['hidden_size']}, {t['num_attention_heads']} query / {t['num_key_value_heads']} key-value heads, SwiGLU {t['intermediate_size']}, untied LM head |
| tokenizer | byte-level BPE ({summary['vocab']} tokens) trained on the prompts and train captions, Qwen2 pre-tokenizer, Qwen2-Audio special tokens and chat template; every label below is one token with its leading space |
| features | `WhisperFeatureExtractor`, 128 mel bins, `chunk_length`={cfg.arch.chunk_length_s} s (clips are padded or cut to it) |

## Training

- Data: the train split of `{cfg.manifest}` ({summary['train_clips']} clips; manifest sha256
  `{summary.get('manifest_sha256', '?')[:16]}...`).
- Phase 1, {summary['encoder_steps_done']} steps of {cfg.encoder_batch_size} clips: the audio encoder with one
  linear classifier per track on its mean-pooled output{token_note} (the classifiers are training aids and are
  not shipped).
- Phase 2, {summary['steps_done']} steps: the whole model, batches of {cfg.batch_size}, on AudioLens
  P1/P2/P3 attribute questions for every track (loss on the answer token and `<|im_end|>`; relative
  question frequency per track {weights}) and,
  for {100 * cfg.caption_fraction:.0f}% of examples, "{CAPTION_QUESTION}" -> the manifest caption
  (loss on the caption), plus the heads' loss x {cfg.aux_weight}.
- AdamW (lr {cfg.encoder_lr:g} / {cfg.lr:g}, cosine, weight decay {cfg.weight_decay:g}), SpecAugment-style
  masks: {cfg.spec_augment}, seed {summary['seed']}, {summary['train_minutes']:.1f} minutes on
  {summary['torch_threads']} CPU thread(s){stopped}. Loss log: `train_log.csv`.
- Prompts are built with the adapter's chat template (`AudioLLM.build_prompt`), so training and
  inference see the same tokens. Emotion: Table I's P3 lists five emotions and is asked only of
  non-neutral clips; `P3n` adds 'neutral' to the options and is asked of all emotion clips
  (see `ard_core/prompts.py`).

Labels:

{label_lines}

## Evaluation ({result['split']} split)

Accuracy = the candidate label whose first token (leading-space form) gets the highest
next-token logit after the prompt's final "is" is the gold label; "free" = the unconstrained
top-1 next token is the gold label's token. Chance = 1 / number of candidates.

{accuracy_table(rows)}

Captioning ("{CAPTION_QUESTION}", greedy, {caps['n']} test clips): mean word-overlap F1 with the
reference {caps['word_f1']:.2f}, exact match {100 * caps['exact_match']:.0f}%.

| clip | reference | generated |
|---|---|---|
{samples}

Reproduce these figures: `python scripts/eval_tiny_models.py --audiollm` (retrain:
`python -m precompute train-tiny-audiollm --config configs/demo.toml`).
"""


def write_card(folder: Path, result: dict, cfg: TinyAudioLLMConfig) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(audiollm_card(folder, result, cfg))
    return path


# -- stage entry points --------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="run config TOML ([run] + [tiny_audiollm])")
    parser.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation and card")


def main(args: argparse.Namespace) -> int:
    cfg_all = RunConfig.load(args.config)
    cfg = cfg_all.section("tiny_audiollm", TinyAudioLLMConfig)
    records = load_manifest(cfg.manifest)
    train_recs = [r for r in records if r.split == "train"]
    probe_recs = [r for r in records if r.split == "probe"]
    if not train_recs:
        raise ConfigError(f"[tiny_audiollm].manifest {str(cfg.manifest)!r} has no train split")
    sha = hashlib.sha256(cfg.manifest.read_bytes()).hexdigest()
    res = train(cfg, cfg_all.run.seed, train_recs, probe_recs, manifest_sha256=sha)
    print(f"saved {res.out_dir} after {res.encoder_steps_done}+{res.steps_done} steps "
          f"in {res.minutes:.1f} min{' (stopped early at max_minutes)' if res.stopped_early else ''}")
    if not args.no_eval:
        result = evaluate_folder(res.out_dir, cfg.manifest)
        (res.out_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        write_card(res.out_dir, result, cfg)
        print(accuracy_table([AccuracyRow(**r) for r in result["accuracy"]]))
    return 0
