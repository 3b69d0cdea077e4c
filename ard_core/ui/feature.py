"""Feature page: one SAE feature with its scores, histograms and top/bottom clips.

Each example clip gets an audio player, its caption and scores (r = mu x c), and
its activation over time aligned with the clip's mel spectrogram. Activations
are recomputed on demand from the activation store (:mod:`ard_core.traces`); the
catalog's ``feature_pages`` row gives the rest in one lookup. The deep link
``?feature=SAE_ID/K`` opens this page. Where the steerability stage measured the feature,
the page says what it steers and links to the Steer tab pre-filled to try it
(``?tab=steer&feature=SAE_ID/K&value=V``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from ard_core.audio import MelSpectrogram, load_audio, log_mel
from ard_core.catalog import (ClipRow, DetectionRow, FeatureExampleRow, FeatureRow, SaeRow, SimilarFeature,
                              SteerabilityRow)
from ard_core.traces import Trace, activation_over_time, activation_sample
from ard_core.ui import plots
from ard_core.ui.common import fmt_num, guard
from ard_core.ui.context import AppContext, UserError, parse_ref
from ard_core.ui.similar import similar_markdown

SPEC_HOP_S = 0.01
SPEC_MAX_FRAMES = 600
"""A clip's spectrogram has at most this many frames (longer clips get a longer hop)."""
N_MELS = 64


class ExampleView(NamedTuple):
    kind: str
    rank: int
    clip_id: str
    audio_path: str | None
    caption: str
    labels: dict
    score: float
    mean_act: float
    coverage: float
    trace: Trace
    figure: go.Figure

    @property
    def markdown(self) -> str:
        labels = ", ".join(f"{k}: {v}" for k, v in sorted(self.labels.items())) or "no labels"
        missing = "" if self.audio_path else "  \n⚠️ audio file not found on this machine"
        return (f"**#{self.rank + 1}** · `{self.clip_id}` · r = **{fmt_num(self.score)}** "
                f"(μ = {fmt_num(self.mean_act)}, c = {fmt_num(self.coverage)})  \n"
                f"*{html.escape(self.caption or 'no caption')}*  \n<small>{html.escape(labels)}</small>{missing}")


class FeatureView(NamedTuple):
    ref: str
    feature: FeatureRow
    sae: SaeRow
    n_features: int
    top: list[ExampleView]
    bottom: list[ExampleView]
    n_top: int
    n_bottom: int
    prev_ref: str | None
    next_ref: str | None
    density_fig: go.Figure
    hist_fig: go.Figure
    detection: dict[str, DetectionRow] = {}
    """judge -> the feature's detection score (the evaluate stage scores named features)."""
    steer: tuple[SteerabilityRow, ...] = ()
    """Its steerability rows, best first (empty: not measured)."""
    similar: tuple[SimilarFeature, ...] = ()
    """Its nearest features (the similar stage; empty: not computed)."""

    @property
    def steer_link(self) -> str | None:
        """The Steer tab pre-filled with its best steering (None: nothing it steers)."""
        best = self.steer[0] if self.steer else None
        return steer_link(self.ref, best.value) if best is not None and best.flipped > 0 else None

    @property
    def steers(self) -> str:
        """'Steers gender -> male on 12 of 12 probe clips at value 30' (and the next best), or why not."""
        if not self.steer:
            return "<small>Steerability not measured (the steerability stage tries named and contrast ones).</small>"
        lines = [_steers_line(r) for r in self.steer[:3] if r.flipped > 0]
        if not lines:
            b = self.steer[0]
            return (f"Steers nothing it was tried on: {b.track} -> {b.target} flipped 0 of {b.n} probe clips "
                    f"(best value {b.value:.3g}).")
        return "  \n".join(lines)

    @property
    def header(self) -> str:
        f, s = self.feature, self.sae
        name = html.escape(f.name) if f.name else "<i>unnamed feature</i>"
        desc = html.escape(f.description) if f.description else "No description (the describe stage names the top-ranked features)."
        return (f"## {name}\n{desc}\n\n"
                f"<span class='ard-kbd'>{self.ref}</span> · layer **{s.layer}** · SAE `{s.sae_id}` "
                f"(x{s.expansion}, K = {s.k}, FVU {fmt_num(s.fvu)}) · "
                f"[deep link](?feature={self.ref})")

    @property
    def scores(self) -> str:
        f = self.feature
        rank = f"{f.rank:,} of {self.n_features:,}" if f.rank is not None else "–"
        det = sorted(self.detection.items())
        head = "".join(f" detection ({j}) |" for j, _ in det)
        cells = "".join(f" {fmt_num(d.score)} <small>({d.n_pos}+{d.n_neg} clips)</small> |" for _, d in det)
        return (f"| monosemanticity | rank | density | max activation |{head}\n|---|---|---|---|{'---|' * len(det)}\n"
                f"| **{fmt_num(f.monosemanticity)}** | {rank} | {fmt_num(f.density, 4)} | {fmt_num(f.max_act)} |{cells}")


