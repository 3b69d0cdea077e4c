"""Steer tab: clamp SAE features on a clip and compare the model's answers live.

The model is the one loaded once at start-up. Requests go through Gradio's queue
with a concurrency limit of 1 (and :attr:`AppContext.model_lock`), because steering
works by hooks on the shared model: two requests at once would steer each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import gradio as gr
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ard_core.ui import plots
from ard_core.ui.common import guard, note
from ard_core.ui.context import AppContext, UserError, parse_ref

MAX_FEATURES = 4
"""Features steered at once (one value slider each)."""
API_VALUE_BOUND = 1e4
"""Largest steering value (in magnitude) the API accepts."""
MAX_PROMPT_CHARS = 2000
"""Longest question or assistant prefix: the prompt's length is the model's cost."""
MAX_LABELS = 32
"""Most labels compared at once (each is a lens curve)."""
MAX_NEW_TOKENS = 64
"""Longest generation a request may ask for."""
MAX_CHOICES = 3000
MAX_CLIPS = 2000
POSITION_CHOICES = [("audio tokens", "audio"), ("prompt tokens", "prompt"), ("generated tokens", "generated")]


class Preset(NamedTuple):
    question: str
    prefix: str
    labels: tuple[str, ...]


def presets(ctx: AppContext) -> dict[str, Preset]:
    """Prompt presets: the caption instruction and each track's P2 / P3 question (AudioLens Table I)."""
    from ard_core.prompts import CAPTION_QUESTION, TRACK_PROMPTS, attribute_prompt, p3_options

    seen: dict[str, set[str]] = {}
    for r in ctx.query("SELECT labels FROM clips"):
        labels = json.loads(r["labels"]) if isinstance(r["labels"], str) else (r["labels"] or {})
        for track, value in labels.items():
            seen.setdefault(track, set()).add(value)
    out = {"Caption (free text)": Preset(CAPTION_QUESTION, "", ())}
    for track, tp in TRACK_PROMPTS.items():
        options = p3_options(track, sorted(seen[track])) if seen.get(track) else tp.paper_options
        if not options:
            continue
        if track == "emotion":
            options = tuple(o for o in options if o != "neutral")  # P3 lists Table I's five (see prompts.py)
        p2 = attribute_prompt(track, "P2")
        p3 = attribute_prompt(track, "P3", options)
        out[f"{track}: question (P2)"] = Preset(p2.question, p2.prefix, tuple(options))
        out[f"{track}: multiple choice (P3)"] = Preset(p3.question, p3.prefix, tuple(options))
    return out


def feature_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """(label, ref) of steerable features: named ones first (by rank), then the rest by rank."""
    rows = ctx.query("SELECT sae_id, feature, name FROM features ORDER BY (name IS NULL OR trim(name) = ''), "
                     "rank NULLS LAST, sae_id, feature LIMIT ?", [MAX_CHOICES])
    return [(f"{r['name']} — {r['sae_id']}/{r['feature']}" if r["name"] else f"{r['sae_id']}/{r['feature']}",
             f"{r['sae_id']}/{r['feature']}") for r in rows]


def clip_choices(ctx: AppContext) -> list[tuple[str, str]]:
    rows = ctx.query("SELECT clip_id, caption FROM clips ORDER BY split = 'test' DESC, clip_id LIMIT ?", [MAX_CLIPS])
    return [(f"{r['clip_id']} — {r['caption']}" if r["caption"] else r["clip_id"], r["clip_id"]) for r in rows]


def clip_audio_path(ctx: AppContext, clip_id: str) -> str:
    clip = ctx.clip(clip_id)
    if clip is None:
        raise UserError(f"no clip {clip_id!r} in the catalog")
    path = ctx.clip_path(clip)
    if path is None:
        raise UserError(f"the audio file of clip {clip_id} ({clip.path}) is not on this machine")
    return str(path)


class SliderSpec(NamedTuple):
    label: str
    minimum: float
    maximum: float
    value: float


def slider_spec(ctx: AppContext, ref: str) -> SliderSpec:
    """A value range for steering ``ref``: +-4x its largest activation seen in scoring, starting at 2x."""
    row = ctx.feature_row(ref)
    m = float(row.max_act) if row.max_act and np.isfinite(row.max_act) and row.max_act > 0 else 5.0
    top = float(np.ceil(4 * m))
    return SliderSpec(f"{row.name or 'unnamed'} ({ref})", -top, top, round(2 * m, 2))


def parse_labels(text: str | Sequence[str]) -> list[str]:
    items = text if isinstance(text, (list, tuple)) else str(text or "").split(",")
    out: list[str] = []
    for item in items:
        item = str(item).strip()
        if item and item not in out:
            out.append(item)
    return out


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


