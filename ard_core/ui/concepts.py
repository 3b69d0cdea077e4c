"""Concepts tab: a searchable, sortable, paged table of every scored SAE feature.

Selecting a row opens the feature page (wired in :func:`listen`). The 'steers' column is a
feature's best steerability row (track -> target, flipped / probe clips); the table sorts by
it ('steerability') and filters to the features that steer one track.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import gradio as gr
import numpy as np
import pandas as pd

from ard_core.catalog import CONCEPT_SORTS, ConceptQuery
from ard_core.ui.common import guard
from ard_core.ui.context import AppContext, UserError

ALL = "All"
"""The filter dropdowns' 'no filter' choice."""
COLUMNS = ["feature", "name", "description", "layer", "SAE", "monosemanticity", "rank", "density", "detection",
           "steers"]
DATATYPES = ["str", "str", "str", "number", "str", "number", "number", "number", "number", "str"]
PAGE_SIZES = ["10", "25", "50", "100"]  # strings: a Dropdown's API schema (and MCP's) types its choices as strings


class ConceptPage(NamedTuple):
    table: pd.DataFrame
    total: int
    page: int
    n_pages: int
    refs: list[str]

    @property
    def summary(self) -> str:
        if self.total == 0:
            return "No features match."
        return f"{self.total:,} features · page {self.page} of {self.n_pages}"


def filter_options(ctx: AppContext) -> tuple[list[str], list[str], list[str]]:
    """(SAE ids, layers, steered tracks) for the filter dropdowns, each led by 'All'."""
    saes = ctx.catalog.saes()
    return ([ALL] + [s.sae_id for s in saes], [ALL] + [str(layer) for layer in sorted({s.layer for s in saes})],
            [ALL] + ctx.catalog.steerability_tracks())


def search_features(ctx: AppContext, q: ConceptQuery) -> ConceptPage:
    res = ctx.catalog.concepts_page(q)
    refs = [r.ref for r in res.rows]
    table = pd.DataFrame(
        [[r.ref, r.name or "", r.description or "", r.layer, r.sae_id,
          None if r.monosemanticity is None else round(float(r.monosemanticity), 3), r.rank,
          None if r.density is None else round(float(r.density), 4),
          None if r.detection is None else round(float(r.detection), 3), r.steers]
         for r in res.rows], columns=COLUMNS)
    return ConceptPage(table, res.total, res.page, res.n_pages, refs)


class MonoSlider(NamedTuple):
    minimum: float
    maximum: float


def mono_slider(ctx: AppContext) -> MonoSlider:
    """The monosemanticity slider's range: the catalog's scores (they are not a 0-1 share; the demo's run
    from about -2 to 9), widened to whole tenths; its minimum means no filter."""
    rng = ctx.catalog.monosemanticity_range() or (0.0, 1.0)
    lo, hi = np.floor(rng[0] * 10) / 10, np.ceil(rng[1] * 10) / 10
    return MonoSlider(float(lo), float(max(hi, lo + 0.1)))


def query_from_widgets(text, sae, layer, min_mono, named_only, sort, descending, page_size, steers,  # noqa: ANN001
                       page, *, mono_floor: float = 0.0) -> ConceptQuery:
    """The widgets' values as a query: 'All' is no filter, nor is a monosemanticity at or below
    ``mono_floor`` (the slider's minimum), and the layer must be a number."""
    layer = str(layer or ALL)
    try:
        layer_no = None if layer == ALL else int(layer)
    except ValueError:
        raise UserError(f"layer filter {layer!r} is not a number") from None
    try:
        mono = None if min_mono is None or float(min_mono) <= mono_floor else float(min_mono)
        return ConceptQuery(text=text or "", sae_id=None if (sae or ALL) == ALL else sae, layer=layer_no,
                            min_monosemanticity=mono, named_only=bool(named_only),
                            sort=sort or "rank", descending=bool(descending), page=int(page or 1),
                            page_size=int(page_size or 25), steer_track=None if (steers or ALL) == ALL else steers)
    except ValueError as exc:  # an unknown sort key
        raise UserError(str(exc)) from None


# -- widgets ------------------------------------------------------------------------------
@dataclass
class ConceptsWidgets:
    text: gr.Textbox
    search: gr.Button
    sae: gr.Dropdown
    layer: gr.Dropdown
    min_mono: gr.Slider
    named_only: gr.Checkbox
    sort: gr.Dropdown
    descending: gr.Checkbox
    page_size: gr.Dropdown
    steers: gr.Dropdown
    page: gr.Number
    prev: gr.Button
    next: gr.Button
    info: gr.Markdown
    table: gr.Dataframe
    refs: gr.JSON


