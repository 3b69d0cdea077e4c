"""The quality stage's spliced-in fidelity: every SAE spliced into the model on held-out P3 prompts and
teacher-forced captions (:mod:`ard_core.fidelity`), as ``sae_metrics`` rows.

- P3: up to ``clips_per_track`` clips per track of the split (balanced over labels, seeded), each asked
  its track's P3 question (steerability's judge prompt: P3n for emotion with 'neutral'); the answer is
  the label whose first token has the highest logit. Rows: the unspliced model's ``acc_<track>`` and
  ``n_<track>`` (sae_id = the model), and per SAE ``spliced_acc_<track>`` and ``kl`` (mean over every
  P3 prompt of KL(p_unspliced || p_spliced) at the answer position).
- Captions: ``caption_clips`` clips' reference captions teacher-forced after the caption prompt; H is
  the cross-entropy per caption token (pooled over clips), H0 with the SAE's layer zero-ablated at the
  same positions, and ``ce_score`` = (H* - H0) / (H_orig - H0).
- Zero-ablation of each layer at each position set, under the model: ``zero_acc_lL_<track>``,
  ``zero_kl_lL``, ``caption_ce_zero_lL`` beside ``caption_ce``: how much that layer's positions matter
  at all (where zero-ablating them changes little, the CE score's denominator is small and the
  splice figures say little).

Each figure for splicing at every position gets the suffix ``@all``; audio positions have none.
Stds are bootstrap stds over the clips (the CE score's resamples the clips' summed losses).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ard_core.audio import load_audio
from ard_core.catalog import ClipRow, SaeMetricRow, SaeRow
from ard_core.evaluation import clip_labels
from ard_core.fidelity import PromptBatch, Splice, answer_read, answer_stats, caption_ce, ce_score, teacher_forced
from ard_core.models.base import AudioLLM
from ard_core.prompts import CAPTION_QUESTION, TRACK_PROMPTS, label_token_ids
from ard_core.retrieval import clip_keys
from ard_core.spread import bootstrap
from ard_core.steerability import judge_prompt, probe_pool
from precompute.configs import QualityConfig

log = logging.getLogger(__name__)


def suffix(positions: str) -> str:
    """'' for audio positions (the SAEs' own), '@all' for every position."""
    return "" if positions == "audio" else f"@{positions}"


class P3Item(NamedTuple):
    clip: ClipRow
    track: str
    prompt: str
    """The built chat prompt, ending right before the answer."""
    label_ids: list[int]
    truth: set[int]
    """Indices into label_ids of the clip's labels."""


def p3_items(llm: AudioLLM, clips: Sequence[ClipRow], cfg: QualityConfig, seed: int) -> list[P3Item]:
    """The P3 prompts of the split's clips, ``clips_per_track`` per track (module docstring)."""
    split = [c for c in clips if c.split == cfg.split]
    present: dict[str, set[str]] = defaultdict(set)
    for c in split:
        for t, l in clip_labels(c.labels):
            present[t].add(l)
    tracks = cfg.tracks or sorted(t for t in present if t in TRACK_PROMPTS)
    items = []
    for track in tracks:
        if len(present[track]) < 2:
            log.warning("track %s has %d label(s) on the %s split: no P3 question to splice", track,
                        len(present[track]), cfg.split)
            continue
        prompt, labels = judge_prompt(track, sorted(present[track]))
        try:
            ids = label_token_ids(llm.tokenizer, labels)
        except ValueError as exc:
            log.warning("track %s left out of the spliced accuracy: %s", track, exc)
            continue
        text = llm.build_prompt(prompt.question, prompt.prefix)
        for c in probe_pool(split, track, cfg.clips_per_track, seed):
            truth = {labels.index(l) for t, l in clip_labels(c.labels) if t == track and l in labels}
            if truth:
                items.append(P3Item(c, track, text, ids, truth))
    return items


def caption_items(clips: Sequence[ClipRow], cfg: QualityConfig, seed: int) -> list[ClipRow]:
    """Up to ``caption_clips`` of the split's clips with a reference caption, in a seeded order."""
    split = [c for c in clips if c.split == cfg.split and (c.caption or "").strip()]
    keys = clip_keys([c.clip_id for c in split], seed).tolist()
    return [c for _, c in sorted(zip(keys, split), key=lambda kc: (kc[0], kc[1].clip_id))][: cfg.caption_clips]


def _splices(saes: Sequence[SaeRow], models: Mapping[str, torch.nn.Module],
             positions: Sequence[str]) -> list[tuple[str, Splice]]:
    """Every SAE spliced at every position set, then each layer zero-ablated (key 'zero:LAYER')."""
    out = [(s.sae_id, Splice(s.layer, models[s.sae_id], p)) for s in saes for p in positions]
    return out + [(f"zero:{l}", Splice(l, None, p)) for l in sorted({s.layer for s in saes}) for p in positions]


def _audios(llm: AudioLLM, clips: Sequence[ClipRow]) -> list[np.ndarray]:
    return [load_audio(c.path, sr=llm.sampling_rate) for c in clips]


def run_p3(llm: AudioLLM, items: Sequence[P3Item], saes: Sequence[SaeRow], models: Mapping[str, torch.nn.Module],
           cfg: QualityConfig) -> tuple[np.ndarray, dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]]:
    """The unspliced answers' correctness (items,) and per (sae_id, positions) the spliced ones' and their KL."""
    layers = sorted({s.layer for s in saes})
    base, spliced = [], defaultdict(lambda: ([], []))
    tail_ok = None  # checked on the first batch
    for i in tqdm(range(0, len(items), cfg.batch_size), desc="spliced P3", unit="batch"):
        part = items[i : i + cfg.batch_size]
        inputs = llm.prepare(_audios(llm, [it.clip for it in part]), [it.prompt for it in part])
        batch = PromptBatch(llm, inputs, layers, answer_read(inputs), tail_ok)
        tail_ok = batch.tail_ok
        ids, truth = [it.label_ids for it in part], [it.truth for it in part]
        base.append(answer_stats(batch.base, batch.base, ids, truth).correct)
        for (sae_id, splice) in _splices(saes, models, cfg.positions):
            st = answer_stats(batch.logits(splice), batch.base, ids, truth)
            spliced[(sae_id, splice.positions)][0].append(st.correct)
            spliced[(sae_id, splice.positions)][1].append(st.kl)
    return np.concatenate(base), {k: (np.concatenate(c), np.concatenate(kl)) for k, (c, kl) in spliced.items()}


