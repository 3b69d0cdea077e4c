"""Markdown renderings of the ``evaluations`` rows, shared by the evaluate stage's report, the
``--seeds`` report and ``python -m precompute report`` (so the README and the run's reports
print the same figures the same way).
"""

from __future__ import annotations

from typing import Iterable, Sequence

from ard_core.catalog import ClipPredictionRow, ClipRow, ClipScoreRow, EvaluationRow

METHOD_ORDER = ("poly", "random", "random_sae", "mean_act", "coverage", "ard")
METHOD_LABEL = {"poly": "Poly. Feats.", "random": "Rand. Rep.", "random_sae": "Rand. SAE", "mean_act": "Mean Act.",
                "coverage": "Coverage", "ard": "AR&D"}
"""'random_sae': AR&D on the Table 1 SAE's frozen random control (never trained), a row of its own."""
GAPS = (("ard", "random"), ("ard", "poly"), ("ard", "random_sae"), ("mean_act", "random"), ("coverage", "random"),
        ("ard", "mean_act"), ("ard", "coverage"))
"""Paired per-clip differences reported with their spread (table1_gap: method 'A-B'), in this order."""
T1_COLUMNS = (("ms", "MS"), ("precision", "Precision"), ("recall", "Recall"), ("f1", "F1"), ("map", "mAP"))


def cell(r: EvaluationRow | None, interval: bool = False) -> str:
    """'0.55 +- 0.02' (std), with ' [0.51, 0.59]' (95% interval) when asked and present; '-' when absent."""
    if r is None or r.value is None:
        return "-"
    s = f"{r.value:.2f}" + (f" +- {r.std:.2f}" if r.std is not None else "")
    if interval and r.ci_low is not None and r.ci_high is not None:
        s += f" [{r.ci_low:.2f}, {r.ci_high:.2f}]"
    return s


def _index(rows: Iterable[EvaluationRow]) -> dict[tuple[str, str, str], EvaluationRow]:
    return {(r.method, r.sae_id, r.metric): r for r in rows}


def table1_md(rows: Sequence[EvaluationRow], sae_id: str) -> list[str]:
    """Table 1 of one protocol: one line per method in the paper's order."""
    idx = _index(rows)
    lines = ["| Method | " + " | ".join(h for _, h in T1_COLUMNS) + " |", "|---|" + "---|" * len(T1_COLUMNS)]
    for m in METHOD_ORDER:
        if any((m, sae_id, k) in idx for k, _ in T1_COLUMNS):
            lines.append(f"| {METHOD_LABEL[m]} | " + " | ".join(cell(idx.get((m, sae_id, k))) for k, _ in T1_COLUMNS)
                         + " |")
    return lines


def gaps_md(rows: Sequence[EvaluationRow]) -> list[str]:
    """The paired per-clip gaps (A - B) with std and 95% interval."""
    by: dict[str, dict[str, EvaluationRow]] = {}
    for r in rows:
        by.setdefault(r.method, {})[r.metric] = r
    lines = ["| Gap (per clip, paired) | F1 | mAP |", "|---|---|---|"]
    order = [f"{a}-{b}" for a, b in GAPS]
    for pair, metrics in sorted(by.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])):
        a, b = pair.split("-")
        label = f"{METHOD_LABEL.get(a, a)} - {METHOD_LABEL.get(b, b)}"
        lines.append(f"| {label} | {cell(metrics.get('f1'), True)} | {cell(metrics.get('map'), True)} |")
    return lines


def reference_check_md(rows: Sequence[EvaluationRow], gamma: float) -> list[str]:
    """One sentence: how well the text embedder separates the references themselves."""
    by = {r.metric: r for r in rows}
    if "pairs_over_gamma" not in by:
        return []
    over, mean = by["pairs_over_gamma"], by.get("mean_similarity")
    return [f"Embedder check ({over.method}): {100 * over.value:.0f}% of the {over.n} pairs of distinct references "
            f"are at least gamma = {gamma} similar to each other" +
            (f" (mean similarity {mean.value:.2f})" if mean else "") +
            "; a name close to one of such a pair matches the other as well, so the higher this share, the less "
            "the table can tell a right name from a wrong one."]


def table4_md(rows: Sequence[EvaluationRow], layers: dict[str, tuple[int, int]]) -> list[str]:
    """Highest MS by layer (columns) and expansion (lines); ``layers``: sae_id -> (layer, expansion)."""
    ls = sorted({layers[r.sae_id][0] for r in rows if r.sae_id in layers})
    exps = sorted({layers[r.sae_id][1] for r in rows if r.sae_id in layers})
    ard = {layers[r.sae_id]: r for r in rows if r.method == "ard" and r.sae_id in layers}
    rnd = {layers[r.sae_id]: r for r in rows if r.method == "random_sae" and r.sae_id in layers}
    poly = {layers[r.sae_id][0]: r for r in rows if r.method == "poly" and r.sae_id in layers}
    lines = ["| Method | e | " + " | ".join(f"layer {l}" for l in ls) + " |", "|---|---|" + "---|" * len(ls),
             "| Poly. Feats. | - | " + " | ".join(cell(poly.get(l)) for l in ls) + " |"]
    for e in exps:
        lines.append(f"| AR&D | {e} | " + " | ".join(cell(ard.get((l, e))) for l in ls) + " |")
    for e in sorted({e for _, e in rnd}):
        lines.append(f"| Rand. SAE | {e} | " + " | ".join(cell(rnd.get((l, e))) for l in ls) + " |")
    return lines


def steering_md(rows: Sequence[EvaluationRow], order: Sequence[str] = ()) -> list[str]:
    """Table 3: per method, each mapping's sensitivity at its best layer with its spread and n; mappings in
    ``order`` (steer-eval's config) first."""
    seen = list(dict.fromkeys(r.metric for r in rows))
    mappings = [m for m in order if m in seen] + [m for m in seen if m not in order]
    idx = {(r.method, r.metric): r for r in rows}
    lines = ["| Method | " + " | ".join(mappings) + " |", "|---|" + "---|" * len(mappings)]
    for m in ("poly", "ard"):
        if any((m, k) in idx for k in mappings):
            cells = [cell(idx.get((m, k))) + (f" (n={idx[(m, k)].n})" if (m, k) in idx and idx[(m, k)].n
                                               and idx[(m, k)].protocol == "run" else "") for k in mappings]
            lines.append(f"| {METHOD_LABEL[m]} | " + " | ".join(cells) + " |")
    return lines


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
