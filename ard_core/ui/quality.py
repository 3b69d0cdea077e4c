"""SAE quality tab: one row per SAE with the quality stage's figures (``sae_metrics``), sortable.

Rows: the unspliced model (its P3 accuracy per track, what the spliced accuracies compare with),
every SAE with its random control after it, and each layer's raw neurons (probes only). Columns:
held-out explained variance and L0, the CE-loss score and the KL at the answer position with the
SAE spliced in, the spliced P3 accuracy (mean and per track), the k = 1 / k = 5 sparse probes (mean
and per track) and seed stability. 'Spliced at' switches the splice's columns between the audio
positions and every position. Cells are numbers, so the table sorts by any column.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import numpy as np
import pandas as pd

from ard_core.catalog import SaeMetricRow
from ard_core.ui.common import guard, note
from ard_core.ui.context import AppContext, UserError

POSITIONS = {"audio": "audio positions", "all": "every position"}
SPLICED = ("ce_score", "kl")
"""Splice figures without a track; per track they are spliced_acc_<track>."""
LEAD = ["SAE", "kind", "layer", "expansion"]


def _suffix(positions: str) -> str:
    return "" if positions == "audio" else f"@{positions}"


def _tracks(rows: list[SaeMetricRow], prefix: str) -> list[str]:
    return sorted({r.metric[len(prefix):] for r in rows if r.metric.startswith(prefix) and "@" not in r.metric})


def _columns(rows: list[SaeMetricRow], positions: str) -> list[tuple[str, str]]:
    """(column title, metric) in display order; 'mean:PREFIX' columns average a prefix over tracks."""
    sfx = _suffix(positions)
    acc, probe = _tracks(rows, "spliced_acc_"), _tracks(rows, "probe_k1_")
    cols = [("EV", "explained_variance"), ("L0", "l0"), ("CE score", "ce_score" + sfx), ("KL", "kl" + sfx),
            ("spliced acc (mean)", "mean:spliced_acc_")]
    cols += [(f"spliced acc: {t}", f"spliced_acc_{t}{sfx}") for t in acc]
    cols += [("probe k=1 (mean)", "mean:probe_k1_"), ("probe k=5 (mean)", "mean:probe_k5_")]
    cols += [(f"probe k={k}: {t}", f"probe_k{k}_{t}") for t in probe for k in (1, 5)]
    return cols + [("seed stability", "seed_stability")]


def quality_table(ctx: AppContext, positions: str = "audio", sort_by: str = "", descending: bool = True) -> pd.DataFrame:
    """The table of the module docstring, sorted by ``sort_by`` (a column title; '' keeps layer order)."""
    if positions not in POSITIONS:
        raise UserError(f"unknown positions {positions!r}; use {list(POSITIONS)}")
    rows = ctx.catalog.sae_metrics()
    saes = ctx.catalog.saes()
    if not rows:
        return pd.DataFrame(columns=LEAD)
    value = {(r.sae_id, r.metric): r.value for r in rows}
    sfx = _suffix(positions)
    acc = _tracks(rows, "spliced_acc_")
    models = sorted({r.sae_id for r in rows if r.metric.startswith("acc_")})
    layers = sorted({s.layer for s in saes})
    entries = [(m, "unspliced model", None, None) for m in models]
    entries += [(s.sae_id, "random control" if s.control else "trained", s.layer, s.expansion) for s in saes]
    entries += [(f"{saes[0].model}-l{l}-neurons", "raw neurons", l, None) for l in layers if saes]
    cols = _columns(rows, positions)
    data = []
    for sae_id, kind, layer, expansion in entries:
        def get(metric: str) -> float | None:
            if kind == "unspliced model" and metric.startswith("spliced_acc_"):
                metric = "acc_" + metric[len("spliced_acc_"):].removesuffix(sfx)
            if metric.startswith("mean:"):
                prefix = metric[5:]
                tracks = acc if prefix == "spliced_acc_" else _tracks(rows, "probe_k1_")
                vals = [get(prefix + t + (sfx if prefix == "spliced_acc_" else "")) for t in tracks]
                return float(np.mean(vals)) if vals and all(v is not None for v in vals) else None
            v = value.get((sae_id, metric))
            return None if v is None else round(float(v), 4)

        data.append([sae_id, kind, layer, expansion] + [get(m) for _, m in cols])
    df = pd.DataFrame(data, columns=LEAD + [c for c, _ in cols])
    if sort_by:
        if sort_by not in df.columns:
            raise UserError(f"no column {sort_by!r} to sort by; choose one of {list(df.columns)}")
        df = df.sort_values(sort_by, ascending=not descending, na_position="last", kind="stable")
    return df.reset_index(drop=True)


@dataclass
class QualityWidgets:
    positions: gr.Radio
    sort_by: gr.Dropdown
    descending: gr.Checkbox
    table: gr.Dataframe


def render(ctx: AppContext) -> QualityWidgets:
    gr.Markdown("#### SAE quality — every SAE beside its frozen random control (the quality stage; "
                "`evaluate --seeds` adds seed stability)")
    first = quality_table(ctx)
    if len(first) == 0:
        gr.Markdown(note("No SAE quality figures in this catalog yet: run `python -m precompute quality`.", "info"))
    gr.Markdown("EV and L0 on held-out test tokens; CE score (H* - H0) / (H_orig - H0) on teacher-forced "
                "captions (1: the splice changes nothing, 0: as bad as zeroing the layer's output there); KL of the "
                "answer's next-token distribution; spliced P3 accuracy per track (the unspliced model's in its "
                "row); k-sparse probes: balanced test accuracy (chance 0.5) on clip-pooled latents or raw neurons.")
    with gr.Row():
        positions = gr.Radio([(v, k) for k, v in POSITIONS.items()], value="audio", label="Spliced at",
                             elem_id="quality-positions")
        sort_by = gr.Dropdown([("layer order", "")] + [(c, c) for c in first.columns[4:]], value="", label="Sort by",
                              elem_id="quality-sort")
        descending = gr.Checkbox(True, label="Highest first", elem_id="quality-descending")
    table = gr.Dataframe(first, interactive=False, wrap=True, elem_id="quality-table")
    return QualityWidgets(positions, sort_by, descending, table)


def listen(ctx: AppContext, w: QualityWidgets) -> None:
    handler = guard(lambda p, s, d: quality_table(ctx, p, s, d))
    for widget in (w.positions, w.sort_by, w.descending):
        widget.change(handler, [w.positions, w.sort_by, w.descending], [w.table], api_visibility="private")
