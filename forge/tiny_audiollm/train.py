"""``python -m forge tiny-audiollm``: train the embedded tiny Qwen2-Audio on the mini corpus.

The recipe (tokenizer, processor, config) is :mod:`forge.tiny_audiollm.recipe`,
the data pipeline :mod:`forge.tiny_audiollm.data`, the auxiliary heads and the
schedule :mod:`forge.training`, the measurement :mod:`forge.measure`. Training
has two phases, both on the corpus's train split, with the log-mel features
computed once up front:

1. **encoder** (``steps_encoder``): the audio encoder alone, with one linear
   classification head per track on its mean-pooled output (and on every audio
   token, ``token_aux``). An LM that learns
   its answers only through the answer token underfits the harder tracks
   (language stayed below 50% in the trial in FINDINGS.md); the heads give the
   encoder a direct signal.
2. **joint** (``steps``): the whole model on a mix of tasks, asked through the
   same chat template the adapter builds (``AudioLLM.build_prompt``): AudioLens
   P1/P2/P3 attribute questions for every track (loss on the answer token and
   the end of turn) and captioning (``CAPTION_QUESTION`` -> the manifest caption;
   loss on the caption tokens), plus the auxiliary heads' loss. Tracks are asked
   with relative frequencies ``track_weights`` (language, 8-way, most often).

Both phases share a wall-clock budget (``max_minutes``, phase 1 at most
``encoder_share`` of it); the learning rate anneals by step or by time,
whichever is further along, so a busy CPU gives fewer steps, not an unfinished
schedule.

The heads are dropped before saving: the shipped folder is a plain
``Qwen2AudioForConditionalGeneration`` + ``Qwen2AudioProcessor``. Next to it go
``train_log.csv`` (losses), ``training_config.json`` (this config), ``eval.json``
and the model card ``README.md`` with test-split accuracies (reproduce them with
``python -m forge eval --audiollm``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import random
import time
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ard_core.config import ConfigError, RunConfig, save_json
from ard_core.datasets import ClipRecord, load_manifest
from forge.config import ForgeSection, add_config_argument
from forge.measure import AccuracyRow, accuracy_table, evaluate_attributes, single_label
from forge.tiny_audiollm.config import TinyAudioLLMConfig
from forge.tiny_audiollm.data import (
    Features, TaskSampler, collate, compute_features, encoder_states, lm_loss, masked_mean, spec_augment, token_mask,
)
from forge.tiny_audiollm.recipe import (
    build_config, build_model, build_processor, check_single_token_labels, save_tiny, tokenizer_texts,
    train_tokenizer,
)
from forge.training import Budget, TrackHeads, corpus_label_sets, cosine_lr, optimizer_step, set_lr

log = logging.getLogger(__name__)


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


class PhaseResult(NamedTuple):
    steps_done: int
    timed_out: bool
    """The phase ended at its share of the wall-clock budget, before its step count."""


class Setup(NamedTuple):
    """What both phases train and read, built once from the train records and the seed."""

    model: nn.Module
    heads: TrackHeads
    processor: object
    llm: object
    """The adapter over ``model`` (eval mode, left padding): the reference for prompts and evaluation."""
    feats: Features
    probe: Features | None
    sampler: TaskSampler
    label_sets: dict[str, tuple[str, ...]]
    targets: dict[str, torch.Tensor]
    """Track -> (train clips,) head target per clip (-100 where the clip has no label)."""
    n_params: int
    vocab: int
    curve: list[dict]
    """The probe monitor's learning curve: one row per (phase-2 step, track, format)."""


class TrainLog:
    """``train_log.csv``: one row every 10 steps, flushed, so a long run can be watched."""

    COLUMNS = ["phase", "step", "elapsed_s", "lr", "lm_loss", "aux_loss", "aux_acc"]

    def __init__(self, path: Path, t_start: float) -> None:
        self.file = path.open("w", newline="")
        self.writer = csv.writer(self.file)
        self.writer.writerow(self.COLUMNS)
        self.t_start = t_start

    def row(self, phase: str, step: int, lr: float, lm: str, aux: float, accs: dict[str, float]) -> None:
        self.writer.writerow([phase, step, f"{time.time() - self.t_start:.1f}", f"{lr:.2e}", lm, f"{aux:.4f}",
                              json.dumps({k: round(v, 3) for k, v in accs.items()})])
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def train(cfg: TinyAudioLLMConfig, seed: int, train_records: Sequence[ClipRecord],
          probe_records: Sequence[ClipRecord] = (), progress: bool = True,
          manifest_sha256: str = "") -> TrainResult:
    """Build the recipe, train both phases, save the folder (without the heads) and the logs."""
    t_start = time.time()
    s = prepare(cfg, seed, train_records, probe_records)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    train_log = TrainLog(cfg.out_dir / "train_log.csv", t_start)
    gen = torch.Generator().manual_seed(seed)
    history: list[StepLoss] = []
    try:
        enc = encoder_phase(cfg, s, gen, train_log, history, t_start, progress)
        joint = joint_phase(cfg, s, gen, train_log, history, t_start, progress)
    finally:
        train_log.close()
    s.model.eval()
    stopped_early = enc.timed_out or joint.timed_out
    if stopped_early:
        log.warning("time budget (max_minutes=%.1f) reached: %d/%d encoder and %d/%d joint steps done",
                    cfg.max_minutes, enc.steps_done, cfg.steps_encoder, joint.steps_done, cfg.steps)
    minutes = save_trained(cfg, s, seed, enc, joint, t_start, manifest_sha256)
    return TrainResult(cfg.out_dir, joint.steps_done, enc.steps_done, minutes, stopped_early, history)


