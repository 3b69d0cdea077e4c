"""The paper's tables as data: built once from the catalog's long-format rows, then rendered as
Markdown (the README and the run's reports, ``precompute.markdown``), as a table on screen (the
Evaluation tab) and as CSV (its downloads), so every view prints the same figures.

A :class:`Table` has label columns (``index``: "Method", "e", ...) and value columns whose
cells are :class:`Cell` (value, std, 95% interval, n). On screen and in Markdown a cell reads
"0.55 +- 0.02"; in CSV every part has its own numeric column ("F1", "F1 std", "F1 ci_low", ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from ard_core.catalog.rows import EvaluationRow, LensSummaryRow

METHOD_ORDER = ("poly", "random", "random_sae", "mean_act", "coverage", "ard")
METHOD_LABEL = {"poly": "Poly. Feats.", "random": "Rand. Rep.", "random_sae": "Rand. SAE", "mean_act": "Mean Act.",
                "coverage": "Coverage", "ard": "AR&D"}
"""'random_sae': AR&D on the Table 1 SAE's frozen random control (never trained), a row of its own."""
GAPS = (("ard", "random"), ("ard", "poly"), ("ard", "random_sae"), ("mean_act", "random"), ("coverage", "random"),
        ("ard", "mean_act"), ("ard", "coverage"))
"""Paired per-clip differences reported with their spread (table1_gap: method 'A-B'), in this order."""
T1_COLUMNS = (("ms", "MS"), ("precision", "Precision"), ("recall", "Recall"), ("f1", "F1"), ("map", "mAP"))


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


@dataclass(frozen=True)
class Cell:
    """One figure with its spread: value, std, 95% interval, n (each may be None)."""

    value: float | None
    std: float | None = None
    low: float | None = None
    high: float | None = None
    n: int | None = None
    digits: int = 2
    show_n: bool = False
    """Print '(n=N)' after the figure (Table 3's denominators)."""

    @classmethod
    def of(cls, r: EvaluationRow | None, **kw: object) -> "Cell | None":
        return None if r is None else cls(r.value, r.std, r.ci_low, r.ci_high, r.n, **kw)  # type: ignore[arg-type]

    def text(self, interval: bool = False, pm: str = "+-") -> str:
        """'0.55 +- 0.02', with ' [0.51, 0.59]' when ``interval`` and present; '-' when there is no value."""
        if _missing(self.value):
            return "-"
        d = self.digits
        s = f"{self.value:.{d}f}" + (f" {pm} {self.std:.{d}f}" if not _missing(self.std) else "")
        if interval and not _missing(self.low) and not _missing(self.high):
            s += f" [{self.low:.{d}f}, {self.high:.{d}f}]"
        if self.show_n and self.n:
            s += f" (n={self.n})"
        return s


@dataclass
class Table:
    """A titled table: label columns (``index``) and value columns of :class:`Cell` (None = no figure)."""

    key: str
    title: str
    index: list[str]
    columns: list[str]
    rows: list[tuple[list[str], list[Cell | None]]] = field(default_factory=list)
    interval: bool = False
    """Cells print their 95% interval too (the paired gaps)."""

    def __len__(self) -> int:
        return len(self.rows)

    def cells(self, pm: str = "+-") -> list[list[str]]:
        """Every row as text: its labels, then each cell as :meth:`Cell.text` ('-' for none)."""
        return [labels + [c.text(self.interval, pm) if c is not None else "-" for c in cells]
                for labels, cells in self.rows]

    def header(self) -> list[str]:
        return self.index + self.columns

    def markdown(self) -> list[str]:
        lines = ["| " + " | ".join(self.header()) + " |", "|" + "---|" * len(self.header())]
        return lines + ["| " + " | ".join(row) + " |" for row in self.cells()]

    def records(self) -> tuple[list[str], list[list[object]]]:
        """The numeric form (CSV): per value column its value, and its std / ci_low / ci_high / n where any
        cell of the column has one."""
        parts = []
        for j, col in enumerate(self.columns):
            present = [c for _, cells in self.rows if (c := cells[j]) is not None]
            parts.append((col, [p for p in ("std", "low", "high", "n") if any(getattr(c, p) is not None for c in present)]))
        header = list(self.index)
        for col, extra in parts:
            header += [col] + [f"{col} {'ci_' + p if p in ('low', 'high') else p}" for p in extra]
        out = []
        for labels, cells in self.rows:
            row: list[object] = list(labels)
            for (_, extra), c in zip(parts, cells):
                row += [None if c is None or _missing(c.value) else c.value]
                row += [None if c is None else getattr(c, p) for p in extra]
            out.append(row)
        return header, out


