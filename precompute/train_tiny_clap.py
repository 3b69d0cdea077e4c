"""Stage ``train-tiny-clap``: train the embedded tiny CLAP on (clip, caption) pairs.

The model is a ``transformers.ClapModel`` (HTSAT-style Swin audio encoder, RoBERTa
text encoder) with a small config, a byte-level BPE ``RobertaTokenizer`` trained
on the train captions, and a ``ClapFeatureExtractor`` at 16 kHz cut to the
corpus's clip length, all saved with ``save_pretrained`` so that
``ard_core.clap.load_clap("hf", "assets/models/tiny-clap")`` loads it like
``laion/clap-htsat-unfused``. Training is the symmetric contrastive loss of
``ClapModel(return_loss=True)`` on batches whose captions are all distinct
(the corpus's captions repeat, and two equal captions must not be negatives),
drawn evenly from the corpus's groups (speech, animal, sound event). From
scratch and in minutes, the contrastive signal alone barely moves the audio
encoder (every clip embedded alike, R@1 at chance in a first trial), so, as for
the tiny AudioLLM, training has two phases: (1) the audio encoder alone with
linear heads that classify each track from its pooled output, (2) contrastive
training of both encoders with the heads' loss kept (``aux_weight``). The heads
are not saved.

Retrieval is measured audio -> text on the test split over its *distinct*
captions: a clip's hit at rank k means its own caption string is among the top
k. Reproduce the card with ``python scripts/eval_tiny_models.py --clap``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ard_core.audio import iter_audio
from ard_core.config import ConfigError, RunConfig, load_json, save_json
from ard_core.datasets import ClipRecord, load_manifest
from ard_core.models.tiny_training import Budget, TrackHeads, corpus_label_sets, cosine_lr
from precompute.cli import add_config_argument

log = logging.getLogger(__name__)

CLAP_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
"""RoBERTa's special tokens, in the id order ClapTextConfig expects (bos 0, pad 1, eos 2)."""


@dataclass
class TinyClapConfig:
    """The ``[tiny_clap]`` table."""

    manifest: Path = Path("assets/corpus/manifest.csv")
    """Corpus manifest; train split trains, test split is reported."""
    out_dir: Path = Path("assets/models/tiny-clap")
    """Folder that receives model, processor, card and logs."""
    audio_steps: int = 300
    """Phase 1 steps: the audio encoder alone with per-track classification heads."""
    steps: int = 600
    """Phase 2 steps: contrastive training of both encoders (heads kept on the audio side)."""
    batch_size: int = 32
    """Clips per step (captions within a batch are distinct)."""
    lr: float = 1e-3
    """Peak AdamW learning rate (linear warm-up, cosine decay to 10%)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 50
    """Linear warm-up steps."""
    max_minutes: float = 15.0
    """Wall-clock budget of both phases; past it training stops (and says so). The schedules follow
    whichever of step count or budget is further along, so they always anneal."""
    audio_share: float = 0.35
    """Share of ``max_minutes`` that phase 1 may use."""
    spec_augment: bool = True
    """Random time and frequency masks on the training features."""
    aux_weight: float = 1.0
    """Weight of the per-track classification heads on the pooled audio encoder (0 = contrastive only)."""
    vocab_size: int = 1024
    """Target BPE vocabulary size."""
    chunk_length_s: int = 3
    """Audio window in seconds (shorter clips are repeated to fill it, longer ones cropped)."""
    n_mels: int = 32
    """Mel bins; the Swin input is (4 * n_mels) x (4 * n_mels) after HTSAT's reshape."""
    audio_width: int = 32
    """Channels of the first Swin stage (doubles at each of the 4 stages)."""
    audio_depths: tuple[int, ...] = (1, 1, 2, 1)
    """Swin blocks per stage (4 stages)."""
    text_hidden: int = 128
    """Width of the RoBERTa text encoder."""
    text_layers: int = 2
    """Layers of the text encoder."""
    text_heads: int = 4
    """Attention heads of the text encoder."""
    max_text_tokens: int = 64
    """Longest caption in tokens."""
    projection_dim: int = 128
    """Width D of the shared embedding space."""

    def __post_init__(self) -> None:
        self.manifest = Path(self.manifest)
        self.out_dir = Path(self.out_dir)
        self.audio_depths = tuple(self.audio_depths)
        for key in ("steps", "batch_size", "vocab_size", "chunk_length_s", "n_mels", "audio_width",
                    "text_hidden", "text_layers", "text_heads", "max_text_tokens", "projection_dim"):
            if getattr(self, key) < 1:
                raise ConfigError(f"[tiny_clap].{key} must be >= 1")
        if self.batch_size < 2:
            raise ConfigError("[tiny_clap].batch_size must be >= 2 (contrastive loss needs negatives)")
        if len(self.audio_depths) != 4 or min(self.audio_depths) < 1:
            raise ConfigError("[tiny_clap].audio_depths must list 4 positive block counts")
        if self.n_mels % 4:
            raise ConfigError("[tiny_clap].n_mels must be divisible by 4 (HTSAT's frequency ratio)")
        if 100 * self.chunk_length_s + 1 > 16 * self.n_mels:
            raise ConfigError(f"[tiny_clap]: {self.chunk_length_s} s gives {100 * self.chunk_length_s + 1} "
                              f"frames, more than the {16 * self.n_mels} the Swin input holds; raise n_mels")
        if self.text_hidden % self.text_heads:
            raise ConfigError("[tiny_clap].text_hidden must be divisible by text_heads")
        if self.max_minutes <= 0 or self.lr <= 0:
            raise ConfigError("[tiny_clap].max_minutes and lr must be > 0")
        if self.aux_weight < 0:
            raise ConfigError("[tiny_clap].aux_weight must be >= 0")
        if self.audio_steps < 0:
            raise ConfigError("[tiny_clap].audio_steps must be >= 0")
        if not 0.0 < self.audio_share < 1.0:
            raise ConfigError("[tiny_clap].audio_share must be in (0, 1)")


