"""Stage ``evaluate``: AR&D Table 1 (two protocols), Table 4 and detection scores.

Table 1, **per-clip protocol** (the main one; ``ard_core.clip_eval``, docs/evaluation.md): on
the Table 1 SAE (the one describe chose), for every held-out clip of ``[evaluate].splits``
and every method (AR&D, mean activation, coverage, poly on raw neurons, random
representatives per seed), the names of the ``m`` named features most active on the clip
are matched to the phrases of its labels (Hungarian, gamma); P/R/F1/mAP are means over clips,
each with a bootstrap std and 95% interval over the clips ('random': mean +- std over seeds),
and the paired gaps between methods (``table1_gap``) likewise.

Table 1, **vocabulary protocol** (the earlier reading, kept as "vocabulary coverage"): all of a
method's names against one reference per (track, label) of the dataset, one global matching.

Table 4: the highest monosemanticity per layer x expansion, and poly per layer. Detection
(``ard_core.detection``): every named feature's AUROC of name-vs-clip similarity separating its
activating from its non-activating probing clips. Names and references are embedded with the
CLAP text encoder the score stage used (its saved ``score/score_cfg.json``) or a transformers
sentence encoder.
"""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from ard_core.catalog import (
    Catalog,
    ClipPredictionRow,
    ClipRow,
    ClipScoreRow,
    DetectionRow,
    EvaluationRow,
    SaeRow,
    control_id,
)
from ard_core.clip_eval import ClipResult, clip_means, evaluate_clips
from ard_core.config import ConfigError, RunConfig, resolve_device
from ard_core.evaluation import EmbedFn, TextEmbedder, clip_labels, reference_text, references
from ard_core.sae import TopKSAE
from ard_core.store import ActivationStore
from precompute import handover
from precompute.cli import add_config_argument, load_config
from precompute.configs import DescribeConfig, EvaluateConfig, ScoreConfig
from precompute.evaluate_detect import detection_rows
from precompute.evaluate_report import write_report
from precompute.evaluate_tables import (
    per_clip_rows,
    reference_check_rows,
    table4_rows,
    track_matches,
    vocabulary_rows,
)

log = logging.getLogger(__name__)

OWN_TABLES = (("table1", "per_clip"), ("table1_gap", "per_clip"), ("reference_check", "per_clip"),
              ("table1", "vocabulary"), ("track_match", "vocabulary"), ("table4", "run"))
"""(table_name, protocol) of the ``evaluations`` rows this stage replaces."""


class Candidates(NamedTuple):
    features: list[int]
    names: list[str]


def method_candidates(cat: Catalog, sae_id: str) -> dict[tuple[str, int], Candidates]:
    """(method, seed) -> the features describe named for it on ``sae_id``, by feature."""
    out: dict[tuple[str, int], Candidates] = defaultdict(lambda: Candidates([], []))
    for r in cat.query("SELECT method, seed, feature, name FROM method_concepts WHERE sae_id = ? "
                       "ORDER BY method, seed, feature", [sae_id]):
        c = out[(r["method"], r["seed"])]
        c.features.append(r["feature"])
        c.names.append(r["name"])
    return dict(out)


def control_of(cat: Catalog, saes: Sequence[SaeRow], t1: SaeRow, cands: dict[tuple[str, int], Candidates],
               ms: dict[tuple[str, str], float]) -> tuple[SaeRow, Candidates] | None:
    """The Table 1 SAE's random control and its named 'ard' features, None when there is none. Adds them
    to ``cands`` and its highest MS to ``ms`` as method 'random_sae' (Table 1's control row)."""
    row = next((s for s in saes if s.sae_id == control_id(t1.sae_id)), None)
    if row is None:
        return None
    named = method_candidates(cat, row.sae_id).get(("ard", 0), Candidates([], []))
    cands[("random_sae", 0)] = named
    if ms.get(("ard", row.sae_id)) is not None:
        ms[("random_sae", t1.sae_id)] = ms[("ard", row.sae_id)]
    return row, named


class PerClip(NamedTuple):
    clip_ids: list[str]
    results: dict[tuple[str, int], list[ClipResult]]  # (method, seed) -> one per clip, in clip_ids order
    references: list[str]  # every reference text of the scored clips
    emb: dict[str, np.ndarray]  # text -> vector, for every name and reference


