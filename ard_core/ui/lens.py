"""Lens tab (AudioLens): information-score curves per layer, critical layers, Table II/III,
and the enrichment lambda sweep, all read from the catalog (written by the lens stage).

Curves are selected by track, prompt format (P1 direct, P2 question, P3 multiple choice),
position (last token, penultimate token, last token with attention to audio masked) and
subset (all samples, those the model answers correctly, incorrectly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import gradio as gr
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ard_core.ui import plots
from ard_core.ui.common import guard, note
from ard_core.ui.context import AppContext, UserError

POSITIONS = {"last": "last token", "penultimate": "penultimate token", "last_masked": "last token, audio masked"}
SUBSETS = {"all": "all", "correct": "correct", "incorrect": "incorrect"}


class LensOptions(NamedTuple):
    models: list[str]
    tracks: list[str]
    formats: list[str]


def lens_options(ctx: AppContext, model: str | None = None) -> LensOptions:
    """The models with lens scores, and the tracks and formats of ``model`` (default: the first model)."""
    models = ctx.catalog.lens_models()
    model = model if model in models else (models[0] if models else None)
    return LensOptions(models, ctx.catalog.lens_tracks(model), ctx.catalog.lens_formats(model))


def info_curves(ctx: AppContext, model: str, track: str, formats: Sequence[str], positions: Sequence[str],
                subsets: Sequence[str]) -> go.Figure:
    """One curve per selected (format, position, subset), critical layers of the formats marked."""
    if not model or not track:
        return plots.empty_figure("no lens results in this catalog: run `python -m precompute lens`")
    for p in positions:
        if p not in POSITIONS:
            raise UserError(f"unknown position {p!r}; use {list(POSITIONS)}")
    for s in subsets:
        if s not in SUBSETS:
            raise UserError(f"unknown subset {s!r}; use {list(SUBSETS)}")
    curves = []
    for fmt in formats:
        for pos in positions:
            for sub in subsets:
                rows = ctx.catalog.lens_curve(model, track, fmt, pos, sub)
                if rows:
                    name = f"{fmt} · {POSITIONS[pos]} · {sub} (n={rows[0].n})"
                    curves.append((name, [r.layer for r in rows], [r.score for r in rows]))
    summ = {r.prompt_format: r for r in ctx.catalog.lens_summary(model, track)}
    critical = {f: summ[f].critical_layer for f in formats if f in summ and summ[f].critical_layer is not None}
    n_labels = next((r.n_labels for r in summ.values() if r.n_labels), None)
    return plots.info_score_figure(curves, critical, ctx.catalog.model_layers(model),
                                   1.0 / n_labels if n_labels else None,
                                   title=f"Information score per layer — {track}")


def track_heatmap(ctx: AppContext, model: str, fmt: str, position: str, subset: str) -> go.Figure:
    rows = ctx.catalog.lens_grid(model, fmt, position, subset)
    if not rows:
        return plots.empty_figure("no lens scores for this format / position / subset")
    tracks = sorted({r.track for r in rows})
    layers = sorted({r.layer for r in rows})
    grid = np.full((len(tracks), len(layers)), np.nan)
    for r in rows:
        grid[tracks.index(r.track), layers.index(r.layer)] = r.score
    return plots.lens_heatmap(tracks, layers, grid, f"All tracks: {fmt} · {POSITIONS[position]} · {subset}")


def summary_table(ctx: AppContext, model: str) -> pd.DataFrame:
    """AudioLens Table II: accuracy and critical layer per track and prompt format."""
    return pd.DataFrame(
        [[r.track, r.prompt_format, round(100 * r.accuracy, 1),
          None if r.critical_layer is None else round(r.critical_layer, 2), r.n, r.n_labels]
         for r in ctx.catalog.lens_summary(model)],
        columns=["track", "format", "accuracy %", "critical layer", "n", "labels"])


def correlation_text(ctx: AppContext, model: str) -> str:
    """AudioLens Table III: Pearson r between critical layer and accuracy."""
    vals = {r.metric: r.value for r in ctx.catalog.evaluation_rows("table3", sae_id=model)}
    if "r" not in vals or vals["r"] is None or np.isnan(vals["r"]):
        return "Pearson r (critical layer vs accuracy): not available (needs 3+ track/format pairs with a critical layer)."
    p = vals.get("p_value")
    return (f"**Table III** — Pearson r between critical layer and accuracy: **{vals['r']:.3f}**"
            + (f" (p = {p:.3g})" if p is not None and not np.isnan(p) else "")
            + ". A later critical layer going with lower accuracy shows as a negative r.")


def enrichment(ctx: AppContext, model: str, track: str | None = None) -> go.Figure:
    """The enrichment lambda sweep of ``track`` (default: the first): info-score layer vs random layers."""
    tracks = ctx.catalog.enrichment_tracks(model)
    if not tracks:
        return plots.enrichment_figure([], [], [], [], None, "")
    track = track if track in tracks else tracks[0]
    info = ctx.catalog.enrichment_runs(model, track, "info_score")
    rand = {r.lam: r for r in ctx.catalog.enrichment_stats(model, track, "random_layer")}
    lams = [r.lam for r in info] or list(rand)
    return plots.enrichment_figure(
        lams, [r.accuracy for r in info],
        [rand[l].mean for l in lams if l in rand], [rand[l].std for l in lams if l in rand],
        info[0].source_layer if info else None, track)


# -- widgets ------------------------------------------------------------------------------------
@dataclass
class LensWidgets:
    model: gr.Dropdown
    track: gr.Dropdown
    formats: gr.CheckboxGroup
    positions: gr.CheckboxGroup
    subsets: gr.CheckboxGroup
    curves: gr.Plot
    heat_format: gr.Dropdown
    heatmap: gr.Plot
    table: gr.Dataframe
    correlation: gr.Markdown
    enrichment: gr.Plot


def render(ctx: AppContext) -> LensWidgets:
    opts = lens_options(ctx)
    model = opts.models[0] if opts.models else None
    track = opts.tracks[0] if opts.tracks else None
    if model is None:
        gr.Markdown(note("No lens results in this catalog yet: run `python -m precompute lens --config ...`.", "warn"))
    gr.Markdown("The logit lens decodes every layer's residual stream at the answer position. The **information "
                "score** is the fraction of samples whose lens prediction at that layer is the right label; the "
                "**critical layer** is the score-weighted mean of the layers clearly above chance.")
    with gr.Row():
        with gr.Column(scale=1, min_width=250):
            model_dd = gr.Dropdown(opts.models, value=model, label="Model")
            track_dd = gr.Dropdown(opts.tracks, value=track, label="Track", elem_id="lens-track")
            formats = gr.CheckboxGroup(opts.formats, value=opts.formats, label="Prompt format")
            positions = gr.CheckboxGroup([(v, k) for k, v in POSITIONS.items()], value=["last"], label="Position")
            subsets = gr.CheckboxGroup(list(SUBSETS), value=["all"], label="Samples")
        with gr.Column(scale=3):
            curves = gr.Plot(info_curves(ctx, model, track, opts.formats, ["last"], ["all"]) if model else
                             plots.empty_figure("no lens results"), show_label=False, elem_id="lens-curves")
    with gr.Row():
        with gr.Column(scale=3):
            heat_format = gr.Dropdown(opts.formats, value=opts.formats[-1] if opts.formats else None,
                                      label="Format for the all-tracks view")
            heatmap = gr.Plot(track_heatmap(ctx, model, opts.formats[-1], "last", "all") if model and opts.formats
                              else plots.empty_figure("no lens results"), show_label=False)
        with gr.Column(scale=2):
            gr.Markdown("#### Table II — accuracy and critical layer")
            table = gr.Dataframe(summary_table(ctx, model) if model else None, interactive=False, max_height=330)
            correlation = gr.Markdown(correlation_text(ctx, model) if model else "")
    enrich = gr.Plot(enrichment(ctx, model, track) if model else plots.enrichment_figure([], [], [], [], None, ""),
                     show_label=False, elem_id="lens-enrichment")
    return LensWidgets(model_dd, track_dd, formats, positions, subsets, curves, heat_format, heatmap, table,
                       correlation, enrich)


def listen(ctx: AppContext, w: LensWidgets) -> None:
    @guard
    def redraw(model, track, formats, positions, subsets):  # noqa: ANN001, ANN202
        return info_curves(ctx, model, track, formats or [], positions or [], subsets or [])

    @guard
    def redraw_heat(model, fmt):  # noqa: ANN001, ANN202
        return track_heatmap(ctx, model, fmt, "last", "all")

    @guard
    def change_model(model):  # noqa: ANN001, ANN202
        opts = lens_options(ctx, model)
        track = opts.tracks[0] if opts.tracks else None
        return (gr.Dropdown(choices=opts.tracks, value=track), gr.CheckboxGroup(choices=opts.formats, value=opts.formats),
                gr.Dropdown(choices=opts.formats, value=opts.formats[-1] if opts.formats else None),
                summary_table(ctx, model), correlation_text(ctx, model), enrichment(ctx, model, track))

    inputs = [w.model, w.track, w.formats, w.positions, w.subsets]
    for comp in inputs:
        comp.change(redraw, inputs, [w.curves], api_visibility="private", show_progress="minimal")
    w.track.change(guard(lambda m, t: enrichment(ctx, m, t)), [w.model, w.track], [w.enrichment],
                   api_visibility="private", show_progress="minimal")
    w.heat_format.change(redraw_heat, [w.model, w.heat_format], [w.heatmap], api_visibility="private",
                         show_progress="minimal")
    w.model.change(change_model, [w.model], [w.track, w.formats, w.heat_format, w.table, w.correlation, w.enrichment],
                   api_visibility="private")
