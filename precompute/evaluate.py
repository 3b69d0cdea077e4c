"""Stage ``evaluate``: AR&D Tables 1 and 4 against reference concepts.

References come from the dataset's labels: one reference concept per
(track, label). With ``reference_text = "captions"`` (default, for the mini
corpus) its text is the phrase the reference captions of that label share
(the consensus summarizer over them, e.g. 'woman speaking' for gender=female),
so it is worded like the concept names; with ``"labels"`` it is the label itself
(as FSD50K's class names in the paper). Predicted names and references are
embedded with the CLAP text encoder the score stage used (its saved
``score/score_cfg.json``) or a transformers sentence encoder, and matched by
``ard_core.evaluation`` (Hungarian, gamma = 0.7, P/R/F1/mAP).

Table 1: on the Table 1 SAE (the one describe chose), AR&D vs mean activation, coverage,
poly and random representatives (mean +- std over seeds), with the highest
monosemanticity score (MS). Table 4: the highest MS per layer x expansion factor,
and poly per layer.
"""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from ard_core.catalog import Catalog, ClipRow, EvaluationRow, SaeRow
from ard_core.config import ConfigError, RunConfig, resolve_device
from ard_core.durable import write_text
from ard_core.evaluation import EmbedFn, Reference, cosine_matrix, match_concepts, references
from precompute import handover
from precompute.cli import add_config_argument, load_config
from precompute.configs import EvaluateConfig, ScoreConfig

log = logging.getLogger(__name__)

METHOD_ORDER = ("poly", "random", "mean_act", "coverage", "ard")
METHOD_LABEL = {"poly": "Poly. Feats.", "random": "Rand. Rep.", "mean_act": "Mean Act.", "coverage": "Coverage",
                "ard": "AR&D"}


def evaluate(run: RunConfig, cfg: EvaluateConfig, embed: EmbedFn | None = None) -> Path:
    """Tables 1 and 4 and the per-track matches into the catalog and ``evaluation/README.md``.

    ``embed`` defaults to the text embedder [evaluate] names, built with the CLAP settings the
    score stage saved; the Table 1 SAE is the one describe chose."""
    device = resolve_device(run.run.device)
    out_dir = run.run.out_dir / "evaluation"
    handover.save(run, cfg)
    embed = embed or cfg.build_embedder(handover.load(run, ScoreConfig), device)
    with Catalog.open(run.run.catalog_path) as cat:
        saes = cat.rows(SaeRow)
        if not cat.count("method_concepts"):
            raise ConfigError("no named concepts in the catalog; run the describe stage first")
        t1 = handover.table1(run, saes)
        refs = references(cat.rows(ClipRow), cfg.reference_text, cfg.reference_splits)
        ref_emb = embed([r.text for r in refs])
        names: dict[tuple[str, str, int], list[str]] = defaultdict(list)
        for r in cat.query("SELECT method, sae_id, seed, name FROM method_concepts ORDER BY method, sae_id, seed, feature"):
            names[(r["method"], r["sae_id"], r["seed"])].append(r["name"])
        ms = {(r["method"], r["sae_id"]): r["ms"] for r in cat.query(
            "SELECT method, sae_id, max(monosemanticity) AS ms FROM method_scores GROUP BY method, sae_id")}
        ms_random = [r["ms"] for r in cat.query(
            "SELECT seed, max(monosemanticity) AS ms FROM method_scores WHERE method = 'random' AND sae_id = ? "
            "GROUP BY seed ORDER BY seed", [t1.sae_id])]
        table1, rows = table1_scores(t1, names, ms, ms_random, ref_emb, embed, cfg.gamma)
        table4, rows4 = table4_scores(saes, ms)
        # which labelled tracks have a named ard concept matching one of their references
        ard = [(r["sae_id"], r["feature"], r["name"]) for r in cat.query(
            "SELECT sae_id, feature, name FROM method_concepts WHERE method = 'ard' ORDER BY sae_id, feature")]
        per_track = track_matches(ard, refs, embed, cfg.gamma)
        rows += rows4 + [EvaluationRow("track_match", t, "", "matched_concepts", float(len(v)), None)
                         for t, v in per_track.items()]
        with cat.transaction():
            for table_name in ("table1", "table4", "track_match"):
                cat.delete_where("evaluations", table_name=table_name)
            cat.upsert([r for r in rows if r.value is not None])
    write_report(out_dir, t1, table1, table4, refs, per_track, cfg)
    return out_dir


Cell = tuple[float | None, float | None]  # (value, std over seeds or None)