def _index(rows: Iterable[EvaluationRow]) -> dict[tuple[str, str, str], EvaluationRow]:
    return {(r.method, r.sae_id, r.metric): r for r in rows}


def table1(rows: Sequence[EvaluationRow], sae_id: str, key: str = "table1", title: str = "Table 1") -> Table:
    """Table 1 of one protocol and SAE: a line per method in the paper's order, MS / P / R / F1 / mAP."""
    idx = _index(rows)
    t = Table(key, title, ["Method"], [h for _, h in T1_COLUMNS])
    for m in METHOD_ORDER:
        if any((m, sae_id, k) in idx for k, _ in T1_COLUMNS):
            t.rows.append(([METHOD_LABEL[m]], [Cell.of(idx.get((m, sae_id, k))) or Cell(None) for k, _ in T1_COLUMNS]))
    return t


def gaps(rows: Sequence[EvaluationRow], key: str = "table1_gap", title: str = "Paired per-clip gaps") -> Table:
    """The paired per-clip gaps (A - B) of F1 and mAP, with std and 95% interval."""
    by: dict[str, dict[str, EvaluationRow]] = {}
    for r in rows:
        by.setdefault(r.method, {})[r.metric] = r
    order = [f"{a}-{b}" for a, b in GAPS]
    t = Table(key, title, ["Gap (per clip, paired)"], ["F1", "mAP"], interval=True)
    for pair, metrics in sorted(by.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])):
        a, b = pair.split("-")
        t.rows.append(([f"{METHOD_LABEL.get(a, a)} - {METHOD_LABEL.get(b, b)}"],
                       [Cell.of(metrics.get("f1")) or Cell(None), Cell.of(metrics.get("map")) or Cell(None)]))
    return t


def reference_check_sentence(rows: Sequence[EvaluationRow], gamma: float) -> str | None:
    """One sentence: how well the text embedder separates the references themselves (None without the check)."""
    by = {r.metric: r for r in rows}
    if "pairs_over_gamma" not in by:
        return None
    over, mean = by["pairs_over_gamma"], by.get("mean_similarity")
    return (f"Embedder check ({over.method}): {100 * over.value:.0f}% of the {over.n} pairs of distinct references "
            f"are at least gamma = {gamma} similar to each other" +
            (f" (mean similarity {mean.value:.2f})" if mean else "") +
            "; a name close to one of such a pair matches the other as well, so the higher this share, the less "
            "the table can tell a right name from a wrong one.")


def table4(rows: Sequence[EvaluationRow], layers: dict[str, tuple[int, int]], key: str = "table4",
           title: str = "Table 4") -> Table:
    """Highest MS by layer (columns) and method / expansion (lines); ``layers``: sae_id -> (layer, expansion)."""
    ls = sorted({layers[r.sae_id][0] for r in rows if r.sae_id in layers})
    exps = sorted({layers[r.sae_id][1] for r in rows if r.sae_id in layers})
    ard = {layers[r.sae_id]: r for r in rows if r.method == "ard" and r.sae_id in layers}
    rnd = {layers[r.sae_id]: r for r in rows if r.method == "random_sae" and r.sae_id in layers}
    poly = {layers[r.sae_id][0]: r for r in rows if r.method == "poly" and r.sae_id in layers}

    def line(get: dict, keys: list) -> list[Cell | None]:
        return [Cell.of(get.get(k)) or Cell(None) for k in keys]

    t = Table(key, title, ["Method", "e"], [f"layer {l}" for l in ls])
    t.rows.append((["Poly. Feats.", "-"], line(poly, ls)))
    t.rows += [(["AR&D", str(e)], line(ard, [(l, e) for l in ls])) for e in exps]
    t.rows += [(["Rand. SAE", str(e)], line(rnd, [(l, e) for l in ls])) for e in sorted({e for _, e in rnd})]
    return t


