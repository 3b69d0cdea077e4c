"""Steer tab: clamp SAE features on a clip and compare the model's answers live.

The model is the one loaded once at start-up. Requests go through Gradio's queue
with a concurrency limit of 1 (and :attr:`AppContext.model_lock`), because steering
works by hooks on the shared model: two requests at once would steer each other.

Once a track's preset is chosen, the feature picker lists the features that steer that
track first (the steerability stage's flip rates), and a picked feature's slider starts at
its measured value. The deep link ``?tab=steer&feature=SAE_ID/K&value=V`` (the feature
page's button) fills in the feature, its value, the preset and a probe clip it flipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import gradio as gr
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ard_core.ui import plots
from ard_core.ui.common import guard, note
from ard_core.ui.context import AppContext, UserError, parse_ref
from ard_core.ui.steer_choices import (  # noqa: F401  (presets, clip_audio_path, slider_spec: the tab's API)
    API_VALUE_BOUND,
    MAX_FEATURES,
    MAX_LABELS,
    MAX_NEW_TOKENS,
    MAX_PROMPT_CHARS,
    POSITION_CHOICES,
    check_value,
    clip_audio_path,
    clip_choices,
    feature_choices,
    parse_labels,
    prefill,
    presets,
    slider_spec,
)

if TYPE_CHECKING:  # pragma: no cover
    from ard_core.steering import SteerResult, SteerSpec

class SteerView(NamedTuple):
    original: str
    steered: str
    labels: list[str]
    probs: pd.DataFrame
    probs_fig: go.Figure
    lens_fig: go.Figure
    summary: str
    notices: tuple[str, ...] = ()
    """Warnings for the user (an uploaded clip cut to the length cap); also in ``summary``."""


class SteerRequest(NamedTuple):
    """A checked request: what :func:`run_steer` runs."""

    refs: list[str]
    values: list[float]
    labels: list[str]
    max_new_tokens: int


def check_request(audio_path: str | None, question: str, prefix: str, labels: str | Sequence[str],
                  refs: Sequence[str], values: Sequence[float], mode: str, positions: Sequence[str],
                  max_new_tokens: int) -> SteerRequest:
    """The request's inputs checked against the tab's limits, or a UserError saying which one is wrong."""
    if not audio_path:
        raise UserError("give an audio clip: upload, record, or pick one from the catalog")
    refs = [str(r) for r in (refs or [])]
    if not refs:
        raise UserError("pick at least one feature to steer")
    if len(refs) > MAX_FEATURES:
        raise UserError(f"steer at most {MAX_FEATURES} features at once (got {len(refs)})")
    if len(values) < len(refs):
        raise UserError(f"{len(refs)} features but {len(values)} values")
    if not positions:
        raise UserError("choose at least one kind of position to steer (audio, prompt or generated tokens)")
    if mode not in ("set", "add"):
        raise UserError(f"mode {mode!r}: use 'set' or 'add'")
    for what, text in (("question", question), ("assistant prefix", prefix)):
        if len(str(text or "")) > MAX_PROMPT_CHARS:
            raise UserError(f"the {what} is {len(str(text))} characters long; shorten it to {MAX_PROMPT_CHARS}")
    try:
        n_new = int(max_new_tokens)
    except (TypeError, ValueError, OverflowError):
        n_new = 0
    if not 1 <= n_new <= MAX_NEW_TOKENS:
        raise UserError(f"max new tokens is {max_new_tokens!r}; give a whole number from 1 to {MAX_NEW_TOKENS}")
    label_list = parse_labels(labels)
    if len(label_list) > MAX_LABELS:
        raise UserError(f"{len(label_list)} labels to compare; give at most {MAX_LABELS}")
    return SteerRequest(refs, [check_value(ref, value) for ref, value in zip(refs, values)], label_list, n_new)


def steer_specs(ctx: AppContext, refs: Sequence[str], values: Sequence[float], mode: str) -> list["SteerSpec"]:
    """One SteerSpec per SAE of ``refs``, each checked to fit the loaded model."""
    from ard_core.steering import specs_for_features

    llm = ctx.llm
    sae_ids: list[str] = []
    for ref in refs:
        fr = parse_ref(ref)
        ctx.catalog.feature_page(fr)  # NotFound, naming the SAE's features, for a feature not in the catalog
        if fr.sae_id not in sae_ids:
            sae_ids.append(fr.sae_id)
    for sae_id in sae_ids:
        row = ctx.catalog.sae(sae_id)
        if row.d_in != llm.d_model:
            raise UserError(f"SAE {sae_id} reads {row.d_in}-d activations of model {row.model!r}; the loaded model "
                            f"{llm.name!r} has d_model={llm.d_model}. Start the app with that model (--model).")
        if row.layer >= llm.n_layers:
            raise UserError(f"SAE {sae_id} is at layer {row.layer}; the loaded model has {llm.n_layers} layers")
    # specs_for_features takes SAEs from its cache: hand it the app's, already on the model's device
    loaded = {sae_id: ctx.sae(sae_id, device=str(llm.device)) for sae_id in sae_ids}
    return specs_for_features(ctx.catalog, dict(zip(refs, values)), mode=mode, cache=loaded)


def steer_view(result: "SteerResult", req: SteerRequest, mode: str, positions: Sequence[str], model_name: str,
               notices: tuple[str, ...]) -> SteerView:
    """The tab's outputs for a steering result: both answers, label probabilities and lens, a summary line."""
    o, s, labels = result.original, result.steered, req.labels
    if labels:
        po = [o.label_probs[l] for l in labels]
        ps = [s.label_probs[l] for l in labels]
        probs = pd.DataFrame({"label": labels, "original": np.round(po, 4), "steered": np.round(ps, 4),
                              "change": np.round(np.subtract(ps, po), 4)})
        probs_fig = plots.label_probs_figure(labels, po, ps)
        lens_fig = plots.steer_lens_figure(labels, o.lens, s.lens)
    else:
        probs = pd.DataFrame(columns=["label", "original", "steered", "change"])
        probs_fig = plots.label_probs_figure([], [], [])
        lens_fig = plots.steer_lens_figure([], None, None)
    applied = ", ".join(f"{r} {'=' if mode == 'set' else '+='} {float(v):g}" for r, v in zip(req.refs, req.values))
    summary = f"Steered {applied} at {', '.join(positions)} positions ({mode} mode; model {model_name})."
    if notices:
        summary += "\n\n" + note(" ".join(notices), "warn")
    return SteerView(o.text, s.text, labels, probs, probs_fig, lens_fig, summary, notices)