def check_value(ref: str, value: object) -> float:
    """A steering value as a float, or a UserError: NaN and inf slip through Gradio's slider bounds check."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(f"the steering value for {ref} is {value!r}, not a number") from None
    if not np.isfinite(v) or abs(v) > API_VALUE_BOUND:
        raise UserError(f"the steering value for {ref} is {v!r}; use a finite number from {-API_VALUE_BOUND:g} "
                        f"to {API_VALUE_BOUND:g}")
    return v


def run_steer(ctx: AppContext, audio_path: str | None, question: str, prefix: str, labels: str | Sequence[str],
              refs: Sequence[str], values: Sequence[float], mode: str = "set",
              positions: Sequence[str] = ("audio", "prompt", "generated"), max_new_tokens: int = 24) -> SteerView:
    """Original vs steered generation of the loaded model on one clip."""
    from ard_core.audio import load_upload
    from ard_core.steering import SteerSpec, steer

    llm = ctx.llm
    if llm is None:
        raise UserError(ctx.model_note or "no model is loaded")
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
    values = [check_value(ref, value) for ref, value in zip(refs, values)]

    by_sae: dict[str, dict[int, float]] = {}
    for ref, value in zip(refs, values):
        fr = parse_ref(ref)
        ctx.feature_row(str(fr))  # exists?
        by_sae.setdefault(fr.sae_id, {})[fr.feature] = value
    specs = []
    for sae_id, vals in by_sae.items():
        row = ctx.sae_row(sae_id)
        if row.d_in != llm.d_model:
            raise UserError(f"SAE {sae_id} reads {row.d_in}-d activations of model {row.model!r}; the loaded model "
                            f"{llm.name!r} has d_model={llm.d_model}. Start the app with that model (--model).")
        if row.layer >= llm.n_layers:
            raise UserError(f"SAE {sae_id} is at layer {row.layer}; the loaded model has {llm.n_layers} layers")
        specs.append(SteerSpec(layer=row.layer, values=vals, sae=ctx.sae(sae_id, device=str(llm.device)), mode=mode))

    clip = load_upload(audio_path, sr=llm.sampling_rate, limits=ctx.audio_limits)
    audio = clip.audio
    prompt = llm.build_prompt(question or "", prefix or None)
    if label_list:
        from ard_core.prompts import label_token_ids

        try:
            label_token_ids(llm.tokenizer, label_list)
        except ValueError as exc:
            raise UserError(f"labels cannot be compared: {exc}") from None
    with ctx.model_lock:
        res = steer(llm, audio, prompt, specs, positions=tuple(positions), max_new_tokens=n_new,
                    labels=label_list or None, with_lens=bool(label_list))
    o, s = res.original, res.steered
    if label_list:
        po = [o.label_probs[l] for l in label_list]
        ps = [s.label_probs[l] for l in label_list]
        probs = pd.DataFrame({"label": label_list, "original": np.round(po, 4), "steered": np.round(ps, 4),
                              "change": np.round(np.subtract(ps, po), 4)})
        probs_fig = plots.label_probs_figure(label_list, po, ps)
        lens_fig = plots.steer_lens_figure(label_list, o.lens, s.lens)
    else:
        probs = pd.DataFrame(columns=["label", "original", "steered", "change"])
        probs_fig = plots.label_probs_figure([], [], [])
        lens_fig = plots.steer_lens_figure([], None, None)
    applied = ", ".join(f"{r} {'=' if mode == 'set' else '+='} {float(v):g}" for r, v in zip(refs, values))
    summary = f"Steered {applied} at {', '.join(positions)} positions ({mode} mode; model {llm.name})."
    if clip.notices:
        summary += "\n\n" + note(" ".join(clip.notices), "warn")
    return SteerView(o.text, s.text, label_list, probs, probs_fig, lens_fig, summary, clip.notices)


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
            features = gr.Dropdown(feature_choices(ctx), value=[], multiselect=True, max_choices=MAX_FEATURES,
                                   allow_custom_value=True, filterable=True, label="Features to steer (type to search)",
                                   info="named features first; any SAE_ID/K can be typed", elem_id="steer-features")
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
                        run, summary, original, steered, probs, probs_fig, lens_fig)


def slider_updates(ctx: AppContext, refs: Sequence[str]) -> list[Any]:
    refs = list(refs or [])
    if len(refs) > MAX_FEATURES:
        raise UserError(f"steer at most {MAX_FEATURES} features at once")
    ups = []
    for i in range(MAX_FEATURES):
        if i < len(refs):
            s = slider_spec(ctx, refs[i])
            ups.append(gr.Slider(minimum=s.minimum, maximum=s.maximum, value=s.value, label=s.label, visible=True))
        else:
            ups.append(gr.Slider(visible=False))
    return ups


def listen(ctx: AppContext, w: SteerWidgets) -> None:
    pre = presets(ctx)

    @guard
    def on_preset(name: str):  # noqa: ANN202
        p = pre.get(name)
        if p is None:
            raise UserError(f"unknown preset {name!r}")
        return p.question, p.prefix, ", ".join(p.labels)

    @guard
    def on_clip(clip_id: str | None):  # noqa: ANN202
        return clip_audio_path(ctx, clip_id) if clip_id else gr.skip()

    @guard
    def on_features(refs: list[str]):  # noqa: ANN202
        return slider_updates(ctx, refs)

    @guard
    def on_run(audio, question, prefix, labels, refs, v0, v1, v2, v3, mode, positions, max_new,  # noqa: ANN001, ANN202
               progress=gr.Progress()):
        progress(0.05, desc="running the model twice (original, then steered)")
        v = run_steer(ctx, audio, question, prefix, labels, refs or [], [v0, v1, v2, v3], mode, positions or [],
                      max_new)
        for text in v.notices:
            gr.Warning(text)
        return v.summary, v.original, v.steered, v.probs, v.probs_fig, v.lens_fig

    w.preset.change(on_preset, [w.preset], [w.question, w.prefix, w.labels], api_visibility="private",
                    show_progress="hidden")
    w.clip.change(on_clip, [w.clip], [w.audio], api_visibility="private")
    w.features.change(on_features, [w.features], w.sliders, api_visibility="private", show_progress="hidden")
    w.run.click(on_run, [w.audio, w.question, w.prefix, w.labels, w.features, *w.sliders, w.mode, w.positions,
                         w.max_new],
                [w.summary, w.original, w.steered, w.probs, w.probs_fig, w.lens_fig],
                api_name="steer", concurrency_limit=1, concurrency_id="model")
