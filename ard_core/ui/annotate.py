"""Annotate tab: human evaluation of concept names (AR&D Table 2).

An annotator starts (or resumes) a session of N named concepts drawn with a seed.
For each concept they listen to its top clips and write their own label *before*
the automatic name is shown (blind), then rate the automatic name 0-5. Each step
is saved at once in the annotations file (:class:`ard_core.catalog.AnnotationStore`), so a page
reload or an app restart resumes at the first unrated concept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import gradio as gr

from ard_core.ui.common import guard, note
from ard_core.ui.context import AppContext, UserError
from ard_core.ui.sessions import (  # noqa: F401 (the tab's session logic, re-exported for its callers)
    N_CLIPS,
    ConceptCard,
    annotator_for,
    answers_table,
    card,
    check_owner,
    export_csv,
    export_for,
    fix_plan,
    plan_markdown,
    session_plan,
    start,
    submit_answer,
    submit_label,
    submit_rating,
    summary,
    summary_markdown,
    summary_table,
)
NAME_KEY = "ard-annotator"
"""Browser local-storage key holding the annotator's name between visits."""


# -- widgets ------------------------------------------------------------------------------------
@dataclass
class AnnotateWidgets:
    state: gr.JSON
    annotator: gr.Textbox
    n: gr.Number
    seed: gr.Number
    start: gr.Button
    status: gr.Markdown
    area: gr.Column
    audios: list[gr.Audio]
    label: gr.Textbox
    save_label: gr.Button
    reveal: gr.Markdown
    rating: gr.Radio
    save_rating: gr.Button
    back: gr.Button
    skip: gr.Button
    answers: gr.Dataframe
    export: gr.Button
    file: gr.File
    summary: gr.Markdown
    summary_table: gr.Dataframe
    refresh: gr.Button
    organiser: "OrganiserWidgets | None" = None
    """Only under --auth (shown to organisers)."""


@dataclass
class OrganiserWidgets:
    panel: gr.Accordion
    n: gr.Number
    seed: gr.Number
    fix: gr.Button
    release: gr.Button
    status: gr.Markdown


def render(ctx: AppContext) -> AnnotateWidgets:
    gr.Markdown("Rate how well the automatic concept names fit. For each concept: **listen** to its top clips, "
                "**write your own label** (the automatic name stays hidden until then), then **rate** the automatic "
                "name from 0 (unrelated) to 5 (exact). Every answer is saved at once; come back with the same "
                "name, N and seed to resume.")
    # the session and the concept shown, a hidden JSON rather than gr.State so that API and MCP clients pass it
    # back from annotate_start (Gradio's MCP server can neither fill nor return a State)
    state = gr.JSON({"session_id": None, "index": 0}, visible=False)
    with gr.Row(elem_classes="ard-bottom"):
        # under --auth the annotator is the logged-in user (filled on page load), not a typed name
        annotator = gr.Textbox(label="Signed in as" if ctx.users else "Your name", placeholder="e.g. alice",
                               scale=3, interactive=ctx.users is None, elem_id="annot-name")
        n = gr.Number(20, label="Concepts (N)", precision=0, minimum=1, maximum=500, scale=1, elem_id="annot-n")
        seed = gr.Number(0, label="Seed", precision=0, scale=1, elem_id="annot-seed")
        start_btn = gr.Button("Start or resume", variant="primary", scale=0, min_width=180, elem_id="annot-start")
    status = gr.Markdown(elem_id="annot-status")
    with gr.Column(visible=False, elem_id="annot-area") as area:
        with gr.Row():
            audios = [gr.Audio(type="filepath", interactive=False, label=f"clip {i + 1}", visible=False,
                               buttons=[]) for i in range(N_CLIPS)]
        with gr.Row():
            label = gr.Textbox(label="Your label for what these clips share", placeholder="e.g. dog barking",
                               scale=4, elem_id="annot-label")
            save_label = gr.Button("Save label & reveal name", variant="primary", scale=0, min_width=220,
                                   elem_id="annot-save-label")
        reveal = gr.Markdown(visible=False, elem_classes="ard-reveal", elem_id="annot-reveal")
        with gr.Row():
            rating = gr.Radio([str(i) for i in range(6)], label="How well does the automatic name fit? (0-5)",
                              interactive=False, scale=4, elem_id="annot-rating")
            save_rating = gr.Button("Save rating & next", variant="primary", interactive=False, scale=0,
                                    min_width=220, elem_id="annot-save-rating")
        with gr.Row():
            back = gr.Button("◀ Previous concept", size="sm")
            skip = gr.Button("Next concept ▶", size="sm")
    answers = gr.Dataframe(answers_table(ctx, None), label="Your answers in this session", interactive=False,
                           elem_id="annot-answers")
    with gr.Accordion("Results: summary and export", open=False):
        with gr.Row():
            refresh = gr.Button("Refresh summary", size="sm")
            export = gr.Button("Export all answers (CSV)" if ctx.users is None else "Export answers (CSV)",
                               size="sm", elem_id="annot-export")
        file = gr.File(label="CSV", interactive=False, visible=False)
        summary_md = gr.Markdown()
        summary_df = gr.Dataframe(interactive=False)
    return AnnotateWidgets(state, annotator, n, seed, start_btn, status, area, audios, label, save_label,
                           reveal, rating, save_rating, back, skip, answers, export, file, summary_md, summary_df,
                           refresh, _render_organiser() if ctx.users else None)


