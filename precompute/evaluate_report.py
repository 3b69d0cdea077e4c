"""The evaluate stage's ``evaluation/README.md``: both Table 1 protocols, the gaps, Table 4, the
references, the tracks the names reach, and the per-clip view of a few test clips."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ard_core.catalog import ClipPredictionRow, ClipRow, ClipScoreRow, EvaluationRow, SaeRow
from ard_core.durable import write_text
from ard_core.evaluation import Reference, clip_labels
from precompute.configs import EvaluateConfig
from precompute.markdown import clip_view_md, gaps_md, reference_check_md, table1_md, table4_md


def example_clips(clips: Sequence[ClipRow], evaluated: set[str]) -> list[ClipRow]:
    """The first evaluated clip (by id) of each distinct set of labelled tracks: a speech, an animal, an event clip."""
    seen: dict[tuple[str, ...], ClipRow] = {}
    for c in sorted(clips, key=lambda c: c.clip_id):
        if c.clip_id in evaluated:
            seen.setdefault(tuple(sorted({t for t, _ in clip_labels(c.labels)})), c)
    return [seen[k] for k in sorted(seen)]


def write_report(out_dir: Path, t1: SaeRow, saes: Sequence[SaeRow], rows: Sequence[EvaluationRow],
                 refs: Sequence[Reference], per_track: dict[str, list[tuple[str, str, float]]], clips: Sequence[ClipRow],
                 scores: Sequence[ClipScoreRow], preds: Sequence[ClipPredictionRow], cfg: EvaluateConfig) -> Path:
    def pick(table: str, protocol: str) -> list[EvaluationRow]:
        return [r for r in rows if r.table_name == table and r.protocol == protocol]

    n = next((r.n for r in pick("table1", "per_clip") if r.n), 0)
    lines = [f"# AR&D evaluation on {t1.sae_id} (gamma = {cfg.gamma}, m = {cfg.m})", "",
             f"## Table 1, per clip ({n} clips of {', '.join(cfg.splits)}; mean +- bootstrap std over clips, "
             "random: +- std over seeds)", "", *table1_md(pick("table1", "per_clip"), t1.sae_id), "",
             *gaps_md(pick("table1_gap", "per_clip")), "", *reference_check_md(pick("reference_check", "per_clip"), cfg.gamma),
             "",
             "## Table 1, vocabulary coverage (every name against one reference per (track, label), one matching)", "",
             *table1_md(pick("table1", "vocabulary"), t1.sae_id), "",
             "## Table 4: highest monosemanticity by layer (0-based decoder layer) and expansion", "",
             *table4_md(pick("table4", "run"), {s.sae_id: (s.layer, s.expansion) for s in saes}), "",
             f"## References ({len(refs)}: one per labelled (track, label), text = {cfg.reference_text})", "",
             ", ".join(f"{r.track}={r.label}: '{r.text}'" for r in refs), "",
             "## Named AR&D concepts matched to each track (similarity >= gamma)", ""]
    for track, hits in per_track.items():
        best = sorted(hits, key=lambda h: -h[2])[:5]
        lines.append(f"- **{track}**: {len(hits)} concept(s)" +
                     ("; e.g. " + "; ".join(f"`{r}` {n} ({s:.2f})" for r, n, s in best) if best else ""))
    lines += ["", "## Per-clip view (seed 0 of random)", ""]
    shown = [s for s in scores if s.seed == 0]
    for clip in example_clips(clips, {s.clip_id for s in shown}):
        lines += clip_view_md(clip, [s for s in shown if s.clip_id == clip.clip_id],
                              [p for p in preds if p.clip_id == clip.clip_id and p.seed == 0]) + [""]
    return write_text(out_dir / "README.md", "\n".join(lines) + "\n")