def per_clip(store: ActivationStore, t1: SaeRow, clips: Sequence[ClipRow], cands: dict[tuple[str, int], Candidates],
             embed: EmbedFn, cfg: EvaluateConfig, score_cfg: ScoreConfig, device: str,
             control: tuple[SaeRow, Candidates] | None = None) -> PerClip:
    """Every method of Table 1 on every labelled clip of ``cfg.splits`` that has activations; with
    ``control`` (the Table 1 SAE's random control and its named 'ard' features) also 'random_sae'."""
    wanted = {c.clip_id: c for c in clips if c.split in cfg.splits and clip_labels(c.labels)}
    if not wanted:
        raise ConfigError(f"no labelled clips of splits {cfg.splits} in the catalog; the per-clip protocol needs "
                          "them (extract the test split, or set [evaluate].splits)")
    kw = dict(batch_clips=score_cfg.batch_clips, encode_tokens=score_cfg.encode_tokens)
    sae_feats = sorted({f for (m, _), c in cands.items() if m not in ("poly", "random_sae") for f in c.features})
    sae = TopKSAE.load(t1.path, device=device).eval()
    mu_sae = clip_means(store, t1.layer, set(wanted), sae, sae_feats, desc=f"test clips {t1.sae_id}", **kw)
    poly_feats = cands.get(("poly", 0), Candidates([], [])).features
    mu_poly = clip_means(store, t1.layer, set(wanted), None, poly_feats, desc=f"test clips l{t1.layer}", **kw)
    ids = mu_sae.clip_ids
    if not ids:
        raise ConfigError(f"none of the {len(wanted)} clips of splits {cfg.splits} has activations at layer "
                          f"{t1.layer}; add them to [extract].splits and run extract again")
    refs = [[reference_text(t, l, cfg.reference_text) for t, l in clip_labels(wanted[c].labels)] for c in ids]
    texts = sorted({n for c in cands.values() for n in c.names} | {r for rs in refs for r in rs})
    emb = dict(zip(texts, embed(texts)))
    col = {f: i for i, f in enumerate(sae_feats)}
    results = {}
    for (method, seed), c in sorted(cands.items()):
        if method == "random_sae":
            continue  # on its own SAE, below
        if method == "poly":
            mu = mu_poly.mu
        else:
            mu = mu_sae.mu[:, [col[f] for f in c.features]]
        results[(method, seed)] = evaluate_clips(ids, mu, c.features, c.names, refs, emb, cfg.gamma, cfg.m)
    if control is not None and control[1].features:
        row, c = control
        rnd = TopKSAE.load(row.path, device=device).eval()
        mu_rnd = clip_means(store, row.layer, set(ids), rnd, c.features, desc=f"test clips {row.sae_id}", **kw)
        emb.update(zip(c.names, embed(c.names)))
        results[("random_sae", 0)] = evaluate_clips(ids, mu_rnd.mu, c.features, c.names, refs, emb, cfg.gamma, cfg.m)
    return PerClip(ids, results, sorted({r for rs in refs for r in rs}), emb)


def clip_rows(sae_id: str, pc: PerClip, control_sae: str = "") -> tuple[list[ClipScoreRow], list[ClipPredictionRow]]:
    """The per-clip rows of every method, under the Table 1 SAE (the random control's, 'random_sae', under its own)."""
    scores, preds = [], []
    for (method, seed), results in pc.results.items():
        sae_id = control_sae if method == "random_sae" else sae_id
        for r in results:
            s = r.score
            scores.append(ClipScoreRow(sae_id, method, seed, r.clip_id, len(r.predictions), r.n_references,
                                       s.precision, s.recall, s.f1, s.ap))
            preds += [ClipPredictionRow(sae_id, method, seed, r.clip_id, *p) for p in r.predictions]
    return scores, preds


