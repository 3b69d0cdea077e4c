"""Markdown renderings of the ``evaluations`` rows, shared by the evaluate stage's report, the
``--seeds`` report and ``python -m precompute report`` (so the README and the run's reports
print the same figures the same way).
"""

from __future__ import annotations

from typing import Sequence

from ard_core import tables
from ard_core.catalog import ClipPredictionRow, ClipRow, ClipScoreRow, EvaluationRow
from ard_core.tables import METHOD_LABEL


def table1_md(rows: Sequence[EvaluationRow], sae_id: str) -> list[str]:
    """Table 1 of one protocol: one line per method in the paper's order."""
    return tables.table1(rows, sae_id).markdown()


def gaps_md(rows: Sequence[EvaluationRow]) -> list[str]:
    """The paired per-clip gaps (A - B) with std and 95% interval."""
    return tables.gaps(rows).markdown()


def reference_check_md(rows: Sequence[EvaluationRow], gamma: float) -> list[str]:
    """One sentence: how well the text embedder separates the references themselves."""
    return [s] if (s := tables.reference_check_sentence(rows, gamma)) else []


def table4_md(rows: Sequence[EvaluationRow], layers: dict[str, tuple[int, int]]) -> list[str]:
    """Highest MS by layer (columns) and expansion (lines); ``layers``: sae_id -> (layer, expansion)."""
    return tables.table4(rows, layers).markdown()


def steering_md(rows: Sequence[EvaluationRow], order: Sequence[str] = ()) -> list[str]:
    """Table 3: per method, each mapping's sensitivity at its best layer with its spread and n; mappings in
    ``order`` (steer-eval's config) first."""
    return tables.steering(rows, order).markdown()


def clip_view_md(clip: ClipRow, scores: Sequence[ClipScoreRow], preds: Sequence[ClipPredictionRow]) -> list[str]:
    """One test clip: its labels, and per method the named features that fire on it and what they matched."""
    labels = ", ".join(f"{t}={v}" for t, v in sorted(clip.labels.items()))
    lines = [f"**{clip.clip_id}** ({labels})", "", "| Method | rank | feature | name | activation | reference | sim | match |",
             "|---|---|---|---|---|---|---|---|"]
    for s in scores:
        mine = [p for p in preds if (p.method, p.seed) == (s.method, s.seed)]
        label = METHOD_LABEL.get(s.method, s.method) + (f" (seed {s.seed})" if s.method == "random" else "")
        if not mine:
            lines.append(f"| {label} | - | - | (no named feature fires) | - | - | - | - |")
        for p in mine:
            sim = f"{p.similarity:.2f}" if p.similarity is not None else "-"
            lines.append(f"| {label} | {p.rank} | {p.feature} | {p.name} | {p.activation:.3f} | {p.reference or '-'} | "
                         f"{sim} | {'yes' if p.matched else 'no'} |")
        lines.append(f"| {label} | | | P {s.precision:.2f}, R {s.recall:.2f}, F1 {s.f1:.2f}, AP {s.ap:.2f} | | | | |")
    return lines