def steer_link(ref: str, value: float) -> str:
    """The deep link opening the Steer tab with ``ref`` set to ``value`` (and a probe clip and preset)."""
    return f"?tab=steer&feature={ref}&value={value:.6g}"


def _steers_line(r: SteerabilityRow) -> str:
    return (f"**Steers {html.escape(r.track)} -> {html.escape(r.target)}** on {r.flipped} of {r.n} probe clips "
            f"at value {r.value:.3g} ({r.multiple:g} x the layer's median token norm)")


# -- what the page draws ----------------------------------------------------------------------
def trace(ctx: AppContext, sae: SaeRow, feature: int, clip: ClipRow) -> Trace:
    """The feature's activation over ``clip``, or an empty trace saying why (no store, no tokens)."""
    if ctx.store is None:
        return Trace(np.zeros(0), np.zeros(0), ctx.store_note)
    return activation_over_time(ctx.sae(sae.sae_id), ctx.store, sae.layer, feature, clip.clip_id, clip.duration_s)


def spectrogram(ctx: AppContext, path: str) -> tuple[MelSpectrogram, float]:
    """(mel spectrogram, duration in seconds) of an audio file, cached."""

    def make() -> tuple[MelSpectrogram, float]:
        y = load_audio(path)
        return log_mel(y, 16000, n_mels=N_MELS, hop_s=SPEC_HOP_S, max_frames=SPEC_MAX_FRAMES), y.size / 16000

    return ctx.spectrograms.get(str(path), make)


def clip_figure(ctx: AppContext, clip: ClipRow, path: str | None, trace: Trace, max_act: float | None) -> go.Figure:
    if path is None:
        return plots.empty_figure(f"audio file of {clip.clip_id} not found", height=200)
    try:
        spec, duration = spectrogram(ctx, path)
    except Exception as exc:  # a broken file must not break the page
        return plots.empty_figure(f"cannot read {clip.clip_id}: {exc}", height=200)
    times, acts = trace.times, trace.acts
    if times.size:  # a step line needs the end of the last token
        step = times[1] - times[0] if times.size > 1 else duration
        times, acts = np.append(times, times[-1] + step), np.append(acts, acts[-1])
    return plots.clip_activation_figure(spec.db, spec.hop_s, times, acts, duration, max_act, trace.note)


def _examples(ctx: AppContext, sae: SaeRow, feature: FeatureRow,
              rows: list[FeatureExampleRow]) -> dict[str, tuple[list[ExampleView], int]]:
    """kind ('top', 'bottom') -> (views of the first ``ctx.max_examples`` of ``rows``, how many there are)."""
    shown = {kind: sorted((r for r in rows if r.kind == kind), key=lambda r: r.rank)[: ctx.max_examples]
             for kind in ("top", "bottom")}
    clips = ctx.catalog.clips(sorted({r.clip_id for rs in shown.values() for r in rs}))
    out: dict[str, tuple[list[ExampleView], int]] = {}
    for kind, rs in shown.items():
        views = []
        for r in rs:
            clip = clips.get(r.clip_id) or ClipRow(r.clip_id, "", "", "", 0.0, {}, "(clip missing from the catalog)")
            path = ctx.catalog.resolve(clip.path)
            tr = trace(ctx, sae, feature.feature, clip) if clip.path else Trace(np.zeros(0), np.zeros(0), "")
            fig = clip_figure(ctx, clip, str(path) if path else None, tr, feature.max_act)
            views.append(ExampleView(kind, r.rank, r.clip_id, str(path) if path else None, clip.caption, clip.labels,
                                     r.score, r.mean_act, r.coverage, tr, fig))
        out[kind] = (views, sum(r.kind == kind for r in rows))
    return out


def feature_histogram(ctx: AppContext, sae: SaeRow, feature: int) -> go.Figure:
    """The feature's activations over the SAE's fixed token sample (ctx.hist_token_budget tokens)."""
    if ctx.store is None:
        return plots.empty_figure(ctx.store_note)
    try:
        sample = ctx.samples.get(sae.sae_id, lambda: activation_sample(ctx.sae(sae.sae_id), ctx.store, sae.layer,
                                                                       ctx.hist_token_budget))
    except KeyError as exc:
        return plots.empty_figure(f"no stored activations for this SAE's layer ({exc})")
    return plots.activation_histogram(sample.feature_values(feature), sample.n_tokens, len(sample.clip_ids))