def table1_scores(t1: SaeRow, names: dict[tuple[str, str, int], list[str]], ms: dict[tuple[str, str], float],
                  ms_random: Sequence[float], ref_emb: np.ndarray, embed: EmbedFn,
                  gamma: float) -> tuple[dict[str, dict[str, Cell]], list[EvaluationRow]]:
    """Per method of Table 1 on the SAE ``t1``: P/R/F1/mAP of its named concepts and its highest MS
    ('random': mean +- std over seeds)."""

    def scores(method: str, sae_id: str, seed: int) -> dict[str, float]:
        preds = names.get((method, sae_id, seed), [])
        if not preds:
            return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "map": 0.0}
        res = match_concepts(cosine_matrix(embed(preds), ref_emb), gamma)
        return {"precision": res.precision, "recall": res.recall, "f1": res.f1, "map": res.ap}

    rows: list[EvaluationRow] = []
    table1: dict[str, dict[str, Cell]] = {}
    for m in METHOD_ORDER:
        if m == "random":
            seeds = sorted({s for (mm, sid, s) in names if mm == "random" and sid == t1.sae_id})
            if not seeds:
                continue
            per = [scores("random", t1.sae_id, s) for s in seeds]
            vals = {k: (float(np.mean([p[k] for p in per])), float(np.std([p[k] for p in per]))) for k in per[0]}
            vals["ms"] = (float(np.mean(ms_random)), float(np.std(ms_random)))
        else:
            if (m, t1.sae_id, 0) not in names:
                continue
            vals = {k: (v, None) for k, v in scores(m, t1.sae_id, 0).items()}
            vals["ms"] = (ms.get((m, t1.sae_id)), None)
        table1[m] = vals
        rows += [EvaluationRow("table1", m, t1.sae_id, k, v, s) for k, (v, s) in vals.items() if v is not None]
    return table1, rows


def table4_scores(saes: Sequence[SaeRow], ms: dict[tuple[str, str], float]) -> tuple[dict, list[EvaluationRow]]:
    """Highest MS per (layer, expansion) for ard, and per layer for poly."""
    table4: dict[tuple[int, int | str], float | None] = {}
    rows: list[EvaluationRow] = []
    for s in saes:
        table4[(s.layer, s.expansion)] = ms.get(("ard", s.sae_id))
        rows.append(EvaluationRow("table4", "ard", s.sae_id, "ms", ms.get(("ard", s.sae_id)), None))
        if ("poly", s.sae_id) in ms:
            table4[(s.layer, "poly")] = ms[("poly", s.sae_id)]
            rows.append(EvaluationRow("table4", "poly", s.sae_id, "ms", ms[("poly", s.sae_id)], None))
    return table4, rows


def track_matches(ard: Sequence[tuple[str, int, str]], refs: Sequence[Reference], embed: EmbedFn,
                  gamma: float) -> dict[str, list[tuple[str, str, float]]]:
    """track -> [(feature ref, name, similarity)] of ard concepts whose best reference is that track's."""
    out: dict[str, list[tuple[str, str, float]]] = {r.track: [] for r in refs}
    if not ard or not refs:
        return out
    sim = cosine_matrix(embed([n for _, _, n in ard]), embed([r.text for r in refs]))
    for (sid, f, name), row in zip(ard, sim):
        j = int(np.argmax(row))
        if row[j] >= gamma:
            out[refs[j].track].append((f"{sid}/{f}", f"{name} ~ {refs[j].label}", float(row[j])))
    return out


def _cell(v: tuple[float | None, float | None] | None) -> str:
    if v is None or v[0] is None:
        return "-"
    return f"{v[0]:.2f}" + (f" +- {v[1]:.2f}" if v[1] is not None else "")


def write_report(out_dir: Path, t1: SaeRow, table1, table4, refs, per_track, cfg: EvaluateConfig) -> Path:  # noqa: ANN001
    lines = [f"# AR&D evaluation (Table 1 on {t1.sae_id}, gamma = {cfg.gamma})", "",
             "| Method | MS | Precision | Recall | F1 | mAP |", "|---|---|---|---|---|---|"]
    for m, vals in table1.items():
        lines.append(f"| {METHOD_LABEL[m]} | " + " | ".join(_cell(vals.get(k)) for k in
                                                          ("ms", "precision", "recall", "f1", "map")) + " |")
    layers = sorted({k[0] for k in table4})
    exps = sorted({k[1] for k in table4 if k[1] != "poly"})
    lines += ["", "## Table 4: highest monosemanticity by layer (0-based decoder layer) and expansion", "",
              "| Method | e | " + " | ".join(f"layer {l}" for l in layers) + " |",
              "|---|---|" + "---|" * len(layers)]
    lines.append("| Poly. Feats. | - | " + " | ".join(_cell((table4.get((l, "poly")), None)) for l in layers) + " |")
    for e in exps:
        lines.append(f"| AR&D | {e} | " + " | ".join(_cell((table4.get((l, e)), None)) for l in layers) + " |")
    lines += ["", f"## References ({len(refs)}: one per labelled (track, label), text = {cfg.reference_text})", "",
              ", ".join(f"{r.track}={r.label}: '{r.text}'" for r in refs), "",
              "## Named AR&D concepts matched to each track (similarity >= gamma)", ""]
    for track, hits in per_track.items():
        best = sorted(hits, key=lambda h: -h[2])[:5]
        lines.append(f"- **{track}**: {len(hits)} concept(s)" +
                     ("; e.g. " + "; ".join(f"`{r}` {n} ({s:.2f})" for r, n, s in best) if best else ""))
    return write_text(out_dir / "README.md", "\n".join(lines) + "\n")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)


def main(args: argparse.Namespace) -> int:
    run = load_config(args)
    out = evaluate(run, run.section("evaluate", EvaluateConfig))
    print((out / "README.md").read_text())
    return 0
