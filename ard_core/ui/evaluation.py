"""Evaluation tab: the paper's tables from the catalog (long-format ``evaluations`` rows,
pivoted to one row per method and SAE), the steering table, and Table 2 from the
annotations file.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import numpy as np
import pandas as pd

from ard_core.ui.common import guard, note
from ard_core.ui.context import AppContext

TITLES = {
    "table1": "Table 1 — concept naming against reference concepts (Hungarian matching)",
    "table3": "AudioLens Table III — critical layer vs accuracy",
    "table4": "Table 4 — monosemanticity by representative-clip method",
}
METHOD_ORDER = ["ard", "mean_act", "coverage", "random", "poly"]
METRIC_ORDER = ["precision", "recall", "f1", "mAP", "map", "monosemanticity", "r", "p_value"]


def _cell(value: float | None, std: float | None) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    s = f"{value:.3f}"
    if std is not None and not np.isnan(std):
        s += f" ± {std:.3f}"
    return s


def table_names(ctx: AppContext) -> list[str]:
    """The catalog's evaluation tables, the paper's (TITLES) first."""
    return sorted(ctx.catalog.evaluation_tables(), key=lambda n: (n not in TITLES, n))


def evaluation_table(ctx: AppContext, table_name: str) -> pd.DataFrame:
    """One row per (method, SAE/model), one column per metric, cells 'value ± std'."""
    rows = ctx.catalog.evaluation_rows(table_name)
    if not rows:
        return pd.DataFrame(columns=["method", "SAE / model"])
    seen = sorted({r.metric for r in rows})
    metrics = [m for m in METRIC_ORDER if m in seen] + [m for m in seen if m not in METRIC_ORDER]
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for r in rows:
        cells.setdefault((r.method, r.sae_id), {})[r.metric] = _cell(r.value, r.std)

    def order(key: tuple[str, str]) -> tuple:
        m = key[0].split(":")[0]
        return (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), key[0], key[1])

    data = [[m, s] + [c.get(metric, "–") for metric in metrics] for (m, s), c in sorted(cells.items(), key=lambda kv: order(kv[0]))]
    return pd.DataFrame(data, columns=["method", "SAE / model"] + metrics)


def steering_table(ctx: AppContext) -> pd.DataFrame:
    """Table 3's rows: per mapping, method and layer the (feature, value) chosen on probe, its probe flip rate,
    and its sensitivity on test over the movable and over all source samples ('best' marks Table 3's layer)."""

    def num(x: float | None) -> float | None:
        return None if x is None or x != x else round(float(x), 4)

    return pd.DataFrame(
        [[r.mapping, r.method, r.layer, "yes" if r.best_layer else "", f"{r.sae_id}/{r.feature}", round(r.value, 4),
          num(r.probe_flip_rate), num(r.sensitivity), r.n, num(r.sensitivity_all), r.n_all, r.judge]
         for r in ctx.catalog.steering_results()],
        columns=["mapping", "method", "layer", "best", "feature", "value", "probe flip rate", "sensitivity", "n",
                 "sensitivity (all)", "n (all)", "judge"])


@dataclass
class EvaluationWidgets:
    refresh: gr.Button
    human: gr.Markdown
    human_table: gr.Dataframe


def render(ctx: AppContext) -> EvaluationWidgets:
    from ard_core.ui.annotate import summary_markdown, summary_table

    names = table_names(ctx)
    if not names:
        gr.Markdown(note("No evaluation rows in this catalog yet: the evaluate and lens stages write them.", "warn"))
    for name in names:
        gr.Markdown(f"#### {TITLES.get(name, name)}")
        gr.Dataframe(evaluation_table(ctx, name), interactive=False, wrap=True, elem_id=f"eval-{name}")
    gr.Markdown("#### Table 2 — human evaluation of concept names (from the Annotate tab)")
    with gr.Row():
        # callables: recomputed on every page load, so new annotations show without a restart
        human = gr.Markdown(guard(lambda: summary_markdown(ctx)))
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=90)
    human_table = gr.Dataframe(guard(lambda: summary_table(ctx)), interactive=False)
    gr.Markdown("#### Steering (Table 3) — each method's feature and value chosen on probe, its sensitivity on test")
    steer = steering_table(ctx)
    if len(steer):
        gr.Dataframe(steer, interactive=False, elem_id="eval-steering")
    else:
        gr.Markdown(note("No steering evaluation yet: run `python -m precompute steer-eval`.", "info"))
    return EvaluationWidgets(refresh, human, human_table)


def listen(ctx: AppContext, w: EvaluationWidgets) -> None:
    from ard_core.ui.annotate import summary_markdown, summary_table

    w.refresh.click(guard(lambda: (summary_markdown(ctx), summary_table(ctx))), None, [w.human, w.human_table],
                    api_visibility="private")