def steering(rows: Sequence[EvaluationRow], order: Sequence[str] = (), key: str = "steering",
             title: str = "Table 3") -> Table:
    """Table 3: per method, each mapping's sensitivity at its best layer with its spread (and n, for one run);
    mappings in ``order`` (steer-eval's config) first."""
    seen = list(dict.fromkeys(r.metric for r in rows))
    mappings = [m for m in order if m in seen] + [m for m in seen if m not in order]
    idx = {(r.method, r.metric): r for r in rows}
    t = Table(key, title, ["Method"], mappings)
    for m in ("poly", "ard"):
        if any((m, k) in idx for k in mappings):
            t.rows.append(([METHOD_LABEL[m]], [Cell.of(idx.get((m, k)), show_n=idx[(m, k)].protocol == "run")
                                               if (m, k) in idx else Cell(None) for k in mappings]))
    return t


def lens_table2(summary: Sequence[LensSummaryRow], key: str = "lens_table2",
                title: str = "AudioLens Table II") -> Table:
    """AudioLens Table II: per track its accuracy (%) and critical layer under each prompt format."""
    fmts = sorted({s.prompt_format for s in summary})
    tracks = list(dict.fromkeys(s.track for s in summary))
    by = {(s.track, s.prompt_format): s for s in summary}
    t = Table(key, title, ["track", "|Y|", "n"], [c for f in fmts for c in (f"{f} acc", f"{f} crit. layer")])
    for tr in tracks:
        first = next(s for s in summary if s.track == tr)
        cells: list[Cell | None] = []
        for f in fmts:
            s = by.get((tr, f))
            cells += [Cell(100 * s.accuracy, digits=1) if s else Cell(None), Cell(s.critical_layer) if s else Cell(None)]
        t.rows.append(([tr, str(first.n_labels), str(first.n)], cells))
    return t


def lens_table3(rows: Sequence[EvaluationRow], n_pairs: int, key: str = "lens_table3",
                title: str = "AudioLens Table III") -> Table:
    """AudioLens Table III: Pearson r between critical layer and accuracy, with its p-value, per model."""
    by: dict[str, dict[str, EvaluationRow]] = {}
    for r in rows:
        by.setdefault(r.sae_id, {})[r.metric] = r
    t = Table(key, title, ["model", "(track, format) pairs"], ["Pearson r", "p-value"])
    for model, m in sorted(by.items()):
        t.rows.append(([model, str(n_pairs)], [Cell.of(m.get("r")) or Cell(None),
                                               Cell.of(m.get("p_value"), digits=3) or Cell(None)]))
    return t


def by_sae(rows: Sequence[EvaluationRow], key: str, title: str, digits: int = 2) -> Table:
    """Any one-metric table as SAE (lines) x method (columns): the score stage's coverage shares, say."""
    saes = sorted({r.sae_id for r in rows})
    idx = {(r.method, r.sae_id): r for r in rows}
    methods = sorted({r.method for r in rows}, key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else -1, m))
    t = Table(key, title, ["SAE"], [METHOD_LABEL.get(m, m) for m in methods])
    t.rows += [([s], [Cell.of(idx.get((m, s)), digits=digits) for m in methods]) for s in saes]
    return t


def reference_check(rows: Sequence[EvaluationRow], key: str = "reference_check",
                    title: str = "Embedder check") -> Table:
    """Per text embedder: the share of distinct-reference pairs at least gamma similar, and their mean similarity."""
    by: dict[str, dict[str, EvaluationRow]] = {}
    for r in rows:
        by.setdefault(r.method, {})[r.metric] = r
    t = Table(key, title, ["embedder"], ["pairs >= gamma", "mean similarity"])
    t.rows += [([emb], [Cell.of(m.get("pairs_over_gamma")), Cell.of(m.get("mean_similarity"))])
               for emb, m in sorted(by.items())]
    return t


