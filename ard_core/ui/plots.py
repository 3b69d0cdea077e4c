"""Plotly figures of the app (pure functions of arrays; no gradio, no catalog).

Every figure uses :func:`_layout` so the tabs share one look: white template,
tight margins, the app's palette.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.colors
import plotly.graph_objects as go

PALETTE = ["#4f46e5", "#0891b2", "#d97706", "#dc2626", "#059669", "#7c3aed", "#db2777", "#65a30d", "#475569"]
ORIGINAL, STEERED = "#64748b", "#4f46e5"
MAGMA = [[i / (len(plotly.colors.sequential.Magma) - 1), c] for i, c in enumerate(plotly.colors.sequential.Magma)]
"""plotly.js knows no 'Magma'; plotly.py's validation expands the name into this list."""
BLUES = [[i / (len(plotly.colors.sequential.Blues) - 1), c] for i, c in enumerate(plotly.colors.sequential.Blues)]


def _base(title: str = "", height: int = 320) -> dict[str, Any]:
    """The layout every figure shares (the app's look), less the template."""
    return dict(
        title=dict(text=title, x=0.01, y=0.98, yanchor="top", font=dict(size=14)) if title else None,
        height=height, margin=dict(l=50, r=20, t=78 if title else 15, b=40), colorway=PALETTE,
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0, font=dict(size=11)),
        font=dict(family="Inter, ui-sans-serif, system-ui, sans-serif", size=12),
    )


def _layout(fig: go.Figure, title: str = "", height: int = 320, **kw) -> go.Figure:
    fig.update_layout(**{"template": "plotly_white", **_base(title, height), **kw})
    return fig


_FAST_TRACES = ("bar", "heatmap", "histogram", "scatter")
"""The trace types :func:`_figure` is used with."""


@functools.lru_cache(maxsize=1)
def _template() -> dict[str, Any]:
    """plotly_white as plain JSON, expanded once, with the defaults of the trace types in
    :data:`_FAST_TRACES` only: naming a template makes plotly validate and copy it for
    every figure (tens of milliseconds each), and each figure carries a copy to the browser."""
    import plotly.io as pio

    full = pio.templates["plotly_white"].to_plotly_json()
    return {"layout": full["layout"], "data": {k: v for k, v in full["data"].items() if k in _FAST_TRACES}}


def _figure(data: list[dict[str, Any]], title: str = "", height: int = 320, **kw) -> go.Figure:
    """A figure from plain dicts, skipping plotly's per-property validation.

    Building through ``go.*`` objects validates every property and costs 50-300 ms
    per figure; a feature page draws up to fourteen. Only the figures of the feature
    page are built this way, and tests/test_ui_plots.py checks that each one passes
    the validation it skips.
    """
    layout = {k: v for k, v in {"template": _template(), **_base(title, height), **kw}.items() if v != []}
    return go.Figure({"data": data, "layout": layout}, _validate=False)


def empty_figure(message: str, height: int = 220) -> go.Figure:
    """A blank figure carrying a message (plots never fail silently)."""
    return _figure([], height=height, xaxis=dict(visible=False), yaxis=dict(visible=False), annotations=[
        dict(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
             font=dict(size=13, color="#64748b"))])


def density_histogram(densities: np.ndarray, this: float | None, label: str) -> go.Figure:
    """log10 activation density of every feature of an SAE, with this feature marked.

    Binned here (40 bins) so the browser gets 40 bars, not one value per feature.
    """
    d = np.asarray(densities, dtype=np.float64)
    floor = 1e-7
    logd = np.log10(np.clip(d[np.isfinite(d)], floor, None))
    counts, edges = np.histogram(logd, bins=40) if logd.size else (np.zeros(0), np.zeros(1))
    data = [dict(type="bar", x=(edges[:-1] + edges[1:]) / 2, y=counts, width=float(edges[1] - edges[0]),
                 marker=dict(color="#cbd5e1"), name="all features",
                 hovertemplate="log10 density %{x:.2f}: %{y} features<extra></extra>")] if logd.size else []
    shapes, notes = [], []
    if this is not None and np.isfinite(this):
        x = float(np.log10(max(this, floor)))
        shapes.append(dict(type="line", x0=x, x1=x, xref="x", y0=0, y1=1, yref="y domain",
                           line=dict(color=PALETTE[0], width=3)))
        notes.append(dict(text=label, x=x, y=1, xref="x", yref="y domain", showarrow=False, yanchor="bottom"))
    return _figure(data, "Activation density across the SAE", showlegend=False, bargap=0, shapes=shapes,
                   annotations=notes, xaxis=dict(title=dict(text="log10 density (fraction of tokens active)")),
                   yaxis=dict(title=dict(text="features")))


