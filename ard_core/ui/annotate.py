"""Annotate tab: human evaluation of concept names (AR&D Table 2).

An annotator starts (or resumes) a session of N named concepts drawn with a seed.
For each concept they listen to its top clips and write their own label *before*
the automatic name is shown (blind), then rate the automatic name 0-5. Each step
is saved at once in the annotations file (:class:`ard_core.catalog.AnnotationStore`), so a page
reload or an app restart resumes at the first unrated concept.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import gradio as gr
import pandas as pd

from ard_core.agreement import AnnotationSummary, summarize
from ard_core.catalog import Answer, Session
from ard_core.ui.common import guard, note
from ard_core.ui.context import AppContext, UserError

N_CLIPS = 4
"""Top clips an annotator hears per concept."""
NAME_KEY = "ard-annotator"
"""Browser local-storage key holding the annotator's name between visits."""


class ConceptCard(NamedTuple):
    """What the annotator sees for concept ``index`` of a session."""

    session: Session
    index: int
    ref: str | None  # None when the session is complete
    clips: list[tuple[str, str]]  # (clip_id, audio path)
    answer: Answer | None
    name: str | None  # the automatic name: None until the annotator's own label is saved
    description: str | None
    n_rated: int
    answers: tuple[Answer, ...] = ()
    """Every answer of the session so far."""

    @property
    def done(self) -> bool:
        return self.ref is None

    @property
    def revealed(self) -> bool:
        return self.answer is not None


def _concept(ctx: AppContext, session_id: str, index: int) -> str:
    """The concept at ``index`` of the session, or a UserError when the session is complete."""
    session = ctx.annotations.session(session_id)
    index = max(0, int(index))
    if index >= len(session.features):
        raise UserError("this session is complete")
    return session.features[index]


def card(ctx: AppContext, session_id: str, index: int | None = None) -> ConceptCard:
    """Concept ``index`` of the session (default: the first one not yet rated)."""
    session = ctx.annotations.session(session_id)
    saved = ctx.annotations.answers(session_id)
    answers = {a.ref: a for a in saved}
    n_rated = sum(a.rating is not None for a in answers.values())
    if index is None:
        index = ctx.annotations.next_index(session, saved)
    index = max(0, min(int(index), len(session.features)))
    if index == len(session.features):
        return ConceptCard(session, index, None, [], None, None, None, n_rated, tuple(saved))
    ref = session.features[index]
    answer = answers.get(ref)
    name = description = None
    if answer is not None:  # blind protocol: the name only after the annotator's own label
        row = ctx.catalog.feature_page(ref).feature
        name, description = row.name, row.description
    clips = [(c.clip_id, str(c.path)) for c in ctx.catalog.top_clip_files(ref, N_CLIPS)]
    return ConceptCard(session, index, ref, clips, answer, name, description, n_rated, tuple(saved))


def start(ctx: AppContext, annotator: str, n: int, seed: int) -> ConceptCard:
    session = ctx.annotations.start_or_resume(annotator, int(n or 0), int(seed or 0), ctx.catalog.named_features())
    return card(ctx, session.session_id)


def submit_label(ctx: AppContext, session_id: str, index: int, label: str) -> ConceptCard:
    """Save the annotator's own label; sending the same label again (a retry) changes nothing."""
    try:
        ctx.annotations.save_label(session_id, _concept(ctx, session_id, index), label)
    except UserError:
        raise
    except ValueError as exc:  # an empty label, or a changed one after the name was revealed
        raise UserError(str(exc)) from None
    return card(ctx, session_id, index)


def submit_rating(ctx: AppContext, session_id: str, index: int, rating: int | str | None) -> ConceptCard:
    """Save the rating, then move to the next unrated concept."""
    ref = _concept(ctx, session_id, index)
    if rating is None or rating == "":
        raise UserError("pick a rating from 0 (wrong) to 5 (exact) first")
    ctx.annotations.save_rating(session_id, ref, int(rating))
    return card(ctx, session_id)


