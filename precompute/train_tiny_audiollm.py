"""Stage ``train-tiny-audiollm``: train the embedded tiny Qwen2-Audio on the mini corpus.

The recipe (tokenizer, processor, config) is :mod:`ard_core.models.tiny_recipe`,
the data pipeline and auxiliary heads :mod:`ard_core.models.tiny_training`, the
measurement :mod:`ard_core.attribute_eval`. Training has two phases, both on the corpus's train split, with the log-mel
features computed once up front:

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
``python scripts/eval_tiny_models.py``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ard_core.attribute_eval import (
    AccuracyRow, accuracy_table, evaluate_attributes, generate_captions, single_label, word_f1,
)
from ard_core.audio import iter_audio
from ard_core.config import ConfigError, RunConfig, from_dict, load_json, save_json
from ard_core.datasets import TRACKS, ClipRecord, load_manifest
from ard_core.models.tiny_recipe import (
    TinyArch, build_config, build_model, build_processor, check_single_token_labels, save_tiny,
    tokenizer_texts, train_tokenizer,
)
from ard_core.models.tiny_training import (
    Budget, Features, TaskSampler, TrackHeads, collate, compute_features, corpus_label_sets, cosine_lr,
    encoder_states, lm_loss, masked_mean, spec_augment,
)
from ard_core.prompts import CAPTION_QUESTION
from precompute.cli import add_config_argument

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
    encoder_share: float = 0.3
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
    decoder attends to carries the labels."""
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
                         "samples": [c._asdict() for c in caps[::max(1, len(caps) // 6)][:6]]}}


def audiollm_card(folder: Path, result: dict) -> str:
    """The model card text (README.md) from the saved folder's files and a measured ``result``.

    Training settings come from the folder's own ``training_config.json``, not from
    whatever config is current.
    """
    folder = Path(folder)
    cfg = load_json(TinyAudioLLMConfig, folder / "training_config.json")
    config = json.loads((folder / "config.json").read_text())
    summary = json.loads((folder / "train_summary.json").read_text())
    labels = json.loads((folder / "label_sets.json").read_text())
    a, t = config["audio_config"], config["text_config"]
    rows = [AccuracyRow(**r) for r in result["accuracy"]]
    caps = result["captions"]
    samples = "\n".join(f"| {c['clip_id']} | {c['reference']} | {c['generated']} |" for c in caps["samples"])
    token_note = " and on every audio token" if cfg.token_aux else ""
    emo = {r.fmt: r for r in rows if r.track == "emotion"}
    emotion_note = ""
    if "P3" in emo and "P1" in emo:
        emotion_note = (f"\nEmotion: P3 offers Table I's five options and is asked of the {emo['P3'].n} non-neutral "
                        f"clips (chance {100 * emo['P3'].chance:.0f}%); P1, P2 and P3n choose among all six labels "
                        f"on all {emo['P1'].n} emotion clips (chance {100 * emo['P1'].chance:.1f}%).\n")
    weights = ", ".join(f"{k} {cfg.track_weights.get(k, 1.0):g}" for k in labels)
    p3 = {r.track: r.accuracy for r in rows if r.fmt == "P3"}
    weakest_note = ("Language is read from unseen sentences: the test split's sentences are never heard in "
                    "training (`assets/corpus/DATA.md`).")
    if p3:
        weakest = min(p3, key=p3.get)
        perfect = [k for k, v in p3.items() if v >= 1.0]
        weakest_note = (f"The weakest track under P3 is {weakest} ({100 * p3[weakest]:.1f}%); "
                        + (f"{', '.join(perfect)} has no P3 failures. " if perfect else
                           "every track has P3 failures, which the logit-lens views need. ") + weakest_note)
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
{emotion_note}
{weakest_note}

Captioning ("{CAPTION_QUESTION}", greedy, {caps['n']} test clips): mean word-overlap F1 with the
reference {caps['word_f1']:.2f}, exact match {100 * caps['exact_match']:.0f}%.

| clip | reference | generated |
|---|---|---|
{samples}

Reproduce these figures: `python scripts/eval_tiny_models.py --audiollm` (retrain:
`python -m precompute train-tiny-audiollm --config configs/demo.toml`).
"""


def write_card(folder: Path, result: dict) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(audiollm_card(folder, result))
    return path


# -- stage entry points --------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
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
        write_card(res.out_dir, result)
        print(accuracy_table([AccuracyRow(**r) for r in result["accuracy"]]))
    return 0
