"""Feature page: one SAE feature with its scores, histograms and top/bottom clips.

Each example clip gets an audio player, its caption and scores (r = mu x c), and
its activation over time aligned with the clip's mel spectrogram. Activations
over time are not stored in the catalog: they are recomputed on demand from the
activation store (the clip's tokens at the SAE's layer through the SAE), which
takes milliseconds per clip. The deep link ``?feature=SAE_ID/K`` opens this page.
"""

from __future__ import annotations

import functools
import html
from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import torch

from ard_core.catalog import ClipRow, FeatureExampleRow, FeatureRow, SaeRow
from ard_core.ui import plots
from ard_core.ui.common import guard
from ard_core.ui.context import AppContext, UserError, feature_row_of, fmt_num, parse_ref

SPEC_HOP_S = 0.01
SPEC_MAX_FRAMES = 600
N_MELS = 64


class Trace(NamedTuple):
    """A feature's activation per token of one clip."""

    times: np.ndarray  # (T,) start time of each token, seconds
    acts: np.ndarray  # (T,) activation
    note: str  # why it is empty, when it is


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
        return (f"| monosemanticity | rank | density | max activation |\n|---|---|---|---|\n"
                f"| **{fmt_num(f.monosemanticity)}** | {rank} | {fmt_num(f.density, 4)} | {fmt_num(f.max_act)} |")


# -- computations -----------------------------------------------------------------------------
def activation_over_time(ctx: AppContext, sae: SaeRow, feature: int, clip: ClipRow) -> Trace:
    """Feature ``feature``'s activation on each stored token of ``clip`` (recomputed from the store)."""
    empty = np.zeros(0)
    if ctx.store is None:
        return Trace(empty, empty, ctx.store_note)
    try:
        x = ctx.store.clip_tokens(sae.layer, clip.clip_id)  # (T, d) float16
        pos = ctx.store.clip_positions(sae.layer, clip.clip_id)  # (T,)
    except KeyError:
        return Trace(empty, empty, f"clip {clip.clip_id} has no stored activations at layer {sae.layer}")
    if x.shape[0] == 0:
        return Trace(empty, empty, "the clip has no stored tokens")
    model = ctx.sae(sae.sae_id)
    with torch.no_grad():
        lat = model.encode(torch.from_numpy(np.asarray(x, dtype=np.float32)))
    acts = (lat.acts * (lat.indices == feature)).sum(dim=1).numpy()
    # Audio tokens cover the clip evenly (Qwen2-Audio: 40 ms each); positions index the clip's span.
    span = int(pos.max()) + 1
    dt = float(clip.duration_s) / span if clip.duration_s else 0.04
    return Trace(pos.astype(np.float64) * dt, acts.astype(np.float64), "")


@functools.lru_cache(maxsize=4)
def _mel_filters(n_fft: int, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """(periodic Hann window (n_fft,), mel filterbank (N_MELS, n_fft // 2 + 1)), as librosa makes them."""
    import librosa

    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    return window, librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=N_MELS, fmax=sr / 2).astype(np.float32)