def submit_answer(ctx: AppContext, annotator: str, n: int, seed: int, ref: str, label: str,
                  rating: int | str) -> dict[str, Any]:
    """A whole answer (own label, then rating) to concept ``ref`` of a started session, for API clients.

    Unlike the tab's label/rate events, which act on the concept the page shows, the
    concept is named, so a client may retry freely (:meth:`AnnotationStore.save_answer`).
    Returns the stored answer and the session's progress.
    """
    try:
        session = ctx.annotations.find_session(annotator, n, seed)
        a = ctx.annotations.save_answer(session.session_id, ref, label, rating)
    except KeyError as exc:  # the session was never started
        raise UserError(exc.args[0]) from None
    except (ValueError, TypeError) as exc:
        raise UserError(str(exc)) from None
    n_rated = sum(x.rating is not None for x in ctx.annotations.answers(session.session_id))
    return {"session_id": session.session_id, "ref": a.ref, "label": a.label, "rating": a.rating,
            "n_rated": n_rated, "n": len(session.features)}


def answers_table(ctx: AppContext, session_id: str | None, saved: Sequence[Answer] | None = None) -> pd.DataFrame:
    """The session's answers so far (``saved``: them, when the caller has just read them)."""
    cols = ["#", "concept", "your label", "automatic name", "rating"]
    if not session_id:
        return pd.DataFrame(columns=cols)
    session = ctx.annotations.session(session_id)
    answers = {a.ref: a for a in (ctx.annotations.answers(session_id) if saved is None else saved)}
    names = ctx.catalog.feature_names(list(answers))
    rows = []
    for i, ref in enumerate(session.features):
        a = answers.get(ref)
        if a is None:
            continue
        rows.append([i + 1, ref, a.label, names.get(ref, ""), "" if a.rating is None else a.rating])
    return pd.DataFrame(rows, columns=cols)


def export_csv(ctx: AppContext, annotator: str | None = None) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="ard-annotations-"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return ctx.annotations.export_csv(folder / f"annotations-{stamp}.csv", annotator=annotator or None)


def summary(ctx: AppContext) -> AnnotationSummary:
    """Table 2 over every answer; a concept no longer in the catalog keeps its answers but has no name to compare."""
    answers = ctx.annotations.answers()
    names = ctx.catalog.feature_names(sorted({a.ref for a in answers}))
    return summarize(answers, names, clap=ctx.clap() if answers else None, bert=ctx.bert() if answers else None,
                     clap_note=ctx.clap_note, bert_note=ctx.bert_note)


def summary_markdown(ctx: AppContext) -> str:
    s = summary(ctx)
    if s.n_answers == 0:
        return "No annotations yet."
    return "\n".join([
        f"**{s.n_rated}** rated concepts ({s.n_answers} labelled) by **{len(s.per_annotator)}** annotator(s).",
        "",
        "| measure | value |", "|---|---|",
        f"| rating of automatic names (0-5), mean ± std | {s.rating.text(2)} |",
        f"| CLAP text cosine, automatic name vs own label | {s.clap_cosine.text()} |",
        f"| BERTScore F1, automatic name vs own label | {s.bertscore.text()} |",
        f"| inter-annotator agreement: {s.alpha.name} | {s.alpha.text()} |",
        f"| inter-annotator agreement: {s.spearman.name} | {s.spearman.text()} |",
    ])


def summary_table(ctx: AppContext) -> pd.DataFrame:
    s = summary(ctx)
    return pd.DataFrame([[a.annotator, a.n_rated, round(a.mean, 3), round(a.std, 3)] for a in s.per_annotator],
                        columns=["annotator", "rated", "mean rating", "std"])


# -- widgets ------------------------------------------------------------------------------------
@dataclass
class AnnotateWidgets:
    state: gr.State
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