def activation_histogram(values: np.ndarray, n_tokens: int, n_clips: int) -> go.Figure:
    """Histogram of a feature's non-zero token activations over a sample of clips."""
    v = np.asarray(values, dtype=np.float64)
    nz = v[v > 0]
    if n_tokens == 0:
        return empty_figure("no tokens sampled")
    frac = nz.size / n_tokens
    if nz.size == 0:
        return empty_figure(f"never fires on the {n_tokens:,} sampled tokens of {n_clips} clips")
    return _figure([dict(type="histogram", x=nz, nbinsx=40, marker=dict(color=PALETTE[0]))],
                   f"Activations: fires on {frac:.1%} of {n_tokens:,} tokens from {n_clips} clips",
                   showlegend=False, xaxis=dict(title=dict(text="activation (non-zero tokens)")),
                   yaxis=dict(title=dict(text="tokens")))


def clip_activation_figure(spec_db: np.ndarray, hop_s: float, times: np.ndarray, acts: np.ndarray,
                           duration: float, max_act: float | None = None, note: str = "") -> go.Figure:
    """Mel spectrogram (top) and the feature's activation per token (bottom) on one time axis.

    The spectrogram (dB, 80 dB range) goes to the browser as whole decibels in one byte
    each: a quarter of the float32 bytes, and no visible change.
    """
    n_mels, n_frames = spec_db.shape
    z = np.clip(np.rint(spec_db - (spec_db.max() if spec_db.size else 0.0) + 80.0), 0, 80).astype(np.uint8)
    data = [dict(type="heatmap", z=z, zmin=0, zmax=80, x=((np.arange(n_frames) + 0.5) * hop_s).astype(np.float32),
                 y=np.arange(n_mels), colorscale=MAGMA, showscale=False, xaxis="x", yaxis="y",
                 hovertemplate="t=%{x:.2f}s mel=%{y}<extra></extra>")]
    notes = []
    if times.size:
        data.append(dict(type="scatter", x=times, y=acts, mode="lines", xaxis="x2", yaxis="y2",
                         line=dict(color=PALETTE[0], width=2, shape="hv"), fill="tozeroy",
                         fillcolor="rgba(79,70,229,0.18)", name="activation",
                         hovertemplate="t=%{x:.2f}s act=%{y:.3f}<extra></extra>"))
    else:
        notes.append(dict(text=note or "no stored activations", showarrow=False, x=duration / 2, y=0.5,
                          xref="x2", yref="y2", font=dict(color="#64748b")))
    top = max(float(np.max(acts)) if acts.size else 0.0, float(max_act or 0.0), 1e-6)
    # two rows sharing the time axis (what make_subplots(rows=2, shared_xaxes=True) lays out)
    return _figure(
        data, height=260, showlegend=False, margin=dict(l=45, r=10, t=10, b=35), annotations=notes,
        xaxis=dict(anchor="y", domain=[0.0, 1.0], matches="x2", showticklabels=False, range=[0, duration]),
        xaxis2=dict(anchor="y2", domain=[0.0, 1.0], range=[0, duration], title=dict(text="time (s)")),
        yaxis=dict(anchor="x", domain=[0.424, 1.0], visible=False),
        yaxis2=dict(anchor="x2", domain=[0.0, 0.384], range=[0, 1.05 * top], title=dict(text="act")),
    )


