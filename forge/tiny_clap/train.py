"""``python -m forge tiny-clap``: train the embedded tiny CLAP on (clip, caption) pairs.

The recipe is :mod:`forge.tiny_clap.recipe`. Batches hold clips with pairwise
distinct captions, drawn evenly from the corpus's groups (speech, animal, sound
event). The losses are :mod:`forge.tiny_clap.losses`: audio <-> text against the
batch's captions and two phrases of every label (:mod:`.phrases`), with several
positives per clip (its caption and its labels' phrases) and only false texts as
negatives, plus a text-text supervised contrastive loss over the phrases, so that
different concepts' wordings sit apart and one concept's wordings together
(:mod:`.separability` measures it), and a caption-to-phrases loss that keeps a
caption near the phrases of all its labels. From scratch and in minutes, the contrastive
signal alone barely moves the audio encoder (every clip embedded alike, R@1 at
chance in a first trial), so, as for the tiny AudioLLM, training has two phases:
(1) the audio encoder alone with linear heads that classify each track from its
pooled output (:class:`forge.training.TrackHeads`), and the text encoder on the
text-text loss, (2) both losses on both encoders with the heads' loss kept
(``aux_weight``). The heads are not saved.

Retrieval is measured audio -> text on the test split over its *distinct*
captions (:func:`forge.measure.evaluate_clap`); reproduce the card with
``python -m forge eval --clap``.
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
from collections import Counter
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ard_core.audio import iter_audio
from ard_core.config import ConfigError, RunConfig, save_json
from ard_core.datasets import ClipRecord, load_manifest
from forge.config import ForgeSection, add_config_argument
from forge.tiny_clap.config import TinyClapConfig
from forge.tiny_clap.losses import (PhraseBank, audio_text_loss, batch_relation, caption_phrase_loss, clip_facts,
                                    normalise, supervised_contrastive)
from forge.tiny_clap.phrases import HELDOUT_PARAPHRASES
from forge.tiny_clap.recipe import build_clap_model, build_clap_processor, build_clap_tokenizer
from forge.training import Budget, TrackHeads, corpus_label_sets, cosine_lr, optimizer_step, set_lr

log = logging.getLogger(__name__)

LogRow = Callable[..., None]
"""Writes one ``train_log.csv`` row: phase, step, then the formatted columns after ``elapsed_s``."""


class ClapData(NamedTuple):
    """The train clips with a caption, their audio and their features, computed once."""

    records: list[ClipRecord]
    audio: list[np.ndarray]
    features: torch.Tensor  # (N, 1, frames, n_mels)
    captions: list[str]


def clap_features(records: Sequence[ClipRecord], processor: object, desc: str) -> ClapData:
    """Decode every clip once and run the CLAP feature extractor (skips clips that fail to load)."""
    recs, waves, feats = [], [], []
    fe = processor.feature_extractor
    for clip in tqdm(iter_audio(records), total=len(records), desc=f"CLAP features ({desc})"):
        out = fe(clip.audio, sampling_rate=fe.sampling_rate, return_tensors="pt")
        recs.append(clip.record)
        waves.append(clip.audio)
        feats.append(out["input_features"][0])
    if not recs:
        raise ValueError(f"no clip of the {desc} split could be loaded")
    return ClapData(recs, waves, torch.stack(feats), [r.caption for r in recs])


def group_of(rec: ClipRecord) -> str:
    """The corpus group of a clip: 'speech', 'animal', 'sound_event' (or 'other')."""
    for group, track in (("speech", "language"), ("speech", "gender"), ("animal", "animal"),
                         ("sound_event", "sound_event")):
        if track in rec.labels:
            return group
    return "other"


def distinct_caption_batch(captions: Sequence[str], size: int, rng: random.Random,
                           weights: Sequence[float] | None = None) -> list[int]:
    """Indices of up to ``size`` clips whose captions are pairwise distinct.

    Clips are drawn without replacement with probability proportional to ``weights``
    (uniform when None), then the first clip of each caption is kept.
    """
    if weights is None:
        order = list(range(len(captions)))
        rng.shuffle(order)
    else:  # weighted permutation: sort by u^(1/w) (Efraimidis-Spirakis)
        keys = [rng.random() ** (1.0 / w) for w in weights]
        order = sorted(range(len(captions)), key=keys.__getitem__, reverse=True)
    seen: set[str] = set()
    out = []
    for i in order:
        if captions[i] not in seen:
            seen.add(captions[i])
            out.append(i)
            if len(out) == size:
                break
    return out


def _mask(feats: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Two frequency masks (<= n_mels/6 bins) and two time masks (<= 10% of frames) per clip."""
    feats = feats.clone()
    b, _, t, f = feats.shape
    for j in range(b):
        for _ in range(2):
            w = int(torch.randint(0, f // 6 + 1, (1,), generator=gen))
            f0 = int(torch.randint(0, f - w + 1, (1,), generator=gen))
            feats[j, :, :, f0:f0 + w] = feats[j].min()
            w = int(torch.randint(0, t // 10 + 1, (1,), generator=gen))
            t0 = int(torch.randint(0, t - w + 1, (1,), generator=gen))
            feats[j, :, t0:t0 + w, :] = feats[j].min()
    return feats


class ClapTrainResult(NamedTuple):
    out_dir: Path
    audio_steps_done: int
    steps_done: int
    minutes: float
    stopped_early: bool
    losses: list[float]


class ClapSetup(NamedTuple):
    """What both phases train and read, built once from the train records and the seed."""

    model: nn.Module
    heads: TrackHeads
    tokenizer: object
    processor: object
    data: ClapData
    weights: list[float]
    """Per clip: 1 / size of its group, so each group is drawn equally often."""
    targets: dict[str, torch.Tensor]
    """Track -> (clips,) head target per clip (-100 where the clip has no label)."""
    n_distinct: int
    facts: list[frozenset[str]]
    """Per clip: its labels and caption facts (:func:`forge.tiny_clap.losses.clip_facts`)."""
    bank: PhraseBank


class Phase(NamedTuple):
    steps_done: int
    timed_out: bool
    """The phase ended at its share of the wall-clock budget, before its step count."""


def prepare_clap(cfg: TinyClapConfig, seed: int, train_records: Sequence[ClipRecord]) -> ClapSetup:
    """Train the tokenizer, build model + heads, cache the features of the captioned clips."""
    captions = [r.caption for r in train_records if r.caption.strip()]
    bank = PhraseBank.build()
    tokenizer = build_clap_tokenizer(captions + bank.texts(), cfg.vocab_size)
    processor = build_clap_processor(tokenizer, cfg)
    model = build_clap_model(cfg, tokenizer, seed)
    data = clap_features([r for r in train_records if r.caption.strip()], processor, "train")
    n_distinct = len(set(data.captions))
    groups = [group_of(r) for r in data.records]
    sizes = Counter(groups)
    weights = [1.0 / sizes[g] for g in groups]  # each group equally often
    heads = TrackHeads(int(model.config.audio_config.hidden_size), corpus_label_sets(data.records))
    if n_distinct < 2:
        raise ValueError("the train split needs at least 2 distinct captions for a contrastive loss")
    log.info("tiny CLAP: %.2fM parameters, %d train clips, %d distinct captions",
             sum(p.numel() for p in model.parameters()) / 1e6, len(data.records), n_distinct)
    return ClapSetup(model, heads, tokenizer, processor, data, weights, heads.targets(data.records), n_distinct,
                     [clip_facts(r) for r in data.records], bank)


def embed_texts(cfg: TinyClapConfig, s: ClapSetup, texts: Sequence[str]) -> torch.Tensor:
    """(texts, D) L2-normalised text embeddings with gradients: what ``get_text_features`` computes."""
    tok = s.tokenizer(list(texts), padding=True, truncation=True, max_length=cfg.max_text_tokens,
                      return_tensors="pt")
    pooled = s.model.text_model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).pooler_output
    return normalise(s.model.text_projection(pooled))


def text_loss(cfg: TinyClapConfig, s: ClapSetup, rng: random.Random) -> tuple[torch.Tensor, list[str], list[str],
                                                                                 torch.Tensor]:
    """The text-text loss on a fresh draw of phrases; also the draw (texts, keys) and its embeddings."""
    texts, keys, classes = s.bank.sample(rng, cfg.phrases_per_label)
    emb = embed_texts(cfg, s, texts)
    return supervised_contrastive(emb, classes, cfg.text_temperature), texts, keys, emb


def train_clap(cfg: TinyClapConfig, seed: int, train_records: Sequence[ClipRecord], progress: bool = True,
               manifest_sha256: str = "") -> ClapTrainResult:
    """Build the recipe, train both phases, save the folder (without the heads) and the logs."""
    t0, cpu0 = time.time(), time.process_time()
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    s = prepare_clap(cfg, seed, train_records)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    losses: list[float] = []
    s.model.train()
    gen_idx = torch.Generator().manual_seed(seed + 1)
    with (cfg.out_dir / "train_log.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["phase", "step", "elapsed_s", "lr", "loss", "contrastive", "text", "captions", "aux",
                         "logit_scale"])

        def log_row(*row: object) -> None:
            writer.writerow([row[0], row[1], f"{time.time() - t0:.1f}", *row[2:]])
            fh.flush()

        audio = audio_phase(cfg, s, gen, gen_idx, log_row, t0, progress)
        joint = contrastive_phase(cfg, s, gen, rng, log_row, losses, t0, progress)
    s.model.eval()
    stopped = audio.timed_out or joint.timed_out
    minutes = save_clap(cfg, s, seed, audio, joint, stopped, (t0, cpu0), manifest_sha256)
    if stopped:
        log.warning("time budget (max_minutes=%.1f, phase 1 share %.2f) reached: %d/%d audio and %d/%d "
                    "contrastive steps done", cfg.max_minutes, cfg.audio_share, audio.steps_done, cfg.audio_steps,
                    joint.steps_done, cfg.steps)
    return ClapTrainResult(cfg.out_dir, audio.steps_done, joint.steps_done, minutes, stopped, losses)


def audio_phase(cfg: TinyClapConfig, s: ClapSetup, gen: torch.Generator, gen_idx: torch.Generator,
                log_row: LogRow, t0: float, progress: bool) -> Phase:
    """Phase 1: the audio encoder and the heads; the text encoder on the text-text loss alone."""
    params = list(s.model.parameters()) + list(s.heads.parameters())
    rng = random.Random(int(torch.randint(0, 2**31, (1,), generator=gen_idx)))
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    budget = Budget(60 * cfg.max_minutes * cfg.audio_share - (time.time() - t0))
    done = 0
    for step in tqdm(range(cfg.audio_steps), desc="tiny CLAP phase 1 (audio + heads, text)", disable=not progress):
        if budget.over():
            return Phase(done, True)
        lr = cosine_lr(step, cfg.audio_steps, cfg.warmup_steps, cfg.lr, budget.progress())
        set_lr(opt, lr)
        idx = torch.randint(0, len(s.data.records), (cfg.batch_size,), generator=gen_idx)
        feats = _mask(s.data.features[idx], gen) if cfg.spec_augment else s.data.features[idx]
        aux, _ = s.heads.loss(s.model.audio_model(input_features=feats).pooler_output,
                              {t: v[idx] for t, v in s.targets.items()})
        text, *_ = text_loss(cfg, s, rng)
        loss = aux + cfg.text_weight * text
        optimizer_step(opt, loss, params)
        done = step + 1
        if step % 10 == 0:
            log_row("audio", step, f"{lr:.2e}", f"{loss.item():.4f}", "", f"{text.item():.4f}", "",
                    f"{aux.item():.4f}", "")
    return Phase(done, False)


def contrastive_phase(cfg: TinyClapConfig, s: ClapSetup, gen: torch.Generator, rng: random.Random,
                      log_row: LogRow, losses: list[float], t0: float, progress: bool) -> Phase:
    """Phase 2: audio <-> text (captions and phrases), text-text and caption -> phrases losses, plus the heads."""
    params = list(s.model.parameters()) + list(s.heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    budget = Budget(60 * cfg.max_minutes - (time.time() - t0))
    done = 0
    for step in tqdm(range(cfg.steps), desc="tiny CLAP phase 2 (contrastive)", disable=not progress):
        if budget.over():
            return Phase(done, True)
        lr = cosine_lr(step, cfg.steps, cfg.warmup_steps, cfg.lr, budget.progress())
        set_lr(opt, lr)
        idx = distinct_caption_batch(s.data.captions, cfg.batch_size, rng, s.weights)
        feats = _mask(s.data.features[idx], gen) if cfg.spec_augment else s.data.features[idx]
        text, _, keys, phrase_emb = text_loss(cfg, s, rng)
        caption_emb = embed_texts(cfg, s, [s.data.captions[i] for i in idx])
        pooled = s.model.audio_model(input_features=feats).pooler_output
        audio_emb = normalise(s.model.audio_projection(pooled))
        with torch.no_grad():  # CLIP's cap on the learned temperature (scale <= 100)
            s.model.logit_scale_a.clamp_(max=math.log(100.0))
            s.model.logit_scale_t.clamp_(max=math.log(100.0))
        relation = batch_relation([s.facts[i] for i in idx], keys)
        contrastive = audio_text_loss(audio_emb, torch.cat([caption_emb, phrase_emb]), relation,
                                      s.model.logit_scale_a.exp(), s.model.logit_scale_t.exp())
        composed = caption_phrase_loss(caption_emb, phrase_emb, relation, cfg.text_temperature)
        aux, _ = s.heads.loss(pooled, {t: v[idx] for t, v in s.targets.items()})
        loss = contrastive + cfg.text_weight * text + cfg.caption_weight * composed + cfg.aux_weight * aux
        optimizer_step(opt, loss, params)
        losses.append(contrastive.item())
        done = step + 1
        if step % 10 == 0:
            log_row("contrastive", step, f"{lr:.2e}", f"{loss.item():.4f}", f"{contrastive.item():.4f}",
                    f"{text.item():.4f}", f"{composed.item():.4f}", f"{aux.item():.4f}",
                    f"{s.model.logit_scale_a.exp().item():.2f}")
    return Phase(done, False)


def save_clap(cfg: TinyClapConfig, s: ClapSetup, seed: int, audio: Phase, joint: Phase, stopped: bool,
              start: tuple[float, float], manifest_sha256: str) -> float:
    """Save model + processor (no heads), the config copy and the summary; return wall minutes since
    ``start`` = (``time.time()``, ``time.process_time()``) at the start of training."""
    s.model.save_pretrained(cfg.out_dir)
    s.processor.save_pretrained(cfg.out_dir)
    save_json(cfg, cfg.out_dir / "training_config.json")
    minutes = (time.time() - start[0]) / 60
    # CPU time as well: on a shared machine the wall clock counts the other jobs' time too.
    cpu_minutes = (time.process_time() - start[1]) / 60
    summary = {"seed": seed, "parameters": sum(p.numel() for p in s.model.parameters()),
               "vocab": len(s.tokenizer), "train_clips": len(s.data.records), "distinct_captions": s.n_distinct,
               "audio_steps_done": audio.steps_done, "steps_done": joint.steps_done,
               "train_minutes": round(minutes, 2), "train_cpu_minutes": round(cpu_minutes, 2),
               "stopped_early": stopped,
               "manifest_sha256": manifest_sha256, "torch_threads": torch.get_num_threads(),
               "train_paraphrases": sum(len(g) - 1 for g in s.bank.phrases),
               "heldout_paraphrases": sum(len(g) for labels in HELDOUT_PARAPHRASES.values() for g in labels.values())}
    (cfg.out_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return minutes


# -- verb ------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation and card")


def main(args: argparse.Namespace) -> int:
    from forge.tiny_clap.card import evaluate_clap_folder, retrieval_report, write_card

    config = RunConfig.load(args.config)
    cfg = config.section("tiny_clap", TinyClapConfig)
    records = [r for r in load_manifest(cfg.manifest) if r.split == "train"]
    if not records:
        raise ConfigError(f"[tiny_clap].manifest {str(cfg.manifest)!r} has no train split")
    sha = hashlib.sha256(cfg.manifest.read_bytes()).hexdigest()
    res = train_clap(cfg, config.section("forge", ForgeSection).seed, records, manifest_sha256=sha)
    print(f"saved {res.out_dir} after {res.audio_steps_done}+{res.steps_done} steps in {res.minutes:.1f} min"
          f"{' (a phase ended at its time budget)' if res.stopped_early else ''}")
    if not args.no_eval:
        result = evaluate_clap_folder(res.out_dir, cfg.manifest)
        (res.out_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        write_card(res.out_dir, result)
        print(retrieval_report(result))
    return 0