# -- recipe ---------------------------------------------------------------------------

def build_clap_tokenizer(texts: Sequence[str], vocab_size: int) -> object:
    """A ``RobertaTokenizer`` (byte-level BPE) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import RobertaTokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(CLAP_SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(list(texts), trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return RobertaTokenizer(vocab=model["vocab"], merges=merges)


def build_clap_processor(tokenizer: object, cfg: TinyClapConfig) -> object:
    """``ClapProcessor`` at 16 kHz: 10 ms hop, ``n_mels`` bins, one ``chunk_length_s`` crop."""
    from transformers import ClapFeatureExtractor, ClapProcessor

    fe = ClapFeatureExtractor(
        feature_size=cfg.n_mels, sampling_rate=16_000, hop_length=160, fft_window_size=400,
        max_length_s=cfg.chunk_length_s, frequency_min=50, frequency_max=8000,
        # rand_trunc + repeatpad: one channel (no fusion), short clips repeated to fill.
        truncation="rand_trunc", padding="repeatpad",
    )
    return ClapProcessor(feature_extractor=fe, tokenizer=tokenizer)


def build_clap_model(cfg: TinyClapConfig, tokenizer: object, seed: int) -> object:
    from transformers import ClapConfig, ClapModel

    widths = [cfg.audio_width * 2 ** i for i in range(4)]
    config = ClapConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=cfg.text_hidden, num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.text_heads, intermediate_size=2 * cfg.text_hidden,
            max_position_embeddings=cfg.max_text_tokens + 2, projection_dim=cfg.projection_dim,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ),
        audio_config=dict(
            spec_size=4 * cfg.n_mels, num_mel_bins=cfg.n_mels, patch_size=4, patch_stride=[4, 4],
            # The last Swin stage sees a (n_mels / 8)^2 grid; window 4 divides every stage's grid.
            window_size=4, patch_embeds_hidden_size=cfg.audio_width, hidden_size=widths[-1],
            depths=list(cfg.audio_depths), num_attention_heads=[max(1, w // 16) for w in widths],
            projection_dim=cfg.projection_dim, enable_fusion=False,
        ),
        projection_dim=cfg.projection_dim,
    )
    torch.manual_seed(seed)
    return ClapModel(config)


# -- training ---------------------------------------------------------------------------

class ClapData(NamedTuple):
    records: list[ClipRecord]
    audio: list[np.ndarray]
    features: torch.Tensor  # (N, 1, frames, n_mels)
    captions: list[str]


def clap_features(records: Sequence[ClipRecord], processor: object, desc: str) -> ClapData:
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


def train_clap(cfg: TinyClapConfig, seed: int, train_records: Sequence[ClipRecord], progress: bool = True,
               manifest_sha256: str = "") -> ClapTrainResult:
    t0 = time.time()
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    captions = [r.caption for r in train_records if r.caption.strip()]
    tokenizer = build_clap_tokenizer(captions, cfg.vocab_size)
    processor = build_clap_processor(tokenizer, cfg)
    model = build_clap_model(cfg, tokenizer, seed)
    data = clap_features([r for r in train_records if r.caption.strip()], processor, "train")
    n_distinct = len(set(data.captions))
    groups = [group_of(r) for r in data.records]
    sizes = Counter(groups)
    weights = [1.0 / sizes[g] for g in groups]  # each group equally often
    label_sets = corpus_label_sets(data.records)
    heads = TrackHeads(int(model.config.audio_config.hidden_size), label_sets)
    targets = heads.targets(data.records)
    if n_distinct < 2:
        raise ValueError("the train split needs at least 2 distinct captions for a contrastive loss")
    log.info("tiny CLAP: %.2fM parameters, %d train clips, %d distinct captions",
             sum(p.numel() for p in model.parameters()) / 1e6, len(data.records), n_distinct)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    losses: list[float] = []
    stopped = False
    audio_done = done = 0
    model.train()
    gen_idx = torch.Generator().manual_seed(seed + 1)
    with (cfg.out_dir / "train_log.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["phase", "step", "elapsed_s", "lr", "loss", "contrastive", "aux", "logit_scale"])
        # Phase 1: audio encoder + heads.
        params = list(model.audio_model.parameters()) + list(heads.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        budget = Budget(60 * cfg.max_minutes * cfg.audio_share - (time.time() - t0))
        for step in tqdm(range(cfg.audio_steps), desc="tiny CLAP phase 1 (audio + heads)", disable=not progress):
            if budget.over():
                stopped = True
                break
            lr = cosine_lr(step, cfg.audio_steps, cfg.warmup_steps, cfg.lr, budget.progress())
            for g in opt.param_groups:
                g["lr"] = lr
            idx = torch.randint(0, len(data.records), (cfg.batch_size,), generator=gen_idx)
            feats = _mask(data.features[idx], gen) if cfg.spec_augment else data.features[idx]
            aux, _ = heads.loss(model.audio_model(input_features=feats).pooler_output,
                                {t: v[idx] for t, v in targets.items()})
            opt.zero_grad(set_to_none=True)
            aux.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            audio_done = step + 1
            if step % 10 == 0:
                writer.writerow(["audio", step, f"{time.time() - t0:.1f}", f"{lr:.2e}", f"{aux.item():.4f}", "",
                                 f"{aux.item():.4f}", ""])
                fh.flush()
        # Phase 2: contrastive, both encoders (+ heads).
        params = list(model.parameters()) + list(heads.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        budget = Budget(60 * cfg.max_minutes - (time.time() - t0))
        for step in tqdm(range(cfg.steps), desc="tiny CLAP phase 2 (contrastive)", disable=not progress):
            if budget.over():
                stopped = True
                break
            lr = cosine_lr(step, cfg.steps, cfg.warmup_steps, cfg.lr, budget.progress())
            for g in opt.param_groups:
                g["lr"] = lr
            idx = distinct_caption_batch(data.captions, cfg.batch_size, rng, weights)
            feats = _mask(data.features[idx], gen) if cfg.spec_augment else data.features[idx]
            tok = tokenizer([data.captions[i] for i in idx], padding=True, truncation=True,
                            max_length=cfg.max_text_tokens, return_tensors="pt")
            out = model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"],
                        input_features=feats, return_loss=True)
            aux, _ = heads.loss(out.audio_model_output.pooler_output, {t: v[idx] for t, v in targets.items()})
            loss = out.loss + cfg.aux_weight * aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(out.loss.item())
            done = step + 1
            if step % 10 == 0:
                writer.writerow(["contrastive", step, f"{time.time() - t0:.1f}", f"{lr:.2e}", f"{loss.item():.4f}",
                                 f"{out.loss.item():.4f}", f"{aux.item():.4f}",
                                 f"{model.logit_scale_a.exp().item():.2f}"])
                fh.flush()
    model.eval()
    model.save_pretrained(cfg.out_dir)
    processor.save_pretrained(cfg.out_dir)
    save_json(cfg, cfg.out_dir / "training_config.json")
    minutes = (time.time() - t0) / 60
    summary = {"seed": seed, "parameters": sum(p.numel() for p in model.parameters()),
               "vocab": len(tokenizer), "train_clips": len(data.records), "distinct_captions": n_distinct,
               "audio_steps_done": audio_done, "steps_done": done, "train_minutes": round(minutes, 2), "stopped_early": stopped,
               "manifest_sha256": manifest_sha256, "torch_threads": torch.get_num_threads()}
    (cfg.out_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if stopped:
        log.warning("time budget (max_minutes=%.1f, phase 1 share %.2f) reached: %d/%d audio and %d/%d "
                    "contrastive steps done", cfg.max_minutes, cfg.audio_share, audio_done, cfg.audio_steps,
                    done, cfg.steps)
    return ClapTrainResult(cfg.out_dir, audio_done, done, minutes, stopped, losses)


# -- evaluation ---------------------------------------------------------------------------

class RetrievalResult(NamedTuple):
    """Audio -> text retrieval over the distinct captions of a split."""

    n_clips: int
    n_captions: int
    recall: dict[int, float]
    """k -> fraction of clips whose own caption is among the top k."""
    chance: dict[int, float]
    """k -> k / n_captions (a random ranking)."""


def recall_at_k(audio_emb: np.ndarray, text_emb: np.ndarray, clip_captions: Sequence[str],
                distinct: Sequence[str], ks: Sequence[int] = (1, 5)) -> RetrievalResult:
    """Audio -> text R@k: ``text_emb`` rows embed ``distinct``; clip i's gold is ``clip_captions[i]``.

    The rank of the gold caption is the number of captions scoring strictly higher.
    """
    distinct = list(distinct)
    sims = audio_emb @ text_emb.T  # (clips, captions)
    gold = np.array([distinct.index(c) for c in clip_captions])
    # rank of the gold caption = number of captions scoring strictly higher
    rank = (sims > sims[np.arange(len(gold)), gold][:, None]).sum(1)
    recall = {k: float((rank < k).mean()) for k in ks}
    chance = {k: min(1.0, k / len(distinct)) for k in ks}
    return RetrievalResult(len(gold), len(distinct), recall, chance)


def evaluate_clap(embedder: object, records: Sequence[ClipRecord], audio: Sequence[np.ndarray],
                  ks: Sequence[int] = (1, 5), progress: bool = True) -> RetrievalResult:
    """R@k audio -> text for ``records`` through the CLAP interface (``ard_core.clap``)."""
    captions = [r.caption for r in records]
    distinct = sorted(set(captions))
    a = embedder.embed_audio(list(audio), progress=progress)
    t = embedder.embed_text(distinct, progress=progress)
    return recall_at_k(a, t, captions, distinct, ks)


def evaluate_clap_folder(folder: Path, manifest: Path, split: str = "test") -> dict:
    from ard_core.clap import load_clap

    emb = load_clap("hf", folder)
    clips = list(iter_audio([r for r in load_manifest(manifest) if r.split == split and r.caption.strip()]))
    res = evaluate_clap(emb, [c.record for c in clips], [c.audio for c in clips])
    # Per group (speech / animal / sound event) as well: the speech captions are the fine-grained ones.
    groups: dict[str, dict] = {}
    for name, track in (("speech", "language"), ("animal", "animal"), ("sound event", "sound_event")):
        sub = [c for c in clips if track in c.record.labels]
        if sub:
            r = evaluate_clap(emb, [c.record for c in sub], [c.audio for c in sub], progress=False)
            groups[name] = r._asdict()
    return {"split": split, "all": res._asdict(), "groups": groups}


def clap_card(folder: Path, result: dict) -> str:
    """The card text from the folder's files (``training_config.json`` included) and a measured ``result``."""
    folder = Path(folder)
    cfg = load_json(TinyClapConfig, folder / "training_config.json")
    config = json.loads((folder / "config.json").read_text())
    summary = json.loads((folder / "train_summary.json").read_text())
    a, t = config["audio_config"], config["text_config"]

    def row(name: str, r: dict) -> str:
        rec, ch = r["recall"], r["chance"]
        return (f"| {name} | {r['n_clips']} | {r['n_captions']} | {100 * rec['1']:.1f}% ({100 * ch['1']:.1f}%) "
                f"| {100 * rec['5']:.1f}% ({100 * ch['5']:.1f}%) |")

    res = json.loads(json.dumps(result))  # int keys -> str keys, as read back from eval.json
    rows = "\n".join([row("all", res["all"])] + [row(k, v) for k, v in res["groups"].items()])
    stopped = " (a phase ended at its time budget)" if summary["stopped_early"] else ""
    return f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: zero-shot-audio-classification