def run_captions(llm: AudioLLM, clips: Sequence[ClipRow], saes: Sequence[SaeRow],
                 models: Mapping[str, torch.nn.Module], cfg: QualityConfig) -> dict[tuple[str, str, str], np.ndarray]:
    """Summed caption CE per clip: ('', '', 'orig'), and (sae_id or 'zero:LAYER', positions, 'spliced');
    plus ('', '', 'tokens'), each clip's caption token count."""
    layers = sorted({s.layer for s in saes})
    out: dict[tuple[str, str, str], list[np.ndarray]] = defaultdict(list)
    tail_ok = None
    for i in tqdm(range(0, len(clips), cfg.batch_size), desc="spliced captions", unit="batch"):
        part = clips[i : i + cfg.batch_size]
        tf = teacher_forced(llm, _audios(llm, part), [c.caption for c in part], CAPTION_QUESTION)
        batch = PromptBatch(llm, tf.inputs, layers, tf.read, tail_ok)
        tail_ok = batch.tail_ok

        def ce(logits: torch.Tensor) -> np.ndarray:
            return caption_ce(logits, tf.targets, tf.rows, len(part))

        out[("", "", "orig")].append(ce(batch.base))
        out[("", "", "tokens")].append(np.bincount(tf.rows.cpu().numpy(), minlength=len(part)).astype(np.float64))
        for key, splice in _splices(saes, models, cfg.positions):
            out[(key, splice.positions, "spliced")].append(ce(batch.logits(splice)))
    return {k: np.concatenate(v) for k, v in out.items()}


def _mean_row(sae_id: str, metric: str, data: np.ndarray, cfg: QualityConfig, seed: int) -> SaeMetricRow:
    s = bootstrap(np.asarray(data, np.float64), n_resamples=cfg.bootstrap, seed=seed)
    return SaeMetricRow(sae_id, metric, cfg.split, s.value, s.std)


