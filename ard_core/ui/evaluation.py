"""Evaluation tab: the paper's tables from the catalog (long-format ``evaluations`` rows,
pivoted to one row per method and SAE, one table per protocol), the per-clip view (a test
clip's labels, the named features that fire on it and what they matched), the steering
table, and Table 2 from the annotations file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import gradio as gr
import numpy as np
import pandas as pd

from ard_core.catalog import NotFound
from ard_core.ui.common import guard, note
from ard_core.ui.context import AppContext, UserError

TITLES = {
    "table1": "Table 1 — concept naming against reference concepts (Hungarian matching)",
    "table1/per_clip": "Table 1 — per clip: the m most active named features vs the clip's label phrases "
                       "(mean ± bootstrap std over test clips; Rand. Rep. ± std over seeds)",
    "table1_gap/per_clip": "Table 1 — paired per-clip gaps between methods (± bootstrap std)",
    "table1/vocabulary": "Table 1, vocabulary coverage — every name vs one reference per label, one global matching",
    "table1/seeds": "Table 1 over SAE seeds (mean ± std; `evaluate --seeds`)",
    "table3": "AudioLens Table III — critical layer vs accuracy",
    "table4": "Table 4 — monosemanticity by representative-clip method",
    "table4/seeds": "Table 4 over SAE seeds (mean ± std)",
    "steering": "Table 3 — steering sensitivity, best multiple (± bootstrap std over source samples)",
    "steering/seeds": "Table 3 over SAE seeds (mean ± std)",
    "reference_check/per_clip": "Embedder check — share of distinct-reference pairs at least gamma similar "
                                "(high: names cannot be told right from wrong)",
    "track_match/vocabulary": "Named AR&D concepts matching a label of each track",
}
ORDER = ["table1", "table1_gap", "reference_check", "table3", "table4", "steering", "track_match"]
"""The order of the tab's tables; others follow by name."""
SINGLE = ("run", "per_clip")
"""Protocols shown under the table's own name (its main reading)."""
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
    """The catalog's evaluation tables in :data:`ORDER`, then the others by name."""
    return sorted(ctx.catalog.evaluation_tables(), key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def sections(ctx: AppContext) -> list[tuple[str, str]]:
    """(key, title) of every (table, protocol) with rows: key 'table1/per_clip', or the table's name for 'run'."""
    out = []
    for name in table_names(ctx):
        for protocol in sorted(ctx.catalog.evaluation_protocols(name), key=lambda p: (p not in SINGLE, p)):
            key = name if protocol == "run" else f"{name}/{protocol}"
            out.append((key, TITLES.get(key, TITLES.get(name, key) + f" ({protocol})")))
    return out


def evaluation_table(ctx: AppContext, table_name: str, protocol: str | None = None) -> pd.DataFrame:
    """One row per (method, SAE/model), one column per metric, cells 'value ± std'; ``table_name`` may be
    'TABLE/PROTOCOL' (else every protocol's rows)."""
    if "/" in table_name:
        table_name, protocol = table_name.split("/", 1)
    rows = ctx.catalog.evaluation_rows(table_name, protocol=protocol)
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


# -- the per-clip view -----------------------------------------------------------------------
CLIP_SCORE_COLUMNS = ["method", "predictions", "references", "precision", "recall", "F1", "AP"]
PREDICTION_COLUMNS = ["method", "rank", "feature", "name", "activation", "reference", "similarity", "matched"]


class ClipView(NamedTuple):
    header: str
    audio: str | None
    scores: pd.DataFrame
    predictions: pd.DataFrame


def clip_view(ctx: AppContext, clip_id: str) -> ClipView:
    """One test clip: its labels (the references), per method its scores and the named features that
    fire on it, by activation, with the reference each matched (or came closest to) and the similarity."""
    if not clip_id:
        raise UserError("choose a test clip")
    try:
        ev = ctx.catalog.clip_evaluation(clip_id)
    except NotFound as exc:
        raise UserError(str(exc)) from None
    labels = ", ".join(f"{t}: **{v}**" for t, v in sorted(ev.clip.labels.items())) or "no labels"
    refs = sorted({p.reference for p in ev.predictions if p.reference})
    header = (f"`{clip_id}` ({ev.clip.split}) · labels {labels}  \n*{ev.clip.caption or ''}*  \n"
              f"<small>references seen by the predictions: {', '.join(refs) or '–'}; Rand. Rep. shows seed 0</small>")
    scores = pd.DataFrame([[s.method, s.n_predictions, s.n_references, round(s.precision, 3), round(s.recall, 3),
                            round(s.f1, 3), round(s.ap, 3)] for s in ev.scores], columns=CLIP_SCORE_COLUMNS)
    preds = pd.DataFrame([[p.method, p.rank, f"{p.sae_id}/{p.feature}", p.name, round(p.activation, 4),
                           p.reference or "–", None if p.similarity is None else round(p.similarity, 3),
                           "✓" if p.matched else ""] for p in ev.predictions], columns=PREDICTION_COLUMNS)
    path = ctx.catalog.resolve(ev.clip.path)
    return ClipView(header, str(path) if path else None, scores, preds)


@dataclass
class EvaluationWidgets:
    refresh: gr.Button
    human: gr.Markdown
    human_table: gr.Dataframe
    clip: gr.Dropdown | None
    clip_header: gr.Markdown | None
    clip_audio: gr.Audio | None
    clip_scores: gr.Dataframe | None
    clip_predictions: gr.Dataframe | None


def _render_clip_view(ctx: AppContext) -> tuple:
    """The per-clip widgets, filled for the first evaluated clip (all None when the catalog has no per-clip results)."""
    clips = ctx.catalog.evaluated_clips()
    gr.Markdown("#### Per clip — what each method predicts for one test clip")
    if not clips:
        gr.Markdown(note("No per-clip results yet: the evaluate stage writes them.", "info"))
        return None, None, None, None, None
    first = clip_view(ctx, clips[0])
    choice = gr.Dropdown(clips, value=clips[0], label="Test clip", elem_id="eval-clip")
    with gr.Row():
        header = gr.Markdown(first.header, elem_id="eval-clip-header")
        audio = gr.Audio(first.audio, label="clip", interactive=False, scale=0, min_width=260)
    scores = gr.Dataframe(first.scores, interactive=False, elem_id="eval-clip-scores")
    preds = gr.Dataframe(first.predictions, interactive=False, wrap=True, elem_id="eval-clip-predictions")
    return choice, header, audio, scores, preds


def render(ctx: AppContext) -> EvaluationWidgets:
    from ard_core.ui.annotate import summary_markdown, summary_table

    keys = sections(ctx)
    if not keys:
        gr.Markdown(note("No evaluation rows in this catalog yet: the evaluate and lens stages write them.", "warn"))
    shown: set[str] = set()
    for key, title in keys:
        name = key.split("/")[0]
        elem = f"eval-{name}" if name not in shown else "eval-" + key.replace("/", "-")  # the main reading first
        shown.add(name)
        gr.Markdown(f"#### {title}")
        gr.Dataframe(evaluation_table(ctx, key if "/" in key else key + "/run"), interactive=False, wrap=True,
                     elem_id=elem)
    clip_widgets = _render_clip_view(ctx)
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
    return EvaluationWidgets(refresh, human, human_table, *clip_widgets)


def listen(ctx: AppContext, w: EvaluationWidgets) -> None:
    from ard_core.ui.annotate import summary_markdown, summary_table

    w.refresh.click(guard(lambda: (summary_markdown(ctx), summary_table(ctx))), None, [w.human, w.human_table],
                    api_visibility="private")
    if w.clip is not None:
        w.clip.change(guard(lambda clip_id: tuple(clip_view(ctx, clip_id))), [w.clip],
                      [w.clip_header, w.clip_audio, w.clip_scores, w.clip_predictions], api_name="clip_view")