def inspect_figure(spec_db: np.ndarray, hop_s: float, duration: float, times: np.ndarray, acts: np.ndarray,
                   labels: Sequence[str], hover: Sequence[str], scale: Sequence[float]) -> go.Figure:
    """A clip's mel spectrogram (top) over a features x time heat map (bottom), on one time axis.

    ``acts`` (F, T) are the features' activations per audio token starting at ``times``; each row is
    coloured relative to ``scale`` (its largest activation in the corpus) so rows compare; ``labels``
    (may hold links) name the rows top to bottom, ``hover`` says what a cell is.
    """
    n_mels, n_frames = spec_db.shape
    z = np.clip(np.rint(spec_db - (spec_db.max() if spec_db.size else 0.0) + 80.0), 0, 80).astype(np.uint8)
    data = [dict(type="heatmap", z=z, zmin=0, zmax=80, x=((np.arange(n_frames) + 0.5) * hop_s).astype(np.float32),
                 y=np.arange(n_mels), colorscale=MAGMA, showscale=False, xaxis="x", yaxis="y",
                 hovertemplate="t=%{x:.2f}s mel=%{y}<extra></extra>")]
    n = len(labels)
    if n:
        a = np.asarray(acts, dtype=np.float64)
        rel = a / np.maximum(np.asarray(scale, dtype=np.float64), 1e-9)[:, None]
        step = times[1] - times[0] if len(times) > 1 else duration
        text = [[f"{h}<br>t={t:.2f}s act={v:.3f}" for t, v in zip(times, row)] for h, row in zip(hover, a)]
        data.append(dict(type="heatmap", z=np.round(rel, 3), x=np.asarray(times) + step / 2, y=list(range(n)),
                         zmin=0, zmax=1, colorscale=BLUES, xaxis="x2", yaxis="y2", text=text,
                         hovertemplate="%{text}<extra></extra>",
                         colorbar=dict(title=dict(text="act / max", side="right"), thickness=10, len=0.55, y=0.3)))
    spec_h, row_h = 150, 26
    height = 60 + spec_h + max(n, 2) * row_h
    split = 1 - spec_h / (height - 60)
    return _figure(
        data, height=height, showlegend=False, margin=dict(l=230, r=20, t=10, b=45),
        xaxis=dict(anchor="y", domain=[0.0, 1.0], matches="x2", showticklabels=False, range=[0, duration]),
        xaxis2=dict(anchor="y2", domain=[0.0, 1.0], range=[0, duration], title=dict(text="time (s)")),
        yaxis=dict(anchor="x", domain=[split + 0.02, 1.0], visible=False),
        yaxis2=dict(anchor="x2", domain=[0.0, split - 0.02], tickmode="array", tickvals=list(range(n)),
                    ticktext=list(labels), autorange="reversed", automargin=True),
    )


def info_score_figure(curves: Sequence[tuple[str, Sequence[int], Sequence[float]]],
                      critical: Mapping[str, float] | None = None, n_layers: int | None = None,
                      chance: float | None = None, title: str = "Layer-wise information score") -> go.Figure:
    """Information score I (the lens's accuracy at each layer), one line per curve.

    ``critical`` maps a prompt format to its critical layer (a dotted vertical line);
    ``chance`` is 1/|Y| (a dashed horizontal line).
    """
    if not curves:
        return empty_figure("no lens scores for this selection")
    fig = go.Figure()
    for i, (name, layers, scores) in enumerate(curves):
        # line style encodes the position / subset, colour the curve
        dash = ("dot" if "incorrect" in name else "dash" if "penultimate" in name
                else "dashdot" if "masked" in name else "solid")
        fig.add_trace(go.Scatter(x=list(layers), y=list(scores), mode="lines+markers", name=name,
                                 line=dict(color=PALETTE[i % len(PALETTE)], dash=dash, width=2)))
    for j, (fmt, layer) in enumerate((critical or {}).items()):
        if layer is not None and np.isfinite(layer):
            fig.add_vline(x=float(layer), line_dash="dot", line_color="#94a3b8",
                          annotation_text=f"critical {fmt}: {layer:.1f}", annotation_position="top left",
                          annotation_font_size=10, annotation_yshift=-14 * j)
    if chance is not None:
        fig.add_hline(y=chance, line_dash="dash", line_color="#94a3b8", annotation_text="chance 1/|Y|",
                      annotation_position="bottom right", annotation_font_size=10)
    fig.update_xaxes(title="layer", dtick=1, range=[0.5, (n_layers or max(max(c[1]) for c in curves)) + 0.5])
    fig.update_yaxes(title="information score I", range=[0, 1.02], tickformat=".0%")
    return _layout(fig, title, height=400)