---
# tiny-clap

A {summary['parameters'] / 1e6:.2f}M-parameter CLAP (`transformers.ClapModel`: HTSAT-style Swin audio
encoder + RoBERTa text encoder) trained contrastively on the (clip, caption) pairs of this
repository's mini corpus, so that AR&D's retrieval and naming steps have an offline audio-text
model. It loads through the same interface as `laion/clap-htsat-unfused`:

```python
from ard_core.clap import load_clap
clap = load_clap("hf", "assets/models/tiny-clap")    # works with HF_HUB_OFFLINE=1
a = clap.embed_audio(waves_16k); t = clap.embed_text(["a dog barking"])   # L2-normalised rows
```

A toy: it knows the corpus's caption phrasing and little else.

## Architecture

| part | setting |
|---|---|
| features | `ClapFeatureExtractor` at 16 kHz, {a['num_mel_bins']} mel bins, 10 ms hop, {cfg.chunk_length_s} s window (`repeatpad`, `rand_trunc`) |
| audio encoder | Swin (HTSAT), spec size {a['spec_size']}, patch 4, window {a['window_size']}, depths {a['depths']}, widths {cfg.audio_width}-{a['hidden_size']} |
| text encoder | RoBERTa, {t['num_hidden_layers']} layers, d={t['hidden_size']}, {t['num_attention_heads']} heads, byte-level BPE of {summary['vocab']} tokens trained on the train captions |
| projection | {config['projection_dim']}-d, L2-normalised |

