"""What the Steer tab offers and accepts, without widgets: its limits, prompt presets, feature and
clip choices, slider ranges, value checks and what a deep link fills in (:mod:`ard_core.ui.steer`)."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

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
    track: str | None = None
    """The track it asks about (None: free text)."""


def preset_name(track: str, fmt: str) -> str:
    """The preset asking ``track`` in prompt format ``fmt`` ('P2', 'P3', 'P3n')."""
    if fmt == "P2":
        return f"{track}: question (P2)"
    return f"{track}: multiple choice (P3)" if fmt == "P3" else f"{track}: multiple choice with neutral ({fmt})"


def presets(ctx: AppContext) -> dict[str, Preset]:
    """Prompt presets: the caption instruction and each track's P2 / P3 question (AudioLens Table I), and for
    emotion with 'neutral' among the labels P3n, the question steerability is measured by."""
    from ard_core.prompts import CAPTION_QUESTION, EMOTION_NEUTRAL_FORMAT, TRACK_PROMPTS, attribute_prompt, p3_options

    seen = ctx.catalog.label_values()
    out = {"Caption (free text)": Preset(CAPTION_QUESTION, "", ())}
    for track, tp in TRACK_PROMPTS.items():
        options = p3_options(track, seen[track]) if seen.get(track) else tp.paper_options
        if not options:
            continue
        every = tuple(options)
        if track == "emotion":
            options = tuple(o for o in options if o != "neutral")  # P3 lists Table I's five (see prompts.py)
        p2 = attribute_prompt(track, "P2")
        p3 = attribute_prompt(track, "P3", options)
        out[preset_name(track, "P2")] = Preset(p2.question, p2.prefix, tuple(options), track)
        out[preset_name(track, "P3")] = Preset(p3.question, p3.prefix, tuple(options), track)
        if track == "emotion" and "neutral" in every:
            p3n = attribute_prompt(track, EMOTION_NEUTRAL_FORMAT, every)
            labels = tuple(o for o in every if o != "neutral") + ("neutral",)
            out[preset_name(track, EMOTION_NEUTRAL_FORMAT)] = Preset(p3n.question, p3n.prefix, labels, track)
    return out


def feature_choices(ctx: AppContext, track: str | None = None) -> list[tuple[str, str]]:
    """(label, ref) of steerable features: with ``track``, those that steer it first (best flip rate first),
    then named features (by rank), then the rest by rank."""
    out, seen = [], set()
    for f in ctx.catalog.steerable_features(track, MAX_CHOICES) if track else []:
        b = f.best
        out.append((f"{f.name or 'unnamed'} — {f.ref} · steers {b.target} {b.flipped}/{b.n} at {b.value:.3g}", f.ref))
        seen.add(f.ref)
    out += [(f"{f.name} — {f.ref}" if f.name else f.ref, f.ref) for f in ctx.catalog.ranked_features(MAX_CHOICES)
            if f.ref not in seen]
    return out[:MAX_CHOICES]


def clip_choices(ctx: AppContext, include: str | None = None) -> list[tuple[str, str]]:
    """(label, clip_id) of the clips to pick from (test split first), with ``include`` among them."""
    rows = ctx.catalog.clip_choices(MAX_CLIPS)
    if include and all(c.clip_id != include for c in rows):
        rows = [ctx.catalog.clip_choice(include)] + rows
    return [(f"{c.clip_id} — {c.caption}" if c.caption else c.clip_id, c.clip_id) for c in rows]


def clip_audio_path(ctx: AppContext, clip_id: str) -> str:
    clip = ctx.catalog.clip(clip_id)
    path = ctx.catalog.resolve(clip.path)
    if path is None:
        raise UserError(f"the audio file of clip {clip_id} ({clip.path}) is not on this machine")
    return str(path)


class SliderSpec(NamedTuple):
    label: str
    minimum: float
    maximum: float
    value: float


def slider_spec(ctx: AppContext, ref: str, value: float | None = None) -> SliderSpec:
    """A value range for steering ``ref``, starting at ``value``, else at its measured steering value (the
    steerability stage's best), else at 2x its largest activation seen in scoring; the range is +-4x that
    activation, widened to hold the start with room to go further."""
    fr = parse_ref(ref)
    row = ctx.catalog.feature_page(fr).feature
    m = float(row.max_act) if row.max_act and np.isfinite(row.max_act) and row.max_act > 0 else 5.0
    if value is None:
        measured = [r for r in ctx.catalog.steerability(fr) if r.flipped > 0]
        value = measured[0].value if measured else 2 * m
    top = float(np.ceil(max(4 * m, 2 * abs(value))))
    return SliderSpec(f"{row.name or 'unnamed'} ({ref})", -top, top, round(float(value), 2))


def parse_labels(text: str | Sequence[str]) -> list[str]:
    items = text if isinstance(text, (list, tuple)) else str(text or "").split(",")
    out: list[str] = []
    for item in items:
        item = str(item).strip()
        if item and item not in out:
            out.append(item)
    return out


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


class Prefill(NamedTuple):
    """What the deep link ``?tab=steer&feature=REF&value=V`` fills in."""

    clip_id: str | None
    preset: str | None
    ref: str
    value: float | None
    """None: the slider starts where it would for a picked feature (its measured value)."""


def prefill(ctx: AppContext, ref: str, value: object | None) -> Prefill:
    """The feature's best steering row gives the preset (its track's question) and a probe clip it flipped
    (else the feature's first top clip on this machine)."""
    fr = parse_ref(ref)
    ctx.catalog.feature_page(fr)  # NotFound for a feature not in the catalog
    v = None if value is None else check_value(str(fr), value)
    rows = [r for r in ctx.catalog.steerability(fr) if r.flipped > 0] or ctx.catalog.steerability(fr)
    preset = preset_name(rows[0].track, rows[0].prompt_format) if rows else None
    clip = rows[0].clip_id if rows and rows[0].clip_id else None
    if clip is None:
        top = ctx.catalog.top_clip_files(fr, 1)
        clip = top[0].clip_id if top else None
    return Prefill(clip, preset if preset in presets(ctx) else None, str(fr), v)