def run_steer(ctx: AppContext, audio_path: str | None, question: str, prefix: str, labels: str | Sequence[str],
              refs: Sequence[str], values: Sequence[float], mode: str = "set",
              positions: Sequence[str] = ("audio", "prompt", "generated"), max_new_tokens: int = 24) -> SteerView:
    """Original vs steered generation of the loaded model on one clip."""
    from ard_core.audio import load_upload
    from ard_core.models.base import check_clip_length
    from ard_core.prompts import label_token_ids
    from ard_core.steering import steer

    llm = ctx.llm
    if llm is None:
        raise UserError(ctx.model_note or "no model is loaded")
    req = check_request(audio_path, question, prefix, labels, refs, values, mode, positions, max_new_tokens)
    specs = steer_specs(ctx, req.refs, req.values, mode)
    clip = load_upload(audio_path, sr=llm.sampling_rate, limits=ctx.audio_limits)
    check_clip_length(llm, clip.audio.size, f"'{clip.file.name}'")
    prompt = llm.build_prompt(question or "", prefix or None)
    if req.labels:
        try:
            label_token_ids(llm.tokenizer, req.labels)
        except ValueError as exc:
            raise UserError(f"labels cannot be compared: {exc}") from None
    with ctx.model_lock:
        res = steer(llm, clip.audio, prompt, specs, positions=tuple(positions), max_new_tokens=req.max_new_tokens,
                    labels=req.labels or None, with_lens=bool(req.labels))
    return steer_view(res, req, mode, positions, llm.name, clip.notices)


# -- widgets ------------------------------------------------------------------------------------
@dataclass
class SteerWidgets:
    audio: gr.Audio
    clip: gr.Dropdown
    preset: gr.Dropdown
    question: gr.Textbox
    prefix: gr.Textbox
    labels: gr.Textbox
    features: gr.Dropdown
    sliders: list[gr.Slider]
    mode: gr.Radio
    positions: gr.CheckboxGroup
    max_new: gr.Slider
    run: gr.Button
    summary: gr.Markdown
    original: gr.Textbox
    steered: gr.Textbox
    probs: gr.Dataframe
    probs_fig: gr.Plot
    lens_fig: gr.Plot
    pending: gr.State
    """ref -> value a deep link asks for: the next slider update starts there (then it is cleared)."""