## Training

Train split of `{cfg.manifest}` ({summary['train_clips']} clips, {summary['distinct_captions']} distinct
captions; manifest sha256 `{summary.get('manifest_sha256', '?')[:16]}...`).

- Phase 1, {summary.get('audio_steps_done', 0)} steps of {cfg.batch_size} clips: the audio encoder alone with linear
  per-track classifiers on its pooled output (training aids, not shipped: the contrastive loss alone
  left every clip embedded alike in a first trial).
- Phase 2, {summary['steps_done']} steps of {cfg.batch_size} clips with pairwise-distinct captions drawn evenly from
  the speech, animal and sound-event groups: symmetric InfoNCE (`ClapModel(return_loss=True)`) plus
  the classifiers' loss x {cfg.aux_weight:g}.
- AdamW lr {cfg.lr:g} (warm-up, cosine), time/frequency masks: {cfg.spec_augment}, seed {summary['seed']},
  {summary['train_minutes']:.1f} minutes on {summary['torch_threads']} CPU thread(s){stopped}. Loss log: `train_log.csv`.

## Evaluation ({result['split']} split)

Audio -> text retrieval over the split's distinct captions (many clips share a caption, e.g.
"a cat meowing"; a hit means the clip's own caption string ranks within the top k). Chance in
brackets (k / number of captions).