def _render_organiser() -> OrganiserWidgets:
    with gr.Accordion("Organiser: the concept list and the export", open=True, visible=False,
                      elem_id="annot-organiser") as panel:
        gr.Markdown("Fix N and the seed for everybody: every annotator's next session then rates the same "
                    "concepts in the same order (sessions already started keep theirs). Your export holds every "
                    "annotator's answers.")
        with gr.Row():
            n = gr.Number(20, label="Concepts (N)", precision=0, minimum=1, maximum=500, elem_id="org-n")
            seed = gr.Number(0, label="Seed", precision=0, elem_id="org-seed")
            fix = gr.Button("Fix for every annotator", variant="primary", elem_id="org-fix")
            release = gr.Button("Release (annotators choose)", elem_id="org-release")
        status = gr.Markdown(elem_id="org-status")
    return OrganiserWidgets(panel, n, seed, fix, release, status)


def outputs(w: AnnotateWidgets) -> list:
    return [w.state, w.status, w.area, *w.audios, w.label, w.save_label, w.reveal, w.rating, w.save_rating,
            w.back, w.skip, w.answers]


def view(ctx: AppContext, c: ConceptCard, same_concept: bool = False) -> list[Any]:
    """Updates for :func:`outputs` showing card ``c``.

    ``same_concept``: the page already shows this concept (its label was just saved), so
    its clips and navigation stay as they are. Every property update makes Gradio rebuild
    the component and its config, the bulk of a request's cost when many annotators submit.
    """
    s = c.session
    state = {"session_id": s.session_id, "index": c.index}
    table = answers_table(ctx, s.session_id, c.answers)
    head = f"Session `{s.session_id}` · **{c.n_rated} of {len(s.features)} rated**"
    if c.done:
        msg = note(f"{head}. Session complete — thank you! Export or review the results below.", "ok")
        hidden = [gr.Audio(visible=False, value=None) for _ in range(N_CLIPS)]
        return [state, msg, gr.Column(visible=False), *hidden, gr.Textbox(value=""), gr.Button(),
                gr.Markdown(visible=False), gr.Radio(value=None), gr.Button(), gr.Button(), gr.Button(), table]
    audios = [gr.Audio(value=c.clips[i][1], visible=True) if i < len(c.clips) else gr.Audio(value=None, visible=False)
              for i in range(N_CLIPS)]
    status = f"{head} · concept **{c.index + 1}** of {len(s.features)}"
    if not c.clips:
        status += " · ⚠️ no audio found for this concept's clips"
    if c.revealed:
        reveal = (f"**Automatic name:** {c.name or '(none)'}  \n{c.description or ''}  \n"
                  f"<small>concept {c.ref}</small>")
        rating = None if c.answer.rating is None else str(c.answer.rating)
        if same_concept:
            area, audios, nav = gr.skip(), [gr.skip()] * N_CLIPS, [gr.skip(), gr.skip()]
        else:
            area = gr.Column(visible=True)
            nav = [gr.Button(interactive=c.index > 0), gr.Button(interactive=c.index + 1 < len(s.features))]
        return [state, status, area, *audios,
                gr.Textbox(value=c.answer.label, interactive=False), gr.Button(interactive=False),
                gr.Markdown(value=reveal, visible=True), gr.Radio(value=rating, interactive=True),
                gr.Button(interactive=True), *nav, table]
    return [state, status, gr.Column(visible=True), *audios, gr.Textbox(value="", interactive=True),
            gr.Button(interactive=True), gr.Markdown(value="", visible=False), gr.Radio(value=None, interactive=False),
            gr.Button(interactive=False), gr.Button(interactive=c.index > 0),
            gr.Button(interactive=c.index + 1 < len(s.features)), table]


