"""Stage ``lens``: the AudioLens analyses (sections IV-VI) for any adapter model.

For each track and prompt format (Table I; ``ard_core.prompts``), every clip of
the analysis splits is run once with the lens read at the last token ("is") and
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ard_core.audio import load_audio
from ard_core.catalog import Catalog, EvaluationRow, LensEnrichmentRow, LensScoreRow, LensSummaryRow
from ard_core.config import ConfigError, RunConfig, resolve_device, save_json
from ard_core.datasets import TRACKS, ClipRecord, load_manifest
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
from ard_core.prompts import FORMATS, attribute_prompt, candidate_labels, label_token_ids, p3_options
from precompute.extract import ExtractConfig
from precompute.cli import add_config_argument

log = logging.getLogger(__name__)

POSITIONS = ("last", "penultimate", "last_masked")


@dataclass
class LensConfig:
    """The ``[lens]`` table."""

    tracks: list[str] = field(default_factory=lambda: list(TRACKS))
    """Tracks to analyse (labels from the manifest)."""
    formats: list[str] = field(default_factory=lambda: list(FORMATS))
    """Prompt formats of Table I."""
    splits: list[str] = field(default_factory=lambda: ["probe", "test"])
    """Manifest splits analysed (never the model's training split)."""
    max_per_track: int | None = None
    """Cap on clips per track (None = all), taken in manifest order."""
    batch_size: int = 16
    """Clips per forward pass."""
    alpha: float = 0.2
    """Critical-layer threshold (eq. 3): layers must beat (1 + alpha) / |Y|."""
    enrich_track: str | None = None
    """Track for the enrichment study; None = the track with the lowest P3 accuracy."""
    enrich_format: str = "P3"
    """Prompt format of the enrichment study (the paper uses P3)."""
    enrich_probe_fraction: float = 0.2
    """Share of the track's clips used to choose l-bar (the paper: 100 of 500)."""
    enrich_gap: int = 5
    """Eq. 5's layer gap (5 in the paper, for 32-layer models; scale it to the model)."""
    enrich_lambdas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0])
    """Lambda sweep of Fig. 5."""
    random_seeds: int = 5
    """Seeds of the random-layer baseline."""

    def __post_init__(self) -> None:
        bad = [t for t in self.tracks if t not in TRACKS]
        if bad:
            raise ConfigError(f"[lens].tracks {bad} unknown; use {list(TRACKS)}")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad:
            raise ConfigError(f"[lens].formats {bad} unknown; use {list(FORMATS)}")
        if self.enrich_track is not None and self.enrich_track not in self.tracks:
            raise ConfigError(f"[lens].enrich_track {self.enrich_track!r} must be one of [lens].tracks")
        if not 0 < self.enrich_probe_fraction < 1:
            raise ConfigError("[lens].enrich_probe_fraction must be in (0, 1)")
        if self.enrich_gap < 1 or self.batch_size < 1 or self.random_seeds < 0:
            raise ConfigError("[lens].enrich_gap and batch_size must be >= 1, random_seeds >= 0")


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


def lens(run: RunConfig, model_cfg: ModelConfig, manifest: Path, cfg: LensConfig, llm: AudioLLM | None = None) -> Path:
    llm = llm or model_cfg.load(resolve_device(run.run.device))
    records = [r for r in load_manifest(manifest) if r.split in cfg.splits]
    out_dir = run.run.out_dir / "lens"
    out_dir.mkdir(parents=True, exist_ok=True)
    save_json(cfg, out_dir / "lens_cfg.json")
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
    from precompute.lens_report import write_report

    write_report(out_dir, llm.name, runs, summary, (rho, pval), enrich_rows, llm.n_layers)
    return out_dir


def _nan_to_none(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)


def main(args: argparse.Namespace) -> int:
    run = RunConfig.load(args.config)
    manifest = run.section("extract", ExtractConfig).manifest
    out = lens(run, run.section("model", ModelConfig), manifest, run.section("lens", LensConfig))
    print(f"lens results: {out / 'README.md'}")
    return 0