def prepare(cfg: TinyAudioLLMConfig, seed: int, train_records: Sequence[ClipRecord],
            probe_records: Sequence[ClipRecord]) -> Setup:
    """Seed, train the tokenizer, build model + heads, cache features, and check the batches."""
    from ard_core.models.qwen2_audio import Qwen2AudioAdapter

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
    llm = Qwen2AudioAdapter(model, processor, cfg.out_dir.name)
    feats = compute_features(train_records, processor.feature_extractor, "train")
    probe = (compute_features(monitor_subset(probe_records, label_sets, cfg.monitor_clips),
                              processor.feature_extractor, "probe") if probe_records else None)
    sampler = TaskSampler(feats, label_sets, tokenizer, llm.build_prompt, cfg.caption_fraction, seed,
                          cfg.track_weights)
    _check_collate_matches_processor(llm, feats, sampler, tokenizer.pad_token_id, llm.audio_token_id)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("tiny AudioLLM: %.2fM parameters, vocab %d, %d train clips, tracks %s",
             n_params / 1e6, len(tokenizer), len(feats.records), {t: len(v) for t, v in label_sets.items()})
    return Setup(model, heads, processor, llm, feats, probe, sampler, label_sets, heads.targets(feats.records),
                 n_params, len(tokenizer), [])


def encoder_phase(cfg: TinyAudioLLMConfig, s: Setup, gen: torch.Generator, train_log: TrainLog,
                  history: list[StepLoss], t_start: float, progress: bool) -> PhaseResult:
    """Phase 1: the audio encoder and the heads, on whole clips (no text)."""
    s.model.train()
    params = list(s.model.model.audio_tower.parameters()) + list(s.heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.encoder_lr, weight_decay=cfg.weight_decay)
    done = 0
    bar = tqdm(range(cfg.steps_encoder), desc="phase 1 (encoder + heads)", disable=not progress)
    n_train = len(s.feats.records)
    budget = Budget(60.0 * cfg.max_minutes * cfg.encoder_share - (time.time() - t_start))
    for step in bar:
        if budget.over():
            return PhaseResult(done, True)
        lr = cosine_lr(step, cfg.steps_encoder, cfg.warmup_steps, cfg.encoder_lr, budget.progress())
        set_lr(opt, lr)
        idx = torch.randint(0, n_train, (cfg.encoder_batch_size,), generator=gen)
        nf = s.feats.n_frames[idx]
        mel = s.feats.mel[idx].float()
        if cfg.spec_augment:
            mel = spec_augment(mel, nf, gen, cfg.mel_shift_bins)
        fam = (torch.arange(mel.shape[-1])[None, :] < nf[:, None]).long()
        states, lengths = encoder_states(s.model, mel, fam)
        loss, accs = _heads_loss(cfg, s, states, lengths, idx)
        optimizer_step(opt, loss, params)
        done = step + 1
        history.append(StepLoss("encoder", step, float("nan"), loss.item()))
        if step % 10 == 0:
            train_log.row("encoder", step, lr, "", loss.item(), accs)
            bar.set_postfix(aux=f"{loss.item():.3f}")
    return PhaseResult(done, False)