def feature_view(ctx: AppContext, ref: str) -> FeatureView:
    """Everything the feature page shows for ``ref`` (SAE_ID/K)."""
    fr = parse_ref(ref)
    page = ctx.catalog.feature_page(fr)
    row = page.feature
    sae = ctx.catalog.sae(fr.sae_id)
    dens = ctx.densities.get(sae.sae_id, lambda: ctx.catalog.feature_densities(sae.sae_id))
    density_fig = plots.density_histogram(dens, row.density, f"#{fr.feature}")
    examples = _examples(ctx, sae, row, page.examples)
    (top, n_top), (bottom, n_bottom) = examples["top"], examples["bottom"]
    detection = {d.judge: d for d in ctx.catalog.feature_detection(sae.sae_id, fr.feature)}
    return FeatureView(str(fr), row, sae, len(dens), top, bottom, n_top, n_bottom, page.prev_ref, page.next_ref,
                       density_fig, feature_histogram(ctx, sae, fr.feature), detection,
                       tuple(ctx.catalog.steerability(fr)), tuple(ctx.catalog.similar_features(fr)))


def feature_json(ctx: AppContext, ref: str) -> dict[str, Any]:
    """The feature as plain data (the ``/feature`` API endpoint)."""
    v = feature_view(ctx, ref)
    f = v.feature

    def ex(e: ExampleView) -> dict[str, Any]:
        return {"rank": e.rank, "clip_id": e.clip_id, "caption": e.caption, "labels": e.labels,
                "score": e.score, "mean_act": e.mean_act, "coverage": e.coverage,
                "activation": [round(float(a), 5) for a in e.trace.acts]}

    return {"ref": v.ref, "name": f.name, "description": f.description, "layer": v.sae.layer,
            "sae_id": v.sae.sae_id, "monosemanticity": f.monosemanticity, "rank": f.rank, "density": f.density,
            "max_act": f.max_act, "detection": {j: d.score for j, d in v.detection.items()},
            "top": [ex(e) for e in v.top], "bottom": [ex(e) for e in v.bottom],
            "prev": v.prev_ref, "next": v.next_ref,
            "steerability": [{"track": r.track, "target": r.target, "value": r.value, "flipped": r.flipped, "n": r.n}
                             for r in v.steer],
            "similar": [{"kind": r.kind, "ref": r.ref, "name": r.name, "layer": r.layer, "similarity": r.similarity}
                        for r in v.similar]}


# -- widgets ------------------------------------------------------------------------------------
@dataclass
class Card:
    box: gr.Column
    text: gr.Markdown
    audio: gr.Audio
    plot: gr.Plot


@dataclass
class FeatureWidgets:
    ref: gr.Textbox
    open: gr.Button
    prev: gr.Button
    next: gr.Button
    header: gr.Markdown
    scores: gr.Markdown
    steers: gr.Markdown
    steer_btn: gr.Button
    density: gr.Plot
    hist: gr.Plot
    top_title: gr.Markdown
    top: list[Card]
    bottom_title: gr.Markdown
    bottom: list[Card]
    similar: gr.Markdown


def _cards(n: int, prefix: str) -> list[Card]:
    cards = []
    for start in range(0, n, 2):
        with gr.Row(equal_height=False):
            for i in range(start, min(start + 2, n)):
                with gr.Column(visible=False, elem_classes="ard-card", elem_id=f"{prefix}-{i}") as box:
                    text = gr.Markdown()
                    audio = gr.Audio(type="filepath", interactive=False, show_label=False,
                                     elem_classes="ard-audio", buttons=["download"])
                    plot = gr.Plot(show_label=False)
                cards.append(Card(box, text, audio, plot))
    return cards


