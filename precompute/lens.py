"""Stage ``lens``: the AudioLens analyses (sections IV-VI) for any adapter model.

For each track and prompt format (Table I; ``ard_core.prompts``), every clip of
the analysis splits (of the dataset stage's ``<out_dir>/dataset/manifest.csv``) is run once with the lens read at the last token ("is") and
the penultimate token, and once more with the audio positions masked for the
last query. Per layer, the information score I (eq. 2) is computed for all
samples and for the correctly / incorrectly predicted ones (final-layer
prediction, Fig. 3). Table II: accuracy and critical layer (eqs. 3-4) per track
and format; Table III: Pearson r between them. Enrichment (section VI-E, Fig. 5):
a probe/test split of one track (1:4 as the paper's 100/400), l-bar from the
incorrect probe samples, a lambda sweep, and the random-layer baseline.

Outputs: catalog tables ``lens_scores``, ``lens_summary``, ``lens_enrichment``,
``evaluations`` (Table III), and ``OUT_DIR/lens/`` with Markdown tables and PNGs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ard_core.audio import load_audio
from ard_core.catalog import Catalog, EvaluationRow, LensEnrichmentRow, LensScoreRow, LensSummaryRow
from ard_core.config import ConfigError, RunConfig, resolve_device
from ard_core.datasets import ClipRecord, load_manifest
from ard_core.lens import (
    audio_masked_attention,
    critical_layer,
    enrich_source_layer,
    enrichment,
    information_scores,
    logit_lens,
    pearson,
)
from ard_core.models import AudioLLM, ModelConfig
from ard_core.prompts import attribute_prompt, candidate_labels, label_token_ids, p3_options
from precompute import handover
from precompute.cli import add_config_argument, load_config
from precompute.configs import LensConfig
from precompute.lens_report import write_report

log = logging.getLogger(__name__)

POSITIONS = ("last", "penultimate", "last_masked")


class TrackRun(NamedTuple):
    track: str
    fmt: str
    labels: tuple[str, ...]
    gold: np.ndarray  # (N,) label index
    pred: np.ndarray  # (N, L, 3) argmax label index at POSITIONS
    clip_ids: list[str]


def eligible(records: Sequence[ClipRecord], track: str, fmt: str, labels: Sequence[str]) -> list[ClipRecord]:
    return [r for r in records if r.labels.get(track) in labels]


def _prompt(llm: AudioLLM, track: str, fmt: str, options: Sequence[str]) -> str:
    p = attribute_prompt(track, fmt, [o for o in options if track != "emotion" or fmt != "P3" or o != "neutral"])
    return llm.build_prompt(p.question, p.prefix)


def run_track(llm: AudioLLM, records: Sequence[ClipRecord], audio: dict[str, np.ndarray], track: str, fmt: str,
              options: Sequence[str], batch_size: int) -> TrackRun:
    labels = candidate_labels(track, fmt, options)
    recs = eligible(records, track, fmt, labels)
    ids = label_token_ids(llm.tokenizer, labels)
    prompt = _prompt(llm, track, fmt, options)
    preds = []
    for i in tqdm(range(0, len(recs), batch_size), desc=f"lens {track}/{fmt}", leave=False):
        batch = recs[i : i + batch_size]
        inputs = llm.prepare([audio[r.clip_id] for r in batch], [prompt] * len(batch))
        plain = logit_lens(llm, inputs, ids, positions=(-1, -2)).label_logits  # (B, L, 2, Y)
        masked = logit_lens(llm, audio_masked_attention(llm, inputs), ids, positions=(-1,)).label_logits
        preds.append(torch.cat([plain, masked], dim=2).argmax(-1).cpu().numpy())
    pred = np.concatenate(preds) if preds else np.zeros((0, llm.n_layers, 3), int)
    gold = np.array([labels.index(r.labels[track]) for r in recs])
    return TrackRun(track, fmt, tuple(labels), gold, pred, [r.clip_id for r in recs])


def score_rows(model: str, run: TrackRun) -> list[LensScoreRow]:
    rows = []
    correct = run.pred[:, -1, 0] == run.gold  # final-layer prediction at the last token
    for subset, sel in (("all", slice(None)), ("correct", correct), ("incorrect", ~correct)):
        for pi, pos in enumerate(POSITIONS):
            I = information_scores(run.pred[sel, :, pi], run.gold[sel])
            n = int(np.asarray(run.gold[sel]).shape[0])
            rows += [LensScoreRow(model, run.track, run.fmt, pos, subset, ell + 1, float(v), n)
                     for ell, v in enumerate(I) if not np.isnan(v)]
    return rows


def enrich_study(llm: AudioLLM, records: Sequence[ClipRecord], audio: dict[str, np.ndarray], track: str,
                 cfg: LensConfig, options: Sequence[str], seed: int) -> list[LensEnrichmentRow]:
    """Fig. 5: accuracy vs lambda for l-bar from the probe set and for random layers."""
    L = llm.n_layers
    if cfg.enrich_gap >= L:
        raise ConfigError(f"[lens].enrich_gap {cfg.enrich_gap} must be < the model's {L} layers")
    labels = candidate_labels(track, cfg.enrich_format, options)
    recs = eligible(records, track, cfg.enrich_format, labels)
    order = np.random.default_rng(seed).permutation(len(recs))
    n_probe = max(1, int(round(cfg.enrich_probe_fraction * len(recs))))
    probe = [recs[i] for i in order[:n_probe]]
    test = [recs[i] for i in order[n_probe:]]
    probe_run = run_track(llm, probe, audio, track, cfg.enrich_format, options, cfg.batch_size)
    wrong = probe_run.pred[:, -1, 0] != probe_run.gold
    I_wrong = information_scores(probe_run.pred[wrong, :, 0], probe_run.gold[wrong])
    if not wrong.any():
        log.warning("enrichment: every probe sample of %s is correct; using all probe samples to pick l-bar", track)
        I_wrong = information_scores(probe_run.pred[:, :, 0], probe_run.gold)
    l_bar = enrich_source_layer(I_wrong, L, cfg.enrich_gap)
    ids = torch.as_tensor(label_token_ids(llm.tokenizer, labels))
    prompt = _prompt(llm, track, cfg.enrich_format, options)
    gold = np.array([labels.index(r.labels[track]) for r in test])
    rng = np.random.default_rng(seed + 1)
    random_src = [rng.integers(1, L - cfg.enrich_gap + 1, size=len(test)) for _ in range(cfg.random_seeds)]

    def accuracy(lam: float, src: np.ndarray | int) -> float:
        hits = 0
        for i in range(0, len(test), cfg.batch_size):
            batch = test[i : i + cfg.batch_size]
            inputs = llm.prepare([audio[r.clip_id] for r in batch], [prompt] * len(batch))
            s = torch.as_tensor(src[i : i + len(batch)]) if isinstance(src, np.ndarray) else src
            with enrichment(llm, s, cfg.enrich_gap, lam), torch.inference_mode():
                logits = llm.model(**inputs, use_cache=False).logits[:, -1, ids]
            hits += int((logits.argmax(-1).cpu().numpy() == gold[i : i + len(batch)]).sum())
        return hits / max(len(test), 1)

    rows = []
    for lam in tqdm(cfg.enrich_lambdas, desc=f"enrich {track}", leave=False):
        rows.append(LensEnrichmentRow(llm.name, track, "info_score", lam, seed, l_bar, accuracy(lam, l_bar), len(test)))
        for s, src in enumerate(random_src):
            rows.append(LensEnrichmentRow(llm.name, track, "random_layer", lam, s, None, accuracy(lam, src), len(test)))
    return rows


def lens(run: RunConfig, model_cfg: ModelConfig, cfg: LensConfig, llm: AudioLLM | None = None) -> Path:
    """Tables II-III and Figs. 2-5 on the clips of the dataset stage's manifest in ``cfg.splits``."""
    manifest = handover.manifest(run)
    llm = llm or model_cfg.load(resolve_device(run.run.device))
    records = [r for r in load_manifest(manifest) if r.split in cfg.splits]
    out_dir = run.run.out_dir / "lens"
    out_dir.mkdir(parents=True, exist_ok=True)
    handover.save(run, cfg)
    runs: list[TrackRun] = []
    options_of: dict[str, tuple[str, ...]] = {}
    audio: dict[str, np.ndarray] = {}
    for track in cfg.tracks:
        recs = [r for r in records if track in r.labels][: cfg.max_per_track]
        if not recs:
            log.warning("lens: no clips with a %r label in splits %s; skipped", track, cfg.splits)
            continue
        for r in recs:
            if r.clip_id not in audio:
                audio[r.clip_id] = load_audio(r.path, sr=llm.sampling_rate)
        options_of[track] = p3_options(track, sorted({r.labels[track] for r in recs}))
        try:
            label_token_ids(llm.tokenizer, options_of[track])
        except ValueError as exc:  # e.g. two labels share a first sub-token in this tokenizer
            log.warning("lens: track %r skipped: %s", track, exc)
            del options_of[track]
            continue
        for fmt in cfg.formats:
            runs.append(run_track(llm, recs, audio, track, fmt, options_of[track], cfg.batch_size))
    summary = [
        LensSummaryRow(llm.name, r.track, r.fmt, float((r.pred[:, -1, 0] == r.gold).mean()),
                       _nan_to_none(critical_layer(information_scores(r.pred[:, :, 0], r.gold), len(r.labels), cfg.alpha)),
                       len(r.gold), len(r.labels))
        for r in runs if len(r.gold)
    ]
    rho, pval = pearson([s.critical_layer if s.critical_layer is not None else np.nan for s in summary],
                        [s.accuracy for s in summary])
    enrich_rows: list[LensEnrichmentRow] = []
    p3 = [s for s in summary if s.prompt_format == cfg.enrich_format]
    track = cfg.enrich_track or (min(p3, key=lambda s: s.accuracy).track if p3 else None)
    if track is not None and track not in options_of:
        log.warning("lens: enrichment track %r was skipped above; no enrichment study", track)
        track = None
    if track is not None and cfg.enrich_lambdas:
        track_recs = [r for r in records if track in r.labels][: cfg.max_per_track]
        enrich_rows = enrich_study(llm, track_recs, audio, track, cfg, options_of[track], run.run.seed)
    with Catalog.open(run.run.catalog_path) as cat, cat.transaction():
        for table in ("lens_scores", "lens_summary", "lens_enrichment"):
            cat.delete_where(table, model=llm.name)
        cat.upsert([row for r in runs for row in score_rows(llm.name, r)])
        cat.upsert(summary)
        cat.upsert(enrich_rows)
        cat.upsert([EvaluationRow("table3", "pearson", llm.name, "r", rho, None),
                    EvaluationRow("table3", "pearson", llm.name, "p_value", pval, None)])
    write_report(out_dir, llm.name, runs, summary, (rho, pval), enrich_rows, llm.n_layers)
    return out_dir


def _nan_to_none(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)


def main(args: argparse.Namespace) -> int:
    run = load_config(args)
    out = lens(run, run.section("model", ModelConfig), run.section("lens", LensConfig))
    print(f"lens results: {out / 'README.md'}")
    return 0
