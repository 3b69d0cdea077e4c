"""Builds the whole app from the tabs, and launches it.

``create_app`` opens the catalog read-only, loads the model once, renders every
tab (``render``) and wires its events (``listen``). Cross-tab wiring lives here:
opening a feature from the Concepts table or the Inspect tab, steering the inspected clip, and the deep links read from the page
request: ``?feature=SAE_ID/K`` (the feature page), ``?tab=lens`` etc., and
``?tab=steer&feature=SAE_ID/K&value=V`` (the Steer tab pre-filled, :func:`steer.link_updates`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, NamedTuple

import gradio as gr

from ard_core.ui import annotate, concepts, evaluation, feature, inspector, lens, quality, steer
from ard_core.ui.common import guard
from ard_core.ui.context import AppContext
from ard_core.ui.theme import CSS, theme

log = logging.getLogger(__name__)

TABS = {"concepts": "Concepts", "inspect": "Inspect", "feature": "Feature", "lens": "Lens", "steer": "Steer",
        "annotate": "Annotate", "evaluation": "Evaluation", "quality": "SAE quality"}


class App(NamedTuple):
    demo: gr.Blocks
    ctx: AppContext


def header(ctx: AppContext) -> str:
    n = ctx.catalog.counts()
    model = f"model **{ctx.llm.name}** on {ctx.device}" if ctx.llm is not None else "no model loaded"
    return ("# AR&D workbench\n"
            f"Catalog `{ctx.catalog_path}` · {n.saes} SAEs · {n.features:,} features ({n.named:,} named) · "
            f"{n.clips:,} clips · {model}")


TAB_MODULES = {"concepts": concepts, "inspect": inspector, "feature": feature, "lens": lens, "steer": steer,
               "annotate": annotate, "evaluation": evaluation, "quality": quality}


def render_tabs(ctx: AppContext) -> tuple[gr.Tabs, dict[str, Any]]:
    """Every tab's widgets, in TABS order (call inside the Blocks)."""
    widgets: dict[str, Any] = {}
    with gr.Tabs(selected="concepts", elem_id="ard-tabs") as tabs:
        for key, label in TABS.items():
            # render_children: the saved annotator name is filled in on page load, before the tab is opened
            extra = {"render_children": True} if key == "annotate" else {}
            with gr.Tab(label, id=key, elem_id=f"tab-{key}", **extra):
                widgets[key] = TAB_MODULES[key].render(ctx)
    return tabs, widgets


def create_app(catalog_path: str | Path | None = None, model: str | None = None, *, ctx: AppContext | None = None,
               **open_kw: Any) -> App:
    """The app on ``catalog_path`` (or a ready ``ctx``); ``open_kw`` go to :meth:`AppContext.open`."""
    if ctx is None:
        if catalog_path is None:
            raise ValueError("give catalog_path or ctx")
        ctx = AppContext.open(catalog_path, model, **open_kw)
    with gr.Blocks(title="AR&D workbench", analytics_enabled=False) as demo:
        gr.Markdown(header(ctx), elem_id="ard-header")
        tabs, w = render_tabs(ctx)
        cw, iw, fw, lw, sw, aw, ew, qw = (w[k] for k in ("concepts", "inspect", "feature", "lens", "steer",
                                                          "annotate", "evaluation", "quality"))

        feature_outs = feature.outputs(fw) + [tabs]

        @guard
        def open_ref(ref: str) -> list[Any]:
            return feature.show(ctx, ref) + [gr.Tabs(selected="feature")]

        def open_feature(trigger: Callable, to_ref: Callable, inputs: list) -> None:
            """Wire ``trigger`` so that ``to_ref(*inputs)`` names the feature to open in the Feature tab."""
            trigger(guard(to_ref), inputs, [fw.ref], api_visibility="private", show_progress="hidden").success(
                open_ref, [fw.ref], feature_outs, api_visibility="private")

        def steer_clip(trigger: Callable, inputs: list) -> None:
            """Wire ``trigger`` so that (feature, clip) from ``inputs`` fill the Steer tab, and switch to it."""
            trigger(guard(lambda ref, audio: steer.clip_link_updates(ctx, ref, audio) + [gr.Tabs(selected="steer")]),
                    inputs, steer.clip_link_outputs(sw) + [tabs], api_visibility="private")

        concepts.listen(ctx, cw, open_feature)
        inspector.listen(ctx, iw, open_feature, steer_clip)
        feature.listen(ctx, fw)
        lens.listen(ctx, lw)
        steer.listen(ctx, sw)
        annotate.listen(ctx, aw, demo)
        evaluation.listen(ctx, ew, demo)
        quality.listen(ctx, qw)

        wire_deep_links(ctx, demo, fw, sw, tabs)

        def feature_api(ref: str) -> dict:
            """One SAE feature as JSON: its name and description, scores, steerability, similar features, and
            its top and bottom clips with their activation over time.

            Args:
                ref: the feature as SAE_ID/K (e.g. tiny-audiollm-l4-e8/12), as search_features and inspect list them
            """
            return guard(feature.feature_json)(ctx, ref)

        feature_api.__name__ = "feature"  # the MCP tool's name
        gr.api(feature_api, api_name="feature")
    return App(demo, ctx)


def wire_deep_links(ctx: AppContext, demo: gr.Blocks, fw: feature.FeatureWidgets, sw: steer.SteerWidgets,
                    tabs: gr.Tabs) -> None:
    """On page load: ``?tab=steer&feature=REF&value=V`` fills the Steer tab, ``?feature=REF`` opens the
    feature page, ``?tab=NAME`` selects a tab."""
    n_feature, n_steer = len(feature.outputs(fw)), len(steer.link_outputs(sw))

    @guard
    def deep_link(request: gr.Request) -> list[Any]:
        params = dict(request.query_params) if request is not None else {}
        tab = params.get("tab")
        if tab == "steer" and params.get("feature"):
            return ([gr.skip()] * n_feature + steer.link_updates(ctx, params["feature"], params.get("value"))
                    + [gr.Tabs(selected="steer")])
        if params.get("feature"):
            return feature.show(ctx, params["feature"]) + [gr.skip()] * n_steer + [gr.Tabs(selected="feature")]
        return [gr.skip()] * (n_feature + n_steer) + [gr.Tabs(selected=tab) if tab in TABS else gr.skip()]

    demo.load(deep_link, None, feature.outputs(fw) + steer.link_outputs(sw) + [tabs], api_visibility="private")


def launch(app: App, port: int = 7860, host: str = "127.0.0.1", **kw: Any) -> None:
    """Serve the app. Only the catalog's clip folders are served as files, never the catalog, the
    annotations or the activation store (even inside a clip folder); uploads over
    ``ctx.audio_limits.max_bytes`` are refused."""
    ctx = app.ctx
    app.demo.queue(default_concurrency_limit=4)
    app.demo.launch(server_name=host, server_port=port, theme=theme(), css=CSS,
                    allowed_paths=ctx.catalog.clip_folders(),
                    blocked_paths=ctx.catalog.private_paths(ctx.annotations.path),
                    max_file_size=ctx.audio_limits.max_bytes, show_error=False, footer_links=["api", "gradio"],
                    auth=ctx.users.check if ctx.users else None,
                    auth_message="AR&D workbench: sign in with the name and password your organiser gave you.",
                    **kw)