def render(ctx: AppContext) -> FeatureWidgets:
    with gr.Row():
        ref = gr.Textbox(show_label=False, placeholder="feature reference SAE_ID/K, e.g. tiny-audiollm-l4-e8/123",
                         scale=4, container=False, elem_id="feature-ref")
        open_ = gr.Button("Open", variant="primary", scale=0, min_width=90, elem_id="feature-open")
        prev = gr.Button("◀ Previous", scale=0, min_width=130, interactive=False, elem_id="feature-prev")
        nxt = gr.Button("Next ▶", scale=0, min_width=130, interactive=False, elem_id="feature-next")
    header = gr.Markdown("Pick a feature in the Concepts tab, or type its reference above.",
                         elem_classes="ard-feature-title", elem_id="feature-header")
    scores = gr.Markdown()
    with gr.Row(equal_height=True):
        steers = gr.Markdown(elem_id="feature-steers")
        steer_btn = gr.Button("Try it in the Steer tab", visible=False, scale=0, min_width=200, elem_id="feature-steer")
    with gr.Row():
        density = gr.Plot(show_label=False, elem_id="feature-density")
        hist = gr.Plot(show_label=False, elem_id="feature-hist")
    top_title = gr.Markdown("### Top clips")
    top = _cards(ctx.max_examples, "top-clip")
    bottom_title = gr.Markdown("### Bottom clips")
    bottom = _cards(ctx.max_examples, "bottom-clip")
    similar = gr.Markdown(elem_id="feature-similar")
    return FeatureWidgets(ref, open_, prev, nxt, header, scores, steers, steer_btn, density, hist, top_title, top,
                          bottom_title, bottom, similar)


def outputs(w: FeatureWidgets) -> list[gr.components.Component]:
    out: list = [w.ref, w.prev, w.next, w.header, w.scores, w.steers, w.steer_btn, w.density, w.hist, w.top_title,
                 w.bottom_title]
    for c in w.top + w.bottom:
        out += [c.box, c.text, c.audio, c.plot]
    return out + [w.similar]


def show(ctx: AppContext, ref: str) -> list[Any]:
    """Updates for :func:`outputs` showing feature ``ref``."""
    if not str(ref or "").strip():
        raise UserError("type a feature reference (SAE_ID/K) or pick one in the Concepts tab")
    v = feature_view(ctx, ref)
    p = ctx.max_examples
    ups: list[Any] = [
        v.ref,
        gr.Button(interactive=v.prev_ref is not None),
        gr.Button(interactive=v.next_ref is not None),
        v.header, v.scores, v.steers,
        gr.Button(visible=v.steer_link is not None, link=v.steer_link),
        v.density_fig, v.hist_fig,
        f"### Top clips — the {len(v.top)} most representative (highest r = μ × c)"
        + (f", of {v.n_top}" if v.n_top > p else ""),
        bottom_title(v.bottom, v.n_bottom, p),
    ]
    for examples in (v.top, v.bottom):
        for i in range(p):
            if i < len(examples):
                e = examples[i]
                ups += [gr.Column(visible=True), e.markdown, e.audio_path, e.figure]
            else:
                ups += [gr.Column(visible=False), "", None, None]
    return ups + [similar_markdown(v.similar)]


def bottom_title(bottom: list[ExampleView], n_bottom: int, shown_max: int) -> str:
    """What the bottom clips are: the lowest r over every probing clip (mostly clips where the feature is
    silent), the contrast set monosemanticity compares the top clips with; says how many are silent."""
    silent = sum(e.mean_act == 0 for e in bottom)
    what = (f"it does not fire at all on {'any' if silent == len(bottom) else silent} of them (μ = 0)" if silent
            else "it fires weakly on each")
    return (f"### Bottom clips — the {len(bottom)} least representative probing clips (lowest r)"
            + (f", of {n_bottom}" if n_bottom > shown_max else "")
            + f"  \n<small>The contrast set its monosemanticity is measured against; {what}.</small>")


def step(ctx: AppContext, ref: str, delta: int) -> str:
    """The reference of the listed feature before (delta < 0) or after ``ref``."""
    fr = parse_ref(ref)
    page = ctx.catalog.feature_page(fr)
    target = page.prev_ref if delta < 0 else page.next_ref
    if target is None:
        raise UserError(f"{fr} is the {'first' if delta < 0 else 'last'} feature of {fr.sae_id}")
    return target


def listen(ctx: AppContext, w: FeatureWidgets) -> None:
    outs = outputs(w)

    @guard
    def load(ref: str) -> list[Any]:
        return show(ctx, ref)

    @guard
    def prev(ref: str) -> list[Any]:
        return show(ctx, step(ctx, ref, -1))

    @guard
    def nxt(ref: str) -> list[Any]:
        return show(ctx, step(ctx, ref, +1))

    w.open.click(load, [w.ref], outs, api_visibility="private")
    w.ref.submit(load, [w.ref], outs, api_visibility="private")
    w.prev.click(prev, [w.ref], outs, api_visibility="private")
    w.next.click(nxt, [w.ref], outs, api_visibility="private")