PROTOCOL_TITLES = {
    "per_clip": "Table 1, per clip (SAE {sae}): the m most active named features of each test clip vs its label "
                "phrases; mean ± bootstrap std over the clips (Rand. Rep.: ± std over its seeds)",
    "vocabulary": "Table 1, vocabulary coverage (SAE {sae}): every name vs one reference per label, one global "
                  "matching",
    "seeds": "Table 1 over SAE seeds (SAE {sae}; mean ± std over retrained runs, `evaluate --seeds`)",
}


def catalog_tables(cat: "object") -> list[Table]:
    """Every paper table the catalog has rows for, in reading order: Table 1 (per protocol and SAE) with its
    paired gaps, the embedder check, Table 4, Table 3 (steering), AudioLens Tables II and III, the score
    stage's coverage shares and the tracks the names reach; ``over seeds`` versions where they exist."""
    rows = cat.evaluation_rows  # type: ignore[attr-defined]
    layers = {s.sae_id: (s.layer, s.expansion) for s in cat.saes()}  # type: ignore[attr-defined]
    out: list[Table] = []
    for protocol in ("per_clip", "vocabulary", "seeds"):
        t1 = rows("table1", protocol=protocol)
        for sae in sorted({r.sae_id for r in t1}):
            suffix = "" if protocol == "per_clip" else f"_{protocol}"
            out.append(table1(t1, sae, f"table1{suffix}", PROTOCOL_TITLES[protocol].format(sae=sae)))
        if gap_rows := rows("table1_gap", protocol=protocol):
            out.append(gaps(gap_rows, f"table1_gap{'_seeds' * (protocol == 'seeds')}",
                            "Paired per-clip gaps between methods (mean, bootstrap std, 95% interval)"
                            + (" over SAE seeds" if protocol == "seeds" else "")))
    if rc := rows("reference_check"):
        out.append(reference_check(rc, title="Embedder check: distinct references at least gamma similar to each "
                                             "other (high: the table cannot tell a right name from a wrong one)"))
    for protocol, suffix in (("run", ""), ("seeds", "_seeds")):
        if t4 := rows("table4", protocol=protocol):
            out.append(table4(t4, layers, f"table4{suffix}", "Table 4: highest monosemanticity by method / expansion "
                              "and layer (0-based decoder layers)" + (", over SAE seeds" * bool(suffix))))
    for protocol, suffix in (("run", ""), ("seeds", "_seeds")):
        if st := rows("steering", protocol=protocol):
            out.append(steering(st, (), f"steering{suffix}", "Table 3: steering sensitivity of each method's "
                                "(feature, value) chosen on probe, at its best layer, on test (± bootstrap std; "
                                "n = source samples not already answered with the target)"
                                + (", over SAE seeds" * bool(suffix))))
    for model in cat.lens_models():  # type: ignore[attr-defined]
        summary = cat.lens_summary(model)  # type: ignore[attr-defined]
        out.append(lens_table2(summary, title=f"AudioLens Table II ({model}): accuracy % and critical layer "
                                              "per track and prompt format"))
        if t3 := rows("table3", sae_id=model):
            out.append(lens_table3(t3, len(summary), title="AudioLens Table III: critical layer vs accuracy"))
    if cov := rows("coverage"):
        out.append(by_sae(cov, "coverage", "Share of each method's selected top clips with coverage c < 0.5 "
                          "(score stage)"))
    if tm := rows("track_match"):
        t = Table("track_match", "Named AR&D concepts whose name matches a label of the track (similarity >= "
                  "gamma, all SAEs)", ["track"], ["named concepts"])
        t.rows += [([r.method], [Cell(r.value, digits=0)]) for r in tm]
        out.append(t)
    return out
