"""The annotation sessions behind the Annotate tab (AR&D Table 2), without widgets: start or resume a
session, a concept's card, saving labels and ratings, the answers table, the CSV export and the summary
(mean rating, agreement). Each step is saved at once in the annotations file
(:class:`ard_core.catalog.AnnotationStore`).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import NamedTuple, Sequence

import pandas as pd

from ard_core.agreement import AnnotationSummary, summarize
from ard_core.catalog import Answer, Session
from ard_core.ui.context import AppContext, UserError

N_CLIPS = 4
"""Top clips an annotator hears per concept."""


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


# -- logins (--auth) -----------------------------------------------------------------------------
def annotator_for(ctx: AppContext, typed: str, username: str | None) -> str:
    """Who is annotating: the logged-in user under ``--auth`` (a typed name is ignored), else the typed name."""
    if ctx.users is None:
        return typed
    if not username:
        raise UserError("sign in first: this app was started with --auth")
    return username


def session_plan(ctx: AppContext, n: int, seed: int) -> tuple[int, int]:
    """(n, seed) of a session: the organiser's fixed concept list under ``--auth`` when there is one, else the
    annotator's own choice."""
    plan = ctx.annotations.plan() if ctx.users is not None else None
    return (plan.n, plan.seed) if plan else (int(n or 0), int(seed or 0))


def check_owner(ctx: AppContext, session_id: str, username: str | None) -> None:
    """Under ``--auth`` only the session's own annotator may answer in it (API clients send the session id)."""
    if ctx.users is not None and ctx.annotations.session(session_id).annotator != username:
        raise UserError("this session belongs to another annotator")


def plan_markdown(ctx: AppContext) -> str:
    plan = ctx.annotations.plan()
    if plan is None:
        return "No concept list is fixed: each annotator chooses N and the seed."
    return (f"Every annotator rates the same **{plan.n}** concepts (seed {plan.seed}), fixed by {plan.fixed_by} "
            f"at {plan.fixed_at:%Y-%m-%d %H:%M}.")


def fix_plan(ctx: AppContext, username: str | None, n: int | None, seed: int | None) -> str:
    """An organiser fixes the concept list (N, seed) every annotator's next session draws; ``n`` None releases
    it. Sessions already started keep their concepts."""
    if ctx.users is None or not ctx.users.is_organiser(username):
        raise UserError("only an organiser may fix the concept list")
    if n is None:
        ctx.annotations.clear_plan()
    else:
        try:
            ctx.annotations.fix_plan(int(n), int(seed or 0), str(username))
        except ValueError as exc:
            raise UserError(str(exc)) from None
    return plan_markdown(ctx)


def export_for(ctx: AppContext, username: str | None) -> Path:
    """The CSV export: every answer without ``--auth`` or for an organiser, else the user's own answers."""
    if ctx.users is None or ctx.users.is_organiser(username):
        return export_csv(ctx)
    return export_csv(ctx, annotator=username)