def _heads_loss(cfg: TinyAudioLLMConfig, s: Setup, states: torch.Tensor, lengths: torch.Tensor,
                idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Heads' loss on the pooled encoder output (+ on every audio token with ``token_aux``), and accuracies."""
    targets = {t: v[idx] for t, v in s.targets.items()}
    loss, accs = s.heads.loss(masked_mean(states, lengths), targets)
    if cfg.token_aux:
        where = {t: token_mask(m[idx], states.shape[1]) for t, m in s.feats.sounding.items()}
        loss = loss + s.heads.token_loss(states, lengths, targets, where)
    return loss, accs


def joint_phase(cfg: TinyAudioLLMConfig, s: Setup, gen: torch.Generator, train_log: TrainLog,
                history: list[StepLoss], t_start: float, progress: bool) -> PhaseResult:
    """Phase 2: the whole model on attribute questions and captions, plus the heads' loss."""
    model = s.model
    params = list(model.parameters()) + list(s.heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    done = 0
    bar = tqdm(range(cfg.steps), desc="phase 2 (joint)", disable=not progress)
    pad_id, audio_id = s.llm.tokenizer.pad_token_id, s.llm.audio_token_id
    hook_out: dict[str, torch.Tensor] = {}  # the encoder's output of the current forward pass
    budget = Budget(60.0 * cfg.max_minutes - (time.time() - t_start))
    handle = model.model.audio_tower.register_forward_hook(
        lambda _m, _i, out: hook_out.__setitem__("states", out.last_hidden_state))
    try:
        for step in bar:
            if budget.over():
                return PhaseResult(done, True)
            model.train()  # the probe monitor sets eval()
            lr = cosine_lr(step, cfg.steps, cfg.warmup_steps, cfg.lr, budget.progress())
            set_lr(opt, lr)
            batch = collate([s.sampler.sample() for _ in range(cfg.batch_size)], s.feats, pad_id, audio_id,
                            gen if cfg.spec_augment else None, cfg.mel_shift_bins)
            idx = batch.pop("clip_index")
            answer_mask = batch.pop("answer_mask")
            out = model(**batch)
            l_lm = lm_loss(out.logits, batch["input_ids"], answer_mask)
            _, lengths = model.model.audio_tower._get_feat_extract_output_lengths(
                batch["feature_attention_mask"].sum(-1))
            l_aux, accs = _heads_loss(cfg, s, hook_out["states"], lengths, idx)
            optimizer_step(opt, l_lm + cfg.aux_weight * l_aux, params)
            done = step + 1
            history.append(StepLoss("joint", step, l_lm.item(), l_aux.item()))
            if step % 10 == 0:
                train_log.row("joint", step, lr, f"{l_lm.item():.4f}", l_aux.item(), accs)
                bar.set_postfix(lm=f"{l_lm.item():.3f}", aux=f"{l_aux.item():.3f}")
            if s.probe is not None and (step + 1) % cfg.eval_every == 0:
                s.curve.extend(_monitor(s.llm, s.probe, s.label_sets, cfg.eval_batch_size, step + 1))
    finally:
        handle.remove()
    return PhaseResult(done, False)


def save_trained(cfg: TinyAudioLLMConfig, s: Setup, seed: int, enc: PhaseResult, joint: PhaseResult,
                 t_start: float, manifest_sha256: str) -> float:
    """Save model + processor (no heads), label sets, the config copy and the summary; return minutes."""
    save_tiny(s.model, s.processor, cfg.out_dir)
    (cfg.out_dir / "label_sets.json").write_text(json.dumps(s.label_sets, indent=2) + "\n")
    with open(cfg.out_dir / "probe_curve.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["step", "track", "format", "accuracy", "n"])
        writer.writeheader()
        writer.writerows(s.curve)
    minutes = (time.time() - t_start) / 60
    save_json(cfg, cfg.out_dir / "training_config.json")
    summary = {"seed": seed, "parameters": s.n_params, "manifest_sha256": manifest_sha256, "vocab": s.vocab,
               "train_clips": len(s.feats.records), "encoder_steps_done": enc.steps_done,
               "cpu_minutes": round(time.process_time() / 60, 2),
               "steps_done": joint.steps_done, "train_minutes": round(minutes, 2),
               "stopped_early": enc.timed_out or joint.timed_out, "encoder_timed_out": enc.timed_out,
               "joint_timed_out": joint.timed_out, "torch_threads": torch.get_num_threads()}
    (cfg.out_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return minutes


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
             step: int) -> list[dict]:
    """P3 accuracy per track on the probe subset now: a point of the card's learning curve."""
    llm.model.eval()  # the training loop sets train() again at its next step
    rows = evaluate_attributes(llm, probe.records, probe.audio, label_sets, batch_size,
                               formats=("P3", "P3n"), progress=False)
    msg = ", ".join(f"{r.track}/{r.fmt} {100 * r.accuracy:.0f}%" for r in rows)
    log.info("step %d probe accuracy: %s", step, msg)
    return [{"step": step, "track": r.track, "format": r.fmt, "accuracy": round(r.accuracy, 4), "n": r.n}
            for r in rows]


# -- verb ------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation and card")


def main(args: argparse.Namespace) -> int:
    from forge.tiny_audiollm.card import evaluate_folder, write_card

    config = RunConfig.load(args.config)
    cfg = config.section("tiny_audiollm", TinyAudioLLMConfig)
    records = load_manifest(cfg.manifest)
    train_recs = [r for r in records if r.split == "train"]
    probe_recs = [r for r in records if r.split == "probe"]
    if not train_recs:
        raise ConfigError(f"[tiny_audiollm].manifest {str(cfg.manifest)!r} has no train split")
    sha = hashlib.sha256(cfg.manifest.read_bytes()).hexdigest()
    res = train(cfg, config.section("forge", ForgeSection).seed, train_recs, probe_recs, manifest_sha256=sha)
    print(f"saved {res.out_dir} after {res.encoder_steps_done}+{res.steps_done} steps "
          f"in {res.minutes:.1f} min{' (stopped early at max_minutes)' if res.stopped_early else ''}")
    if not args.no_eval:
        result = evaluate_folder(res.out_dir, cfg.manifest)
        (res.out_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        write_card(res.out_dir, result)
        print(accuracy_table([AccuracyRow(**r) for r in result["accuracy"]]))
    return 0