def _user(request: gr.Request | None) -> str | None:
    """The logged-in user (None without --auth)."""
    return getattr(request, "username", None) if request is not None else None


def _session_id(ctx: AppContext, state: dict, request: gr.Request | None) -> str:
    sid = (state or {}).get("session_id")
    if not sid:
        raise UserError("start a session first: enter your name and press 'Start or resume'")
    check_owner(ctx, sid, _user(request))
    return sid


class Endpoints(NamedTuple):
    """The Annotate tab's API endpoints (named as their api_name, which is also their MCP tool name)."""

    annotate_start: Callable
    annotate_label: Callable
    annotate_rate: Callable
    annotate_submit: Callable


def endpoints(ctx: AppContext) -> Endpoints:
    @guard
    def annotate_start(name: str, n: float, seed: float, request: gr.Request = None):  # noqa: ANN202
        """Start an annotation session, or resume the one with the same annotator, size and seed; shows its
        current concept (its top clips, without the name).

        Args:
            name: the annotator's name (ignored when the app has logins: the annotator is the logged-in user)
            n: concepts in the session (ignored when an organiser fixed the concept list)
            seed: the seed of the session's concept order (ignored when an organiser fixed the concept list)
        """
        n, seed = session_plan(ctx, n, seed)
        return view(ctx, start(ctx, annotator_for(ctx, name, _user(request)), n, seed))

    @guard
    def annotate_label(state: dict, label: str, request: gr.Request = None):  # noqa: ANN202
        """Save the annotator's own label for the session's current concept (step 1 of 2; then its name shows).

        Args:
            state: the session and concept, as annotate_start (or the last call) returned it
            label: what the annotator hears in the concept's clips, in a few words
        """
        sid = _session_id(ctx, state, request)
        return view(ctx, submit_label(ctx, sid, state["index"], label), same_concept=True)

    @guard
    def annotate_rate(state: dict, rating: str | None, request: gr.Request = None):  # noqa: ANN202
        """Rate how well the concept's name fits its clips (step 2 of 2), and move to the next concept.

        Args:
            state: the session and concept, as annotate_label returned it
            rating: 0 (unrelated) to 5 (exact)
        """
        sid = _session_id(ctx, state, request)
        return view(ctx, submit_rating(ctx, sid, state["index"], rating))

    @guard
    def annotate_submit(annotator: str, n: int, seed: int, ref: str, label: str, rating: int,
                        request: gr.Request = None) -> dict:
        """One whole answer (own label, then rating) to a named concept of a started session; safe to retry.

        Args:
            annotator: the annotator's name, as the session was started with (with logins: the logged-in user)
            n: the session's size, as it was started with
            seed: the session's seed, as it was started with
            ref: the concept as SAE_ID/K
            label: the annotator's own label for it
            rating: 0 (unrelated) to 5 (exact)
        """
        return submit_answer(ctx, annotator_for(ctx, annotator, _user(request)), n, seed, ref, label, rating)

    return Endpoints(annotate_start, annotate_label, annotate_rate, annotate_submit)


