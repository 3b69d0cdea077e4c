"""Evaluation tab: the paper's tables from the catalog (long-format ``evaluations`` rows,
pivoted to one row per method and SAE, one table per protocol), the per-clip view (a test
clip's labels, the named features that fire on it and what they matched), the steering
table, and Table 2 from the annotations file.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import gradio as gr
import numpy as np
import pandas as pd

from ard_core.catalog import NotFound
from ard_core.tables import Table, catalog_tables
from ard_core.ui.common import guard, note
from ard_core.ui.context import AppContext, UserError

STEERING_TITLE = ("Table 3 per layer: each method's (feature, value) chosen on probe at every layer, its probe flip "
                  "rate and its test sensitivity over the movable and over all source samples (best = Table 3's layer)")


def tables(ctx: AppContext) -> list[Table]:
    """The paper's tables this catalog has rows for (:func:`ard_core.tables.catalog_tables`)."""
    return catalog_tables(ctx.catalog)


def table_frame(table: Table) -> pd.DataFrame:
    """A table as shown: label columns, then each figure as 'value ± std' ('-' where it has none)."""
    return pd.DataFrame(table.cells(pm="±"), columns=table.header())


def table_csv(table: Table, folder: Path) -> Path:
    """Write ``folder/KEY.csv``: the numeric form of the table (each figure's value, std, interval and n in
    columns of their own), for the Evaluation tab's downloads."""
    header, records = table.records()
    return write_csv(folder / f"{table.key}.csv", pd.DataFrame(records, columns=header))


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


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


def _table_block(title: str, frame: pd.DataFrame, csv: Path, elem_id: str) -> None:
    gr.Markdown(f"#### {title}")
    gr.Dataframe(frame, interactive=False, wrap=True, elem_id=elem_id)
    gr.DownloadButton(f"Download CSV ({csv.name})", value=str(csv), size="sm", elem_id=f"{elem_id}-csv")


def render(ctx: AppContext) -> EvaluationWidgets:
    folder = Path(tempfile.mkdtemp(prefix="ard-tables-"))
    shown = tables(ctx)
    if not shown:
        gr.Markdown(note("No evaluation rows in this catalog yet: the evaluate and lens stages write them.", "warn"))
    for t in shown:
        _table_block(t.title, table_frame(t), table_csv(t, folder), f"eval-{t.key}")
    steer = steering_table(ctx)
    if len(steer):
        _table_block(STEERING_TITLE, steer, write_csv(folder / "steering_per_layer.csv", steer), "eval-steering-layers")
    else:
        gr.Markdown(note("No steering evaluation yet: run `python -m precompute steer-eval`.", "info"))
    clip_widgets = _render_clip_view(ctx)
    gr.Markdown("#### Table 2 — human evaluation of concept names (from the Annotate tab)")
    with gr.Row():
        human = gr.Markdown("No annotations yet.")  # filled on every page load (listen)
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=90)
    human_table = gr.Dataframe(interactive=False)
    return EvaluationWidgets(refresh, human, human_table, *clip_widgets)


def listen(ctx: AppContext, w: EvaluationWidgets, demo: gr.Blocks) -> None:
    from ard_core.ui.annotate import summary_markdown, summary_table

    @guard
    def human() -> tuple[str, pd.DataFrame]:
        return summary_markdown(ctx), summary_table(ctx)

    # on every page load and on Refresh, so new annotations show without a restart
    demo.load(human, None, [w.human, w.human_table], api_visibility="private")
    w.refresh.click(human, None, [w.human, w.human_table], api_visibility="private")
    if w.clip is not None:

        def clip_view_api(clip_id: str) -> tuple:
            """One evaluated test clip: its labels (markdown), audio, per-method scores and the named
            features that fire on it with the reference each matched.

            Args:
                clip_id: a clip id listed in the Evaluation tab's test-clip menu
            """
            return tuple(guard(clip_view)(ctx, clip_id))

        clip_view_api.__name__ = "clip_view"  # the MCP tool's name
        w.clip.change(clip_view_api, [w.clip], [w.clip_header, w.clip_audio, w.clip_scores, w.clip_predictions],
                      api_name="clip_view")
