"""How well the tiny models do: attribute answers and captions (AudioLLM), retrieval (CLAP).

:func:`evaluate_attributes` asks every clip the AudioLens prompts of
:func:`ard_core.prompts.questions_for` (P1/P2/P3, and P3n for emotion) through
the adapter and scores the next token after the final "is": the prediction is
the candidate label whose first token (:func:`ard_core.prompts.label_token_ids`)
gets the highest logit. The tiny model's card, its tests and ``python -m forge
eval`` all measure with it. :func:`evaluate_clap` measures a CLAP's audio -> text
retrieval over a split's distinct captions (:func:`recall_at_k`).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ard_core.datasets import ClipRecord
from ard_core.prompts import CAPTION_QUESTION, FORMATS, candidate_labels, label_token_ids, questions_for


def single_label(rec: ClipRecord, track: str) -> str | None:
    """The clip's one label on ``track`` (None when absent or multi-label)."""
    labels = rec.label_set(track)
    return labels[0] if len(labels) == 1 else None


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