def listen(ctx: AppContext, w: AnnotateWidgets, demo: gr.Blocks) -> None:
    outs = outputs(w)
    annotate_start, annotate_label, annotate_rate, annotate_submit = endpoints(ctx)

    def move(delta: int):  # noqa: ANN202
        @guard
        def go(state: dict, request: gr.Request = None):  # noqa: ANN202
            sid = _session_id(ctx, state, request)
            return view(ctx, card(ctx, sid, state["index"] + delta))
        return go

    @guard
    def on_export(request: gr.Request = None):  # noqa: ANN202
        return gr.File(value=str(export_for(ctx, _user(request))), visible=True)

    @guard
    def on_refresh():  # noqa: ANN202
        return summary_markdown(ctx), summary_table(ctx)

    # a returning annotator finds their name filled in: it is kept in the browser's local storage
    remember = f"(name) => {{ localStorage.setItem('{NAME_KEY}', name); }}"
    w.start.click(annotate_start, [w.annotator, w.n, w.seed], outs, api_name="annotate_start").success(
        None, [w.annotator], None, js=remember)
    w.annotator.submit(annotate_start, [w.annotator, w.n, w.seed], outs, api_visibility="private").success(
        None, [w.annotator], None, js=remember)
    # concurrency_limit=None: answers are tiny locked writes; 20 annotators must never queue behind one another
    w.save_label.click(annotate_label, [w.state, w.label], outs, api_name="annotate_label", concurrency_limit=None)
    w.label.submit(annotate_label, [w.state, w.label], outs, api_visibility="private", concurrency_limit=None)
    w.save_rating.click(annotate_rate, [w.state, w.rating], outs, api_name="annotate_rate", concurrency_limit=None)
    gr.api(annotate_submit, api_name="annotate_submit", concurrency_limit=None)
    w.back.click(move(-1), [w.state], outs, api_visibility="private")
    w.skip.click(move(+1), [w.state], outs, api_visibility="private")
    w.export.click(on_export, None, [w.file], api_visibility="private")
    w.refresh.click(on_refresh, None, [w.summary, w.summary_table], api_visibility="private")
    if ctx.users is None:
        demo.load(None, [w.annotator], [w.annotator], js=f"(cur) => localStorage.getItem('{NAME_KEY}') || cur")
    else:
        listen_logins(ctx, w, demo)


def listen_logins(ctx: AppContext, w: AnnotateWidgets, demo: gr.Blocks) -> None:
    """Under --auth: the page shows who is signed in and the fixed concept list; organisers get their panel."""
    org = w.organiser

    @guard
    def on_load(request: gr.Request = None):  # noqa: ANN202
        user, plan, text = _user(request), ctx.annotations.plan(), plan_markdown(ctx)
        # a fixed concept list: N and the seed are the organiser's, shown but not editable
        n = gr.Number(value=plan.n, interactive=False) if plan else gr.Number(interactive=True)
        seed = gr.Number(value=plan.seed, interactive=False) if plan else gr.Number(interactive=True)
        return (user or "", n, seed, text if plan else "", gr.Accordion(visible=ctx.users.is_organiser(user)), text)

    def organise(release: bool):  # noqa: ANN202
        @guard
        def go(n: float, seed: float, request: gr.Request = None):  # noqa: ANN202
            return fix_plan(ctx, _user(request), None if release else n, seed)
        return go

    demo.load(on_load, None, [w.annotator, w.n, w.seed, w.status, org.panel, org.status], api_visibility="private")
    org.fix.click(organise(False), [org.n, org.seed], [org.status], api_visibility="private")
    org.release.click(organise(True), [org.n, org.seed], [org.status], api_visibility="private")