| clips | n clips | n captions | R@1 (chance) | R@5 (chance) |
|---|---|---|---|---|
{rows}

Reproduce: `python scripts/eval_tiny_models.py --clap` (retrain:
`python -m precompute train-tiny-clap --config configs/demo.toml`).
"""


def write_clap_card(folder: Path, result: dict) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(clap_card(folder, result))
    return path


# -- stage entry points --------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation and card")


def main(args: argparse.Namespace) -> int:
    run = RunConfig.load(args.config)
    cfg = run.section("tiny_clap", TinyClapConfig)
    records = [r for r in load_manifest(cfg.manifest) if r.split == "train"]
    if not records:
        raise ConfigError(f"[tiny_clap].manifest {str(cfg.manifest)!r} has no train split")
    sha = hashlib.sha256(cfg.manifest.read_bytes()).hexdigest()
    res = train_clap(cfg, run.run.seed, records, manifest_sha256=sha)
    print(f"saved {res.out_dir} after {res.audio_steps_done}+{res.steps_done} steps in {res.minutes:.1f} min"
          f"{' (a phase ended at its time budget)' if res.stopped_early else ''}")
    if not args.no_eval:
        result = evaluate_clap_folder(res.out_dir, cfg.manifest)
        (res.out_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        write_clap_card(res.out_dir, result)
        r = result["all"]
        print(f"test audio->text R@1 {100 * r['recall'][1]:.1f}% (chance {100 * r['chance'][1]:.1f}%), "
              f"R@5 {100 * r['recall'][5]:.1f}% (chance {100 * r['chance'][5]:.1f}%) "
              f"over {r['n_captions']} captions")
    return 0