def lens_heatmap(tracks: Sequence[str], layers: Sequence[int], grid: np.ndarray, title: str) -> go.Figure:
    """Information score per (track, layer)."""
    if not len(tracks):
        return empty_figure("no lens scores")
    fig = go.Figure(go.Heatmap(z=grid, x=list(layers), y=list(tracks), colorscale="Viridis", zmid=None,
                               colorbar=dict(title="I", thickness=12),
                               hovertemplate="%{y} layer %{x}: I=%{z:.3f}<extra></extra>"))
    fig.update_xaxes(title="layer", dtick=1)
    return _layout(fig, title, height=120 + 40 * len(tracks))


def enrichment_figure(lams: Sequence[float], info: Sequence[float], rand_mean: Sequence[float],
                      rand_std: Sequence[float], source_layer: int | None, track: str) -> go.Figure:
    """Fig. 5: accuracy vs lambda, info-score source layer vs random source layers (mean ± std)."""
    if not len(lams):
        return empty_figure("no enrichment sweep in the catalog (the lens stage's enrich_lambdas)")
    lams = np.asarray(lams, float)
    fig = go.Figure()
    if len(rand_mean):
        m, s = np.asarray(rand_mean, float), np.asarray(rand_std, float)
        fig.add_trace(go.Scatter(x=np.concatenate([lams, lams[::-1]]), y=np.concatenate([m + s, (m - s)[::-1]]),
                                 fill="toself", fillcolor="rgba(100,116,139,0.15)", line=dict(width=0), mode="lines",
                                 hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(x=lams, y=m, mode="lines+markers", name="random source layer (mean ± std)",
                                 line=dict(color=ORIGINAL, dash="dash")))
    label = f"source layer from info score (l̄ = {source_layer})" if source_layer is not None else "info score"
    fig.add_trace(go.Scatter(x=lams, y=info, mode="lines+markers", name=label, line=dict(color=PALETTE[0], width=3)))
    fig.update_xaxes(title="λ (enrichment weight)")
    fig.update_yaxes(title="accuracy", tickformat=".0%")
    return _layout(fig, f"Enriching deep layers ({track})", height=340)


def label_probs_figure(labels: Sequence[str], original: Sequence[float], steered: Sequence[float]) -> go.Figure:
    if not len(labels):
        return empty_figure("no labels given: enter labels to compare their probabilities")
    fig = go.Figure([
        go.Bar(x=list(labels), y=list(original), name="original", marker_color=ORIGINAL),
        go.Bar(x=list(labels), y=list(steered), name="steered", marker_color=STEERED),
    ])
    fig.update_yaxes(title="next-token probability")
    return _layout(fig, "Label probabilities at the answer position", barmode="group", height=300)


def steer_lens_figure(labels: Sequence[str], original: np.ndarray | None, steered: np.ndarray | None) -> go.Figure:
    """Logit lens of both runs: per-layer probability of each label, original dashed, steered solid."""
    if original is None or steered is None or not len(labels):
        return empty_figure("no lens: enter labels to see each layer's label probabilities")
    layers = np.arange(1, original.shape[0] + 1)
    fig = go.Figure()
    for j, label in enumerate(labels):
        c = PALETTE[j % len(PALETTE)]
        fig.add_trace(go.Scatter(x=layers, y=original[:, j], name=f"{label} (original)", mode="lines+markers",
                                 line=dict(color=c, dash="dot"), legendgroup=label))
        fig.add_trace(go.Scatter(x=layers, y=steered[:, j], name=f"{label} (steered)", mode="lines+markers",
                                 line=dict(color=c, width=3), legendgroup=label))
    fig.update_xaxes(title="layer", dtick=1)
    fig.update_yaxes(title="probability (logit lens)")
    return _layout(fig, "Logit lens of both runs", height=340)