def render(ctx: AppContext) -> ConceptsWidgets:
    saes, layers, tracks = filter_options(ctx)
    first = search_features(ctx, ConceptQuery())
    gr.Markdown("Every scored feature of every SAE. Search names and descriptions, filter, sort, "
                "and click a row to open its feature page.")
    with gr.Row(equal_height=True):
        text = gr.Textbox(placeholder="search names and descriptions, a feature index, or SAE_ID/K …",
                          show_label=False, scale=5, elem_id="concepts-search", container=False)
        search = gr.Button("Search", variant="primary", scale=1, min_width=100, elem_id="concepts-search-btn")
    with gr.Row():
        sae = gr.Dropdown(saes, value=ALL, label="SAE", scale=2)
        layer = gr.Dropdown(layers, value=ALL, label="Layer", scale=1, min_width=90)
        mono = mono_slider(ctx)
        min_mono = gr.Slider(mono.minimum, mono.maximum, value=mono.minimum, step=0.01, label="Min. monosemanticity",
                             info="the leftmost value shows every feature", scale=2, elem_id="concepts-min-mono")
        sort = gr.Dropdown(list(CONCEPT_SORTS), value="rank", label="Sort by", scale=1, min_width=120)
        with gr.Column(scale=1, min_width=130):
            descending = gr.Checkbox(False, label="Descending")
            named_only = gr.Checkbox(False, label="Named only")
        steers = gr.Dropdown(tracks, value=ALL, label="Steers", scale=1, min_width=110, elem_id="concepts-steers",
                             info="only features that steer this track")
        page_size = gr.Dropdown(PAGE_SIZES, value="25", label="Per page", scale=1, min_width=90)
    table = gr.Dataframe(first.table, headers=COLUMNS, datatype=DATATYPES, interactive=False, wrap=True,
                         max_height=620, elem_id="concepts-table", show_search="none",
                         column_widths=["14%", "11%", "22%", "5%", "11%", "8%", "5%", "6%", "6%", "12%"])
    with gr.Row(elem_classes="ard-pager"):
        prev = gr.Button("◀ Previous", size="sm", scale=0, min_width=110)
        info = gr.Markdown(first.summary, elem_id="concepts-info")
        page = gr.Number(1, show_label=False, precision=0, minimum=1, scale=0, min_width=90, container=False,
                         elem_id="concepts-page")
        nxt = gr.Button("Next ▶", size="sm", scale=0, min_width=110)
    # the page's refs: a hidden JSON, not gr.State (Gradio's MCP server drops State outputs twice on queued events)
    refs = gr.JSON(first.refs, visible=False)
    return ConceptsWidgets(text, search, sae, layer, min_mono, named_only, sort, descending, page_size, steers, page,
                           prev, nxt, info, table, refs)


def _run(ctx: AppContext, *values):  # noqa: ANN002, ANN202
    """The handler behind every control: ``values`` are the filters' widgets, then the page."""
    res = search_features(ctx, query_from_widgets(*values, mono_floor=mono_slider(ctx).minimum))
    return res.table, res.summary, res.page, res.refs


def listen(ctx: AppContext, w: ConceptsWidgets, open_feature) -> None:  # noqa: ANN001
    """``open_feature(ref)`` wiring comes from the app: it fills the feature page and switches to it."""
    filters = [w.text, w.sae, w.layer, w.min_mono, w.named_only, w.sort, w.descending, w.page_size, w.steers]
    outs = [w.table, w.info, w.page, w.refs]

    @guard
    def search_features(text: str, sae: str, layer: str, min_monosemanticity: float, named_only: bool, sort: str,
                        descending: bool, page_size: int, steers: str):  # noqa: ANN202
        """Search the SAE features by name and description; the first page of matches.

        Args:
            text: words that must all appear in a feature's name or description, a feature index, or SAE_ID/K
            sae: only this SAE's features ('All': every SAE)
            layer: only features of SAEs at this layer ('All': every layer)
            min_monosemanticity: only features scoring at least this (at or below the lowest score: no filter)
            named_only: only features the describe stage named
            sort: rank, monosemanticity, density, layer, feature, name, detection or steerability
            descending: sort from the largest value down
            page_size: features per page: "10", "25", "50" or "100"
            steers: only features that steer this track ('All': no filter)
        """
        return _run(ctx, text, sae, layer, min_monosemanticity, named_only, sort, descending, page_size, steers, 1)

    @guard
    def at_page(*args):  # noqa: ANN002, ANN202
        return _run(ctx, *args)

    def step(delta: int):  # noqa: ANN202
        def go(*args):  # noqa: ANN002, ANN202
            *f, page = args
            return _run(ctx, *f, int(page or 1) + delta)
        return go

    w.search.click(search_features, filters, outs, api_name="search_features")
    w.text.submit(search_features, filters, outs, api_visibility="private")
    for comp in (w.sae, w.layer, w.named_only, w.sort, w.descending, w.page_size, w.steers):
        comp.change(search_features, filters, outs, api_visibility="private", show_progress="minimal")
    w.min_mono.release(search_features, filters, outs, api_visibility="private", show_progress="minimal")
    w.page.submit(at_page, filters + [w.page], outs, api_visibility="private")
    w.prev.click(guard(step(-1)), filters + [w.page], outs, api_visibility="private")
    w.next.click(guard(step(+1)), filters + [w.page], outs, api_visibility="private")

    def selected(refs: list[str], evt: gr.SelectData) -> str:
        value = evt.row_value[0] if evt.row_value else None
        if not value:
            row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
            value = refs[row]
        return str(value)

    open_feature(w.table.select, selected, [w.refs])