def render(ctx: AppContext) -> AnnotateWidgets:
    gr.Markdown("Rate how well the automatic concept names fit. For each concept: **listen** to its top clips, "
                "**write your own label** (the automatic name stays hidden until then), then **rate** the automatic "
                "name from 0 (unrelated) to 5 (exact). Every answer is saved at once; come back with the same "
                "name, N and seed to resume.")
    state = gr.State({"session_id": None, "index": 0})
    with gr.Row(elem_classes="ard-bottom"):
        annotator = gr.Textbox(label="Your name", placeholder="e.g. alice", scale=3, elem_id="annot-name")
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
            export = gr.Button("Export all answers (CSV)", size="sm", elem_id="annot-export")
        file = gr.File(label="CSV", interactive=False, visible=False)
        summary_md = gr.Markdown()
        summary_df = gr.Dataframe(interactive=False)
    return AnnotateWidgets(state, annotator, n, seed, start_btn, status, area, audios, label, save_label,
                           reveal, rating, save_rating, back, skip, answers, export, file, summary_md, summary_df,
                           refresh)


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


def _session_id(state: dict) -> str:
    sid = (state or {}).get("session_id")
    if not sid:
        raise UserError("start a session first: enter your name and press 'Start or resume'")
    return sid


def listen(ctx: AppContext, w: AnnotateWidgets, demo: gr.Blocks) -> None:
    outs = outputs(w)

    @guard
    def on_start(name: str, n: float, seed: float):  # noqa: ANN202
        return view(ctx, start(ctx, name, int(n or 0), int(seed or 0)))

    @guard
    def on_label(state: dict, label: str):  # noqa: ANN202
        sid = _session_id(state)
        return view(ctx, submit_label(ctx, sid, state["index"], label), same_concept=True)

    @guard
    def on_rating(state: dict, rating: str | None):  # noqa: ANN202
        sid = _session_id(state)
        return view(ctx, submit_rating(ctx, sid, state["index"], rating))

    def move(delta: int):  # noqa: ANN202
        @guard
        def go(state: dict):  # noqa: ANN202
            sid = _session_id(state)
            return view(ctx, card(ctx, sid, state["index"] + delta))
        return go

    def annotate_submit(annotator: str, n: int, seed: int, ref: str, label: str, rating: int) -> dict:
        """One whole answer to a named concept of a started session; safe to retry (see submit_answer)."""
        return guard(submit_answer)(ctx, annotator, n, seed, ref, label, rating)

    @guard
    def on_export():  # noqa: ANN202
        return gr.File(value=str(export_csv(ctx)), visible=True)

    @guard
    def on_refresh():  # noqa: ANN202
        return summary_markdown(ctx), summary_table(ctx)

    # a returning annotator finds their name filled in: it is kept in the browser's local storage
    remember = f"(name) => {{ localStorage.setItem('{NAME_KEY}', name); }}"
    w.start.click(on_start, [w.annotator, w.n, w.seed], outs, api_name="annotate_start").success(
        None, [w.annotator], None, js=remember)
    w.annotator.submit(on_start, [w.annotator, w.n, w.seed], outs, api_visibility="private").success(
        None, [w.annotator], None, js=remember)
    # concurrency_limit=None: answers are tiny locked writes; 20 annotators must never queue behind one another
    w.save_label.click(on_label, [w.state, w.label], outs, api_name="annotate_label", concurrency_limit=None)
    w.label.submit(on_label, [w.state, w.label], outs, api_visibility="private", concurrency_limit=None)
    w.save_rating.click(on_rating, [w.state, w.rating], outs, api_name="annotate_rate", concurrency_limit=None)
    gr.api(annotate_submit, api_name="annotate_submit", concurrency_limit=None)
    w.back.click(move(-1), [w.state], outs, api_visibility="private")
    w.skip.click(move(+1), [w.state], outs, api_visibility="private")
    w.export.click(on_export, None, [w.file], api_visibility="private")
    w.refresh.click(on_refresh, None, [w.summary, w.summary_table], api_visibility="private")
    demo.load(None, [w.annotator], [w.annotator], js=f"(cur) => localStorage.getItem('{NAME_KEY}') || cur")