def render(ctx: AppContext) -> SteerWidgets:
    pre = presets(ctx)
    first = next(iter(k for k in pre if k.startswith("gender")), "Caption (free text)")
    if ctx.llm is None:
        gr.Markdown(note(ctx.model_note, "warn"), elem_id="steer-model-note")
    else:
        gr.Markdown(note(ctx.model_note + " Steering runs one request at a time; others wait in the queue.", "info"),
                    elem_id="steer-model-note")
    with gr.Row():
        with gr.Column(scale=2):
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio: upload or record",
                             elem_id="steer-audio")
            clip = gr.Dropdown(clip_choices(ctx), value=None, label="…or pick a catalog clip", filterable=True,
                               elem_id="steer-clip")
            preset = gr.Dropdown(list(pre), value=first, label="Prompt preset", elem_id="steer-preset")
            question = gr.Textbox(pre[first].question, label="Question", lines=2)
            prefix = gr.Textbox(pre[first].prefix, label="Assistant prefix (the answer follows it)")
            labels = gr.Textbox(", ".join(pre[first].labels), label="Labels to compare (comma separated)",
                                elem_id="steer-labels")
        with gr.Column(scale=2):
            features = gr.Dropdown(feature_choices(ctx, pre[first].track), value=[], multiselect=True,
                                   max_choices=MAX_FEATURES, allow_custom_value=True, filterable=True,
                                   label="Features to steer (type to search)",
                                   info="those that steer the preset's track first, then named ones; any SAE_ID/K "
                                        "can be typed", elem_id="steer-features")
            # Wide static bounds: the server checks values against them for API callers; in the page each
            # slider is narrowed to its feature's range when the feature is picked (slider_updates).
            sliders = [gr.Slider(-API_VALUE_BOUND, API_VALUE_BOUND, value=0, step=0.01, label=f"value {i + 1}",
                                 visible=False, elem_id=f"steer-value-{i}") for i in range(MAX_FEATURES)]
            mode = gr.Radio([("set the pre-activation", "set"), ("add to it", "add")], value="set", label="Mode")
            positions = gr.CheckboxGroup(POSITION_CHOICES, value=["audio", "prompt", "generated"], label="Steer at")
            max_new = gr.Slider(1, MAX_NEW_TOKENS, value=24, step=1, label="Max new tokens")
            run = gr.Button("Steer", variant="primary", interactive=ctx.llm is not None, elem_id="steer-run")
    summary = gr.Markdown(elem_id="steer-summary")
    with gr.Row():
        original = gr.Textbox(label="Original answer", lines=3, interactive=False, elem_id="steer-original")
        steered = gr.Textbox(label="Steered answer", lines=3, interactive=False, elem_id="steer-steered")
    with gr.Row():
        with gr.Column(scale=2):
            probs_fig = gr.Plot(plots.empty_figure("label probabilities of both runs appear here"), show_label=False,
                                elem_id="steer-probs")
        with gr.Column(scale=1):
            probs = gr.Dataframe(pd.DataFrame(columns=["label", "original", "steered", "change"]), interactive=False,
                                 label="Label probabilities")
    lens_fig = gr.Plot(plots.empty_figure("the logit lens of both runs appears here"), show_label=False,
                       elem_id="steer-lens")
    return SteerWidgets(audio, clip, preset, question, prefix, labels, features, sliders, mode, positions, max_new,
                        run, summary, original, steered, probs, probs_fig, lens_fig, gr.State({}))


def slider_updates(ctx: AppContext, refs: Sequence[str], pending: dict | None = None) -> list[Any]:
    """Slider updates for the picked ``refs``; ``pending`` (ref -> value, from a deep link) sets their start."""
    refs = list(refs or [])
    if len(refs) > MAX_FEATURES:
        raise UserError(f"steer at most {MAX_FEATURES} features at once")
    pending = pending or {}
    ups = []
    for i in range(MAX_FEATURES):
        if i < len(refs):
            s = slider_spec(ctx, refs[i], pending.get(refs[i]))
            ups.append(gr.Slider(minimum=s.minimum, maximum=s.maximum, value=s.value, label=s.label, visible=True))
        else:
            ups.append(gr.Slider(visible=False))
    return ups