def evaluate(run: RunConfig, cfg: EvaluateConfig, embed: EmbedFn | None = None,
             clap_text: EmbedFn | None = None) -> Path:
    """Tables 1 and 4, the per-clip results and the detection scores into the catalog and
    ``evaluation/README.md``. ``embed`` (names and references) defaults to the text embedder
    [evaluate] names; ``clap_text`` (detection's CLAP text queries) to the score stage's CLAP."""
    device = resolve_device(run.run.device)
    out_dir = run.run.out_dir / "evaluation"
    handover.save(run, cfg)
    score_cfg = handover.load(run, ScoreConfig)
    reuse = embed is None and cfg.text_embedder == "clap"  # then the matching embedder is the CLAP text tower
    embed = embed or cfg.build_embedder(score_cfg, device)
    if clap_text is None and "clap" in cfg.detection_judges:
        clap_text = embed if reuse else TextEmbedder("clap", device, clap_backend=score_cfg.clap_backend,
                                                     clap_model=score_cfg.clap_model)
    endpoint = handover.load(run, DescribeConfig).summarizer.endpoint() if "llm" in cfg.detection_judges else None
    store = ActivationStore(run.run.out_dir / "activations")
    with Catalog.open(run.run.catalog_path) as cat:
        saes = cat.rows(SaeRow)
        if not cat.count("method_concepts"):
            raise ConfigError("no named concepts in the catalog; run the describe stage first")
        t1 = handover.table1(run, saes)
        clips = cat.rows(ClipRow)
        cands = method_candidates(cat, t1.sae_id)
        ms = {(r["method"], r["sae_id"]): r["ms"] for r in cat.query(
            "SELECT method, sae_id, max(monosemanticity) AS ms FROM method_scores GROUP BY method, sae_id")}
        control = control_of(cat, saes, t1, cands, ms)
        ms_random = [r["ms"] for r in cat.query(
            "SELECT seed, max(monosemanticity) AS ms FROM method_scores WHERE method = 'random' AND sae_id = ? "
            "GROUP BY seed ORDER BY seed", [t1.sae_id])]
        pc = per_clip(store, t1, clips, cands, embed, cfg, score_cfg, device, control)
        rows = per_clip_rows(t1.sae_id, pc.results, ms, ms_random, cfg.bootstrap, run.run.seed)
        rows += reference_check_rows(t1.sae_id, cfg.text_embedder, pc.references, pc.emb, cfg.gamma)
        refs = references(clips, cfg.reference_text, cfg.reference_splits)
        rows += vocabulary_rows(t1.sae_id, cands, ms, ms_random, refs, embed, cfg.gamma)
        rows += table4_rows(saes, ms)
        ard = [(r["sae_id"], r["feature"], r["name"]) for r in cat.query(
            "SELECT sae_id, feature, name FROM method_concepts WHERE method = 'ard' ORDER BY sae_id, feature")]
        per_track = track_matches(ard, refs, embed, cfg.gamma)
        rows += [EvaluationRow("track_match", t, "", "matched_concepts", float(len(v)), None, "vocabulary")
                 for t, v in per_track.items()]
        detection = detection_rows(cat, store, saes, clips, score_cfg, cfg, clap_text, endpoint, run.run.seed, device)
        scores, preds = clip_rows(t1.sae_id, pc, control[0].sae_id if control else "")
        with cat.transaction():
            for table_name, protocol in OWN_TABLES:
                cat.delete_where("evaluations", table_name=table_name, protocol=protocol)
            for table in ("clip_scores", "clip_predictions", "feature_detection"):
                cat.delete_where(table)
            cat.upsert([r for r in rows if r.value is not None])
            cat.upsert(scores)
            cat.upsert(preds)
            cat.upsert(detection)
    write_report(out_dir, t1, saes, [r for r in rows if r.value is not None], refs, per_track, clips, scores, preds, cfg)
    return out_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="retrain the SAEs with N seeds under OUT_DIR/seeds/ and report mean +- std of Tables 1, 3 "
                        "and 4 over them (not part of `run`)")


def main(args: argparse.Namespace) -> int:
    if args.seeds is not None:
        from precompute.seeds import run_seeds

        out = run_seeds(Path(args.config), args.seeds, getattr(args, "overrides", None) or ())
        print(out.read_text())
        return 0
    run = load_config(args)
    out = evaluate(run, run.section("evaluate", EvaluateConfig))
    print((out / "README.md").read_text())
    return 0
