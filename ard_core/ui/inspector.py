"""Inspect tab: what fires on a clip of the user's own (upload, record, or pick a catalog clip).

The loaded model runs once on the clip (under :attr:`AppContext.model_lock`, like steering);
the chosen SAEs encode its audio tokens, and the catalog's features most representative of
the clip (r = mu x c on it, :mod:`ard_core.inspection`) are drawn as a features x time heat map
under the clip's spectrogram and listed with their name, mu, c and steerability. Each heat map
row's label links to the feature's page (``?feature=SAE_ID/K``, a new browser tab); the list's
chosen feature opens in place or fills the Steer tab with this clip ("steer this").
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

import gradio as gr
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ard_core.catalog import SteerabilityRow
from ard_core.inspection import ClipInspection, SaeAt, inspect_clip
from ard_core.ui import plots
from ard_core.ui.common import fmt_num, guard, note
from ard_core.ui.context import AppContext, UserError
from ard_core.ui.steer_choices import clip_audio_path, clip_choices

COLUMNS = ["#", "feature", "name", "layer", "μ (mean act.)", "c (coverage)", "r = μ × c", "max on clip", "steers"]
MAX_TOP = 50
"""Most features one inspection lists."""
LABEL_CHARS = 30


class InspectView(NamedTuple):
    summary: str
    figure: go.Figure
    table: pd.DataFrame
    refs: list[str]
    data: dict[str, Any]
    """The inspection as plain data (the ``/inspect`` endpoint's JSON)."""
    notices: tuple[str, ...] = ()


def sae_choices(ctx: AppContext) -> list[str]:
    """The SAEs the loaded model can feed: same width, a layer it has (none without a model)."""
    llm = ctx.llm
    if llm is None:
        return []
    return [s.sae_id for s in ctx.catalog.saes() if s.d_in == llm.d_model and s.layer < llm.n_layers]


def inspect_prompt(ctx: AppContext) -> str:
    """The prompt the activation store was extracted with when it came from the loaded model (the stream the
    SAEs were trained on), else the caption question."""
    from ard_core.prompts import CAPTION_QUESTION

    meta = ctx.store.meta if ctx.store is not None else None
    if meta is not None and meta.prompt and meta.model == ctx.llm.name:
        return meta.prompt
    return ctx.llm.build_prompt(CAPTION_QUESTION)


def _steers(row: SteerabilityRow | None) -> str:
    if row is None:
        return ""
    if row.flipped == 0:
        return f"tried {row.track}: no flip"
    return f"{row.track} -> {row.target} {row.flipped}/{row.n}"


def _check(ctx: AppContext, audio_path: str | None, sae_ids: Sequence[str] | str | None, top_n: object) -> tuple:
    if ctx.llm is None:
        raise UserError(ctx.model_note or "no model is loaded")
    if not audio_path:
        raise UserError("give an audio clip: upload, record, or pick one from the catalog")
    ids = [s.strip() for s in (sae_ids.split(",") if isinstance(sae_ids, str) else (sae_ids or [])) if s.strip()]
    if not ids:
        raise UserError("choose at least one SAE")
    usable = sae_choices(ctx)
    bad = [s for s in ids if s not in usable]
    if bad:
        raise UserError(f"SAE(s) {', '.join(bad)} cannot read the loaded model's stream; choose from {', '.join(usable)}")
    try:
        n = int(top_n)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        n = 0
    if not 1 <= n <= MAX_TOP:
        raise UserError(f"list {top_n!r} features? give a whole number from 1 to {MAX_TOP}")
    return ids, n


def run_inspect(ctx: AppContext, audio_path: str | None, sae_ids: Sequence[str] | str | None, top_n: int = 15,
                named_only: bool = True, clip_name: str | None = None) -> InspectView:
    """Inspect one clip with the loaded model and the chosen SAEs (ids, or one comma-separated string)."""
    from ard_core.audio import load_upload
    from ard_core.models.base import check_clip_length

    ids, n = _check(ctx, audio_path, sae_ids, top_n)
    llm = ctx.llm
    clip = load_upload(audio_path, sr=llm.sampling_rate, limits=ctx.audio_limits, name=clip_name)
    check_clip_length(llm, clip.audio.size, f"'{clip.file.name}'")
    saes = [SaeAt(s, ctx.catalog.sae(s).layer, ctx.sae(s, device=str(llm.device))) for s in ids]
    prompt = inspect_prompt(ctx)
    with ctx.model_lock:
        ins = inspect_clip(llm, clip.audio, prompt, saes, ctx.catalog.feature_names, n, bool(named_only))
    return inspect_view(ctx, ins, clip.audio, llm.sampling_rate, clip.file.name, ids, clip.notices)


def inspect_view(ctx: AppContext, ins: ClipInspection, audio: np.ndarray, sr: int, name: str, sae_ids: list[str],
                 notices: tuple[str, ...] = ()) -> InspectView:
    """The tab's outputs for an inspection: summary, spectrogram over heat map, ranked table, JSON."""
    from ard_core.audio import log_mel

    refs = [f.ref for f in ins.features]
    steer = ctx.catalog.best_steerability(refs)
    corpus_max = [ctx.catalog.feature_page(r).feature.max_act or f.max_act for r, f in zip(refs, ins.features)]
    spec = log_mel(audio, sr, n_mels=64, hop_s=0.01, max_frames=600)
    labels = [f'<a href="?feature={f.ref}">{html.escape((f.name or f.ref)[:LABEL_CHARS])} · L{f.layer}</a>'
              for f in ins.features]
    hover = [f"{f.ref} {html.escape(f.name)}" for f in ins.features]
    acts = np.stack([f.acts for f in ins.features]) if ins.features else np.zeros((0, ins.n_tokens))
    fig = plots.inspect_figure(spec.db, spec.hop_s, ins.duration_s, ins.times, acts, labels, hover, corpus_max)
    table = pd.DataFrame([[i + 1, f.ref, f.name, f.layer, round(f.mean_act, 4), round(f.coverage, 3),
                           round(f.score, 4), round(f.max_act, 3), _steers(steer.get(f.ref))]
                          for i, f in enumerate(ins.features)], columns=COLUMNS)
    kind = "named " if ins.features and all(f.name for f in ins.features) else ""
    summary = (f"**{html.escape(name)}** · {ins.duration_s:.2f} s · {ins.n_tokens} audio tokens "
               f"({1000 * ins.seconds_per_token:.0f} ms each) · {ins.n_firing:,} features of {len(sae_ids)} SAE(s) "
               f"fire on it; the {len(refs)} most representative {kind}ones (r = μ × c on this clip) below. "
               "Click a row label of the heat map to open the feature in a new tab.")
    if not refs:
        summary += "\n\n" + note("No listed feature fires on this clip; untick 'named only' to see unnamed ones.",
                                 "warn")
    if notices:
        summary += "\n\n" + note(" ".join(notices), "warn")
    data = {"clip": name, "duration_s": ins.duration_s, "n_tokens": ins.n_tokens,
            "seconds_per_token": ins.seconds_per_token, "n_firing": ins.n_firing, "saes": sae_ids,
            "features": [{"ref": f.ref, "sae_id": f.sae_id, "feature": f.feature, "layer": f.layer, "name": f.name,
                          "mean_act": f.mean_act, "coverage": f.coverage, "score": f.score, "max_act": f.max_act,
                          "activation": [round(float(a), 5) for a in f.acts],
                          "steerability": None if f.ref not in steer else {
                              k: getattr(steer[f.ref], k) for k in ("track", "target", "value", "flipped", "n")}}
                         for f in ins.features]}
    return InspectView(summary, fig, table, refs, data, notices)


# -- widgets ------------------------------------------------------------------------------------
@dataclass
class InspectWidgets:
    audio: gr.Audio
    clip: gr.Dropdown
    saes: gr.Dropdown
    top_n: gr.Slider
    named_only: gr.Checkbox
    run: gr.Button
    summary: gr.Markdown
    heatmap: gr.Plot
    table: gr.Dataframe
    chosen: gr.Dropdown
    open: gr.Button
    steer: gr.Button
    data: gr.JSON
    refs: gr.JSON


def render(ctx: AppContext) -> InspectWidgets:
    choices = sae_choices(ctx)
    gr.Markdown("What fires on a clip of your own: the model runs on it once, the chosen SAEs read its audio "
                "tokens, and the named features most representative of it are drawn over time.")
    if ctx.llm is None:
        gr.Markdown(note(ctx.model_note, "warn"), elem_id="inspect-model-note")
    with gr.Row():
        with gr.Column(scale=2):
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio: upload or record",
                             elem_id="inspect-audio")
            clip = gr.Dropdown(clip_choices(ctx), value=None, label="…or pick a catalog clip", filterable=True,
                               elem_id="inspect-clip")
        with gr.Column(scale=2):
            saes = gr.Dropdown(choices, value=choices, multiselect=True, label="SAEs", elem_id="inspect-saes")
            with gr.Row():
                top_n = gr.Slider(1, MAX_TOP, value=15, step=1, label="Features to list", elem_id="inspect-top-n")
                named_only = gr.Checkbox(True, label="Named only", elem_id="inspect-named-only")
            run = gr.Button("Inspect", variant="primary", interactive=ctx.llm is not None, elem_id="inspect-run")
    summary = gr.Markdown(elem_id="inspect-summary")
    heatmap = gr.Plot(plots.empty_figure("the clip's spectrogram and its features over time appear here"),
                      show_label=False, elem_id="inspect-heatmap")
    table = gr.Dataframe(pd.DataFrame(columns=COLUMNS), interactive=False, wrap=True, elem_id="inspect-table",
                         label="Most representative features (select a row to choose it)")
    with gr.Row(equal_height=True):
        chosen = gr.Dropdown([], value=None, label="Chosen feature", scale=3, elem_id="inspect-chosen")
        open_ = gr.Button("Open its page", scale=1, elem_id="inspect-open")
        steer = gr.Button("Steer this clip with it", variant="primary", scale=1, elem_id="inspect-steer")
    with gr.Accordion("The inspection as JSON", open=False):
        data = gr.JSON(elem_id="inspect-json")
    # the listed refs: a hidden JSON, not gr.State (Gradio's MCP server drops State outputs twice on queued events)
    refs = gr.JSON([], visible=False)
    return InspectWidgets(audio, clip, saes, top_n, named_only, run, summary, heatmap, table, chosen, open_, steer,
                          data, refs)