def link_outputs(w: SteerWidgets) -> list[Any]:
    """The widgets :func:`link_updates` fills."""
    return [w.clip, w.preset, w.features, w.pending]


def link_updates(ctx: AppContext, ref: str, value: object | None) -> list[Any]:
    """Updates for :func:`link_outputs`: the clip, preset and feature of :func:`prefill`, its value pending."""
    p = prefill(ctx, ref, value)
    clip = gr.Dropdown(choices=clip_choices(ctx, p.clip_id), value=p.clip_id) if p.clip_id else gr.skip()
    return [clip, p.preset if p.preset else gr.skip(), [p.ref], {} if p.value is None else {p.ref: p.value}]


def clip_link_outputs(w: SteerWidgets) -> list[Any]:
    """The widgets :func:`clip_link_updates` fills."""
    return [w.audio, w.clip, w.preset, w.features, w.pending]


def clip_link_updates(ctx: AppContext, ref: str, audio_path: str | None) -> list[Any]:
    """Updates for :func:`clip_link_outputs`: steer ``ref`` on the user's own clip ("steer this" on the Inspect
    tab), with the preset and value of its best steerability row where measured."""
    if not audio_path:
        raise UserError("give the clip to steer first")
    p = prefill(ctx, ref, None)
    return [audio_path, None, p.preset if p.preset else gr.skip(), [p.ref], {}]


def listen(ctx: AppContext, w: SteerWidgets) -> None:
    pre = presets(ctx)

    @guard
    def on_preset(name: str):  # noqa: ANN202
        p = pre.get(name)
        if p is None:
            raise UserError(f"unknown preset {name!r}")
        return p.question, p.prefix, ", ".join(p.labels), gr.Dropdown(choices=feature_choices(ctx, p.track))

    @guard
    def on_clip(clip_id: str | None):  # noqa: ANN202
        return clip_audio_path(ctx, clip_id) if clip_id else gr.skip()

    @guard
    def on_features(refs: list[str], pending: dict):  # noqa: ANN202
        return [*slider_updates(ctx, refs, pending), {}]

    @guard
    def steer(audio: str, question: str, prefix: str, labels: str, refs: list[str], v0: float, v1: float, v2: float,
              v3: float, mode: str, positions: list[str], max_new: int,
              progress=gr.Progress()):  # noqa: ANN001, ANN202
        """Run the loaded model on an audio clip twice, as it is and with up to four SAE features clamped, and
        compare the answers and the probabilities of the answer labels.

        Args:
            audio: the clip (WAV, FLAC, OGG, MP3 or AIFF)
            question: the question asked about the clip (e.g. "Is the speaker male or female?")
            prefix: text the answer starts with, so the next token is the label (may be empty)
            labels: comma-separated answer labels whose next-token probabilities are compared (e.g. "male, female")
            refs: up to four features as SAE_ID/K (e.g. tiny-audiollm-l1-e8/827)
            v0: the value of the first feature (set mode: the activation it is clamped to; add: added to it)
            v1: the value of the second feature
            v2: the value of the third feature
            v3: the value of the fourth feature
            mode: 'set' clamps each feature to its value, 'add' adds the value to its activation
            positions: token positions steered: any of 'audio', 'prompt', 'generated'
            max_new: tokens generated for each answer (1-64)
        """
        progress(0.05, desc="running the model twice (original, then steered)")
        v = run_steer(ctx, audio, question, prefix, labels, refs or [], [v0, v1, v2, v3], mode, positions or [],
                      max_new)
        for text in v.notices:
            gr.Warning(text)
        return v.summary, v.original, v.steered, v.probs, v.probs_fig, v.lens_fig

    w.preset.change(on_preset, [w.preset], [w.question, w.prefix, w.labels, w.features], api_visibility="private",
                    show_progress="hidden")
    w.clip.change(on_clip, [w.clip], [w.audio], api_visibility="private")
    w.features.change(on_features, [w.features, w.pending], [*w.sliders, w.pending], api_visibility="private",
                      show_progress="hidden")
    w.run.click(steer, [w.audio, w.question, w.prefix, w.labels, w.features, *w.sliders, w.mode, w.positions,
                         w.max_new],
                [w.summary, w.original, w.steered, w.probs, w.probs_fig, w.lens_fig],
                api_name="steer", concurrency_limit=1, concurrency_id="model")