def _ce_ratio(batch: np.ndarray) -> np.ndarray:
    """(R, n, 3) resampled (H*, H_orig, H0) sums per clip -> (R,) CE scores."""
    tot = batch.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (tot[:, 0] - tot[:, 2]) / (tot[:, 1] - tot[:, 2])


def p3_rows(llm: AudioLLM, items: Sequence[P3Item], saes: Sequence[SaeRow], models: Mapping[str, torch.nn.Module],
            cfg: QualityConfig, seed: int) -> list[SaeMetricRow]:
    """Accuracy per track and KL: the model's unspliced (acc_, n_), each SAE's spliced, each layer's zero-ablated
    (under the model: zero_acc_lLAYER_<track>, zero_kl_lLAYER)."""
    base, spliced = run_p3(llm, items, saes, models, cfg)
    tracks = sorted({it.track for it in items})
    on = {t: np.array([it.track == t for it in items]) for t in tracks}
    rows = []
    for t in tracks:
        rows += [_mean_row(llm.name, f"acc_{t}", base[on[t]], cfg, seed),
                 SaeMetricRow(llm.name, f"n_{t}", cfg.split, float(on[t].sum()), None)]
    for (key, p), (correct, kl) in spliced.items():
        sae_id, acc, kl_name = key, "spliced_acc_", "kl"
        if key.startswith("zero:"):
            sae_id, acc, kl_name = llm.name, f"zero_acc_l{key[5:]}_", f"zero_kl_l{key[5:]}"
        rows += [_mean_row(sae_id, f"{acc}{t}{suffix(p)}", correct[on[t]], cfg, seed) for t in tracks]
        rows.append(_mean_row(sae_id, f"{kl_name}{suffix(p)}", kl, cfg, seed))
    return rows


def caption_rows(llm: AudioLLM, caps: Sequence[ClipRow], saes: Sequence[SaeRow],
                 models: Mapping[str, torch.nn.Module], cfg: QualityConfig, seed: int) -> list[SaeMetricRow]:
    """The CE-loss score of each SAE; under the model the caption CE per token unspliced (caption_ce) and with
    each layer zero-ablated (caption_ce_zero_lLAYER), so that the score's denominator can be read."""
    ce = run_captions(llm, caps, saes, models, cfg)
    tokens, orig = ce[("", "", "tokens")].sum(), ce[("", "", "orig")]
    rows = [SaeMetricRow(llm.name, "n_captions", cfg.split, float(len(caps)), None),
            SaeMetricRow(llm.name, "caption_ce", cfg.split, float(orig.sum() / tokens), None)]
    for layer in sorted({s.layer for s in saes}):
        rows += [SaeMetricRow(llm.name, f"caption_ce_zero_l{layer}{suffix(p)}", cfg.split,
                              float(ce[(f"zero:{layer}", p, "spliced")].sum() / tokens), None) for p in cfg.positions]
    for s in saes:
        for p in cfg.positions:
            data = np.stack([ce[(s.sae_id, p, "spliced")], orig, ce[(f"zero:{s.layer}", p, "spliced")]], 1)
            value = ce_score(*(float(x) for x in data.sum(0)))
            if value is None:
                continue
            spread = bootstrap(data, _ce_ratio, n_resamples=cfg.bootstrap, seed=seed)
            rows.append(SaeMetricRow(s.sae_id, f"ce_score{suffix(p)}", cfg.split, value,
                                     spread.std if np.isfinite(spread.std) else None))
    return rows


def fidelity_rows(llm: AudioLLM, clips: Sequence[ClipRow], saes: Sequence[SaeRow],
                  models: Mapping[str, torch.nn.Module], cfg: QualityConfig, seed: int) -> list[SaeMetricRow]:
    """Every P3 and caption figure of the module docstring."""
    items = p3_items(llm, clips, cfg, seed)
    rows = p3_rows(llm, items, saes, models, cfg, seed) if items else []
    if not items:
        log.warning("no %s clip carries a label of a track with a P3 question: no spliced accuracy", cfg.split)
    caps = caption_items(clips, cfg, seed)
    if not caps:
        log.warning("no %s clip has a reference caption: no CE-loss score", cfg.split)
        return rows
    return rows + caption_rows(llm, caps, saes, models, cfg, seed)