def listen(ctx: AppContext, w: InspectWidgets, open_feature: Callable, steer_clip: Callable) -> None:
    """``open_feature(trigger, to_ref, inputs)`` and ``steer_clip(trigger, inputs)`` (inputs: the chosen
    feature and the clip) come from the app: they fill the Feature / Steer tab and switch to it."""

    @guard
    def inspect(audio: str, saes: list[str], top_n: int, named_only: bool,
                progress=gr.Progress()):  # noqa: ANN001, ANN202
        """Run the model on an audio clip and list the SAE features most representative of it.

        Args:
            audio: the clip (WAV, FLAC, OGG, MP3 or AIFF)
            saes: SAE ids to read the clip with (e.g. tiny-audiollm-l4-e8); see the Concepts tab's SAE filter
            top_n: how many features to list (1-50)
            named_only: list only features the pipeline named
        """
        progress(0.1, desc="running the model on the clip")
        v = run_inspect(ctx, audio, saes, top_n, named_only)
        for text in v.notices:
            gr.Warning(text)
        first = v.refs[0] if v.refs else None
        return (v.summary, v.figure, v.table, v.data, v.refs,
                gr.Dropdown(choices=v.refs, value=first))

    @guard
    def on_clip(clip_id: str | None):  # noqa: ANN202
        return clip_audio_path(ctx, clip_id) if clip_id else gr.skip()

    def selected(refs: list[str], evt: gr.SelectData) -> str:
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return refs[row]

    w.clip.change(on_clip, [w.clip], [w.audio], api_visibility="private")
    w.run.click(inspect, [w.audio, w.saes, w.top_n, w.named_only],
                [w.summary, w.heatmap, w.table, w.data, w.refs, w.chosen], api_name="inspect",
                concurrency_limit=1, concurrency_id="model")
    w.table.select(selected, [w.refs], [w.chosen], api_visibility="private", show_progress="hidden")

    def chosen_ref(ref: str | None) -> str:
        if not ref:
            raise UserError("inspect a clip and choose one of its features first")
        return ref

    open_feature(w.open.click, chosen_ref, [w.chosen])
    steer_clip(w.steer.click, [w.chosen, w.audio])