def mel_db(y: np.ndarray, sr: int = 16000) -> tuple[np.ndarray, float]:
    """(mel dB (N_MELS, frames), seconds per frame): 0 dB is the loudest bin, -80 dB the floor.

    Frames are SPEC_HOP_S apart, or further for clips longer than SPEC_MAX_FRAMES of
    them (the window then grows with the hop, so no sample is skipped). The STFT is
    done here rather than by librosa.feature.melspectrogram, which took four times as
    long; a feature page draws eight of these.
    """
    import scipy.fft

    hop = max(int(sr * SPEC_HOP_S), -(-y.size // SPEC_MAX_FRAMES))
    n_fft = max(512, 1 << (hop - 1).bit_length())
    window, filters = _mel_filters(n_fft, sr)
    padded = np.pad(np.asarray(y, np.float32), n_fft // 2)  # centred frames, zero padding (librosa's default)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]  # (frames, n_fft)
    power = np.abs(scipy.fft.rfft(frames * window, axis=1)) ** 2
    db = 10.0 * np.log10(np.maximum(filters @ power.T, 1e-10))
    return np.maximum(db - db.max(), -80.0).astype(np.float32), hop / sr


def spectrogram(ctx: AppContext, path: str) -> tuple[np.ndarray, float, float]:
    """(mel dB (N_MELS, frames), seconds per frame, duration) of an audio file, cached."""

    def make() -> tuple[np.ndarray, float, float]:
        from ard_core.audio import load_audio

        y = load_audio(path)
        db, hop = mel_db(y, 16000)
        return db, hop, y.size / 16000

    return ctx.cached(ctx._spec_cache, str(path), make, limit=128)


def clip_figure(ctx: AppContext, clip: ClipRow, path: str | None, trace: Trace, max_act: float | None) -> go.Figure:
    if path is None:
        return plots.empty_figure(f"audio file of {clip.clip_id} not found", height=200)
    try:
        db, hop, duration = spectrogram(ctx, path)
    except Exception as exc:  # a broken file must not break the page
        return plots.empty_figure(f"cannot read {clip.clip_id}: {exc}", height=200)
    times, acts = trace.times, trace.acts
    if times.size:  # a step line needs the end of the last token
        step = times[1] - times[0] if times.size > 1 else duration
        times, acts = np.append(times, times[-1] + step), np.append(acts, acts[-1])
    return plots.clip_activation_figure(db, hop, times, acts, duration, max_act, trace.note)


def _examples(ctx: AppContext, sae: SaeRow, feature: FeatureRow,
              rows: list[FeatureExampleRow]) -> dict[str, tuple[list[ExampleView], int]]:
    """kind ('top', 'bottom') -> (views of the first ``ctx.max_examples`` of ``rows``, how many there are)."""
    shown = {kind: sorted((r for r in rows if r.kind == kind), key=lambda r: r.rank)[: ctx.max_examples]
             for kind in ("top", "bottom")}
    clips = ctx.clips(sorted({r.clip_id for rs in shown.values() for r in rs}))
    out: dict[str, tuple[list[ExampleView], int]] = {}
    for kind, rs in shown.items():
        views = []
        for r in rs:
            clip = clips.get(r.clip_id) or ClipRow(r.clip_id, "", "", "", 0.0, {}, "(clip missing from the catalog)")
            path = ctx.clip_path(clip)
            trace = (activation_over_time(ctx, sae, feature.feature, clip) if clip.path
                     else Trace(np.zeros(0), np.zeros(0), ""))
            fig = clip_figure(ctx, clip, str(path) if path else None, trace, feature.max_act)
            views.append(ExampleView(kind, r.rank, r.clip_id, str(path) if path else None, clip.caption, clip.labels,
                                     r.score, r.mean_act, r.coverage, trace, fig))
        out[kind] = (views, sum(r.kind == kind for r in rows))
    return out


def activation_sample(ctx: AppContext, sae: SaeRow) -> tuple[list[str], int, torch.Tensor, torch.Tensor]:
    """The SAE's TopK latents on a fixed sample of stored clips (cached per SAE).

    Clips are drawn in a seeded order until ``ctx.hist_token_budget`` tokens; returns
    (clip ids, n tokens, acts (N, K), indices (N, K)).
    """

    def make() -> tuple[list[str], int, torch.Tensor, torch.Tensor]:
        index = ctx.store.index(sae.layer)
        order = np.random.default_rng(0).permutation(len(index))
        chosen, n = [], 0
        for i in order:
            if n >= ctx.hist_token_budget:
                break
            chosen.append(index[i].clip_id)
            n += index[i].n_tokens
        model = ctx.sae(sae.sae_id)
        xs = [np.asarray(ctx.store.clip_tokens(sae.layer, c), dtype=np.float32) for c in chosen]
        x = torch.from_numpy(np.concatenate(xs)) if xs else torch.zeros(0, sae.d_in)
        with torch.no_grad():
            lat = model.encode(x)
        return chosen, int(x.shape[0]), lat.acts, lat.indices

    return ctx.cached(ctx._sample_cache, sae.sae_id, make, limit=16)


def feature_histogram(ctx: AppContext, sae: SaeRow, feature: int) -> go.Figure:
    if ctx.store is None:
        return plots.empty_figure(ctx.store_note)
    try:
        clips, n_tokens, acts, idx = activation_sample(ctx, sae)
    except KeyError as exc:
        return plots.empty_figure(f"no stored activations for this SAE's layer ({exc})")
    values = (acts * (idx == feature)).sum(dim=1).numpy()
    return plots.activation_histogram(values, n_tokens, len(clips))


def neighbours(page: dict[str, Any]) -> tuple[str | None, str | None]:
    """References of the listed features before and after a ``ctx.feature_page``."""
    sae_id = page["sae_id"]
    return (None if page["prev_feature"] is None else f"{sae_id}/{page['prev_feature']}",
            None if page["next_feature"] is None else f"{sae_id}/{page['next_feature']}")


def densities(ctx: AppContext, sae_id: str) -> np.ndarray:
    """(features,) density of every listed feature of ``sae_id``, NaN where unknown; cached per SAE
    (the app's catalog is read-only, and a page would otherwise read 32k rows to draw one histogram)."""

    def make() -> np.ndarray:
        rows = ctx.query("SELECT density FROM features WHERE sae_id = ?", [sae_id])
        return np.array([r["density"] if r["density"] is not None else np.nan for r in rows], float)

    return ctx.cached(ctx._density_cache, sae_id, make, limit=16)


def feature_view(ctx: AppContext, ref: str) -> FeatureView:
    """Everything the feature page shows for ``ref`` (SAE_ID/K)."""
    fr = parse_ref(ref)
    page = ctx.feature_page(str(fr))
    row = feature_row_of(page)
    sae = ctx.sae_row(fr.sae_id)
    dens = densities(ctx, sae.sae_id)
    density_fig = plots.density_histogram(dens, row.density, f"#{fr.feature}")
    rows = [FeatureExampleRow("ard", sae.sae_id, fr.feature, **e) for e in page["examples"]]
    examples = _examples(ctx, sae, row, rows)
    (top, n_top), (bottom, n_bottom) = examples["top"], examples["bottom"]
    prev_ref, next_ref = neighbours(page)
    return FeatureView(str(fr), row, sae, len(dens), top, bottom, n_top, n_bottom, prev_ref, next_ref,
                       density_fig, feature_histogram(ctx, sae, fr.feature))


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
            "max_act": f.max_act, "top": [ex(e) for e in v.top], "bottom": [ex(e) for e in v.bottom],
            "prev": v.prev_ref, "next": v.next_ref}


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
    density: gr.Plot
    hist: gr.Plot
    top_title: gr.Markdown
    top: list[Card]
    bottom_title: gr.Markdown
    bottom: list[Card]


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
    with gr.Row():
        density = gr.Plot(show_label=False, elem_id="feature-density")
        hist = gr.Plot(show_label=False, elem_id="feature-hist")
    top_title = gr.Markdown("### Top clips")
    top = _cards(ctx.max_examples, "top-clip")
    bottom_title = gr.Markdown("### Bottom clips")
    bottom = _cards(ctx.max_examples, "bottom-clip")
    return FeatureWidgets(ref, open_, prev, nxt, header, scores, density, hist, top_title, top, bottom_title, bottom)


def outputs(w: FeatureWidgets) -> list[gr.components.Component]:
    out: list = [w.ref, w.prev, w.next, w.header, w.scores, w.density, w.hist, w.top_title, w.bottom_title]
    for c in w.top + w.bottom:
        out += [c.box, c.text, c.audio, c.plot]
    return out


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
        v.header, v.scores, v.density_fig, v.hist_fig,
        f"### Top clips — the {len(v.top)} most representative (highest r = μ × c)"
        + (f", of {v.n_top}" if v.n_top > p else ""),
        f"### Bottom clips — the {len(v.bottom)} least representative among clips where it fires"
        + (f", of {v.n_bottom}" if v.n_bottom > p else ""),
    ]
    for examples in (v.top, v.bottom):
        for i in range(p):
            if i < len(examples):
                e = examples[i]
                ups += [gr.Column(visible=True), e.markdown, e.audio_path, e.figure]
            else:
                ups += [gr.Column(visible=False), "", None, None]
    return ups


def step(ctx: AppContext, ref: str, delta: int) -> str:
    fr = parse_ref(ref)
    prev_ref, next_ref = neighbours(ctx.feature_page(str(fr)))
    target = prev_ref if delta < 0 else next_ref
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
