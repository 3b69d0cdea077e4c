"""The annotations file: human evaluation of concept names (AR&D Table 2), sessions and answers.

The app opens the catalog read-only, so annotations live in a sibling DuckDB file,
``<catalog stem>.annotations.duckdb`` (:func:`annotations_path_for`).
:class:`AnnotationStore` is the only code that writes it. It opens the file for each
operation, under a lock, so any number of request threads may submit at once and two
app processes on the same file take turns instead of the second failing to start. Every
write is one committed statement (in DuckDB's WAL when the call returns, so a
killed process keeps it), and answers are keyed by (session, concept): a repeated
submit (double click, network retry) finds its row instead of adding one.

A session is (annotator, seed, n): the same seed samples the same concepts for
every annotator, which is what inter-annotator agreement needs, and starting it
again resumes it. The sampled references are stored with the session, so a
resumed session keeps its concepts even if the catalog changed since.

Protocol (blind naming): the annotator first writes their own label for a
concept without seeing its automatic name (:meth:`AnnotationStore.save_label`),
then sees the name and rates it 0-5 (:meth:`AnnotationStore.save_rating`).
The statistics over the answers are in :mod:`ard_core.agreement`.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import duckdb
import numpy as np

from ard_core.catalog.connect import CatalogError, connect
from ard_core.catalog.refs import FeatureRef, parse_feature_ref

RATING_MIN, RATING_MAX = 0, 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS annotation_sessions (
    session_id VARCHAR PRIMARY KEY, annotator VARCHAR NOT NULL, seed INTEGER NOT NULL, n INTEGER NOT NULL,
    features VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS annotation_answers (
    session_id VARCHAR NOT NULL, annotator VARCHAR NOT NULL, sae_id VARCHAR NOT NULL, feature INTEGER NOT NULL,
    label VARCHAR NOT NULL, rating INTEGER, labelled_at TIMESTAMP NOT NULL, rated_at TIMESTAMP,
    PRIMARY KEY (session_id, sae_id, feature)
);
CREATE TABLE IF NOT EXISTS annotation_plan (
    plan VARCHAR PRIMARY KEY, n INTEGER NOT NULL, seed INTEGER NOT NULL, fixed_by VARCHAR NOT NULL,
    fixed_at TIMESTAMP NOT NULL
);
"""

CSV_COLUMNS = ("session_id", "annotator", "feature_ref", "sae_id", "feature", "label", "rating",
               "labelled_at", "rated_at")


def annotations_path_for(catalog_path: str | Path) -> Path:
    """``runs/demo/catalog.duckdb`` -> ``runs/demo/catalog.annotations.duckdb``."""
    p = Path(catalog_path)
    return p.with_name(f"{p.stem}.annotations.duckdb")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def session_id_for(annotator: str, seed: int, n: int) -> str:
    """A readable, deterministic id: the same (annotator, seed, n) resumes the same session."""
    slug = re.sub(r"[^a-z0-9]+", "-", annotator.strip().lower()).strip("-") or "anon"
    return f"{slug}-s{int(seed)}-n{int(n)}"


def clean_annotator(name: str) -> str:
    name = " ".join(str(name or "").split())
    if not name:
        raise ValueError("enter your name (any identifier) before starting a session")
    if len(name) > 64:
        raise ValueError(f"annotator name is {len(name)} characters; use at most 64")
    return name


def check_rating(rating: object) -> int:
    """``rating`` as a whole number from RATING_MIN to RATING_MAX, or a ValueError saying so."""
    try:
        value = float(rating)  # type: ignore[arg-type]
        ok = not isinstance(rating, bool) and value == int(value)
    except (TypeError, ValueError, OverflowError):  # None, text, NaN, inf
        ok = False
    if not ok:
        raise ValueError(f"rating {rating!r} must be a whole number from {RATING_MIN} to {RATING_MAX}")
    value = int(value)
    if not RATING_MIN <= value <= RATING_MAX:
        raise ValueError(f"rating {value} must be from {RATING_MIN} to {RATING_MAX}")
    return value


@dataclass(frozen=True)
class Session:
    session_id: str
    annotator: str
    seed: int
    n: int
    features: tuple[str, ...]
    """The sampled concepts, as SAE_ID/K references, in presentation order."""
    created_at: dt.datetime


@dataclass(frozen=True)
class Plan:
    """The concept list an organiser fixed for every annotator: the session size and seed everyone starts
    with (with the same named concepts, the same seed draws the same concepts in the same order)."""

    n: int
    seed: int
    fixed_by: str
    fixed_at: dt.datetime


@dataclass(frozen=True)
class Answer:
    session_id: str
    annotator: str
    sae_id: str
    feature: int
    label: str
    rating: int | None
    labelled_at: dt.datetime
    rated_at: dt.datetime | None

    @property
    def ref(self) -> str:
        return f"{self.sae_id}/{self.feature}"


LOCK_WAIT_S = 10.0
"""How long an operation waits for another process (a second app on the same file) to let go of it."""


class AnnotationStore:
    """The annotations file; safe to share between threads, and between processes.

    The file is opened for each operation and closed after it (DuckDB lets one process at a
    time hold a file open for writing): two apps on the same catalog, one for annotators and
    one for a demo, take turns, each operation waiting up to ``lock_wait_s`` for the other's.
    Within a process a lock serialises the operations.
    """

    def __init__(self, path: str | Path, lock_wait_s: float = LOCK_WAIT_S) -> None:
        self.path = Path(path)
        self.lock_wait_s = float(lock_wait_s)
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}  # sessions never change once created
        with self._connection() as con:
            con.execute(_SCHEMA)

    def close(self) -> None:
        """Nothing stays open between operations; kept so the store is a context manager like the catalog."""

    def __enter__(self) -> "AnnotationStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The file, open for one operation under this process's lock, closed (and so released) after it."""
        with self._lock:
            con = self._connect()
            try:
                yield con
            finally:
                con.close()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        """Open the file, retrying while another process holds it (for at most ``lock_wait_s``)."""
        deadline, delay = time.monotonic() + self.lock_wait_s, 0.005
        while True:
            try:
                return connect(self.path, read_only=False, what="the annotations file",
                               busy_hint=f"another process held it for over {self.lock_wait_s:g} s")
            except CatalogError as exc:
                if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(2 * delay, 0.1)

    def _fetch(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        with self._connection() as con:
            return con.execute(sql, list(params)).fetchall()

    # -- sessions ----------------------------------------------------------------------
    def start_or_resume(self, annotator: str, n: int, seed: int, candidates: Sequence[str]) -> Session:
        """The session (annotator, seed, n), created by sampling ``n`` of ``candidates`` if new.

        Sampling sorts the candidates first, so the same seed draws the same
        concepts whatever order the caller listed them in.
        """
        annotator = clean_annotator(annotator)
        n, seed = int(n), int(seed)
        if n < 1:
            raise ValueError(f"a session needs at least 1 concept, got n={n}")
        sid = session_id_for(annotator, seed, n)
        with self._connection() as con:
            row = con.execute("SELECT * FROM annotation_sessions WHERE session_id = ?", [sid]).fetchone()
            if row is None:
                pool = sorted(set(candidates))
                if not pool:
                    raise ValueError("no named concepts to annotate: run the describe stage first")
                order = np.random.default_rng(seed).permutation(len(pool))[: min(n, len(pool))]
                refs = [pool[i] for i in order]
                for r in refs:
                    parse_feature_ref(r)
                con.execute(
                    "INSERT INTO annotation_sessions VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [sid, annotator, seed, n, json.dumps(refs), _now()],
                )
                row = con.execute("SELECT * FROM annotation_sessions WHERE session_id = ?", [sid]).fetchone()
        if row[1] != annotator:  # 'Ann B' and 'ann-b' share an id; answers must never mix between two people
            raise ValueError(f"the name {annotator!r} resumes session {sid}, which belongs to {row[1]!r}: enter "
                             "that name exactly to resume it, or choose a name that differs in letters or digits")
        return _session(row)

    def session(self, session_id: str) -> Session:
        if session_id not in self._sessions:
            rows = self._fetch("SELECT * FROM annotation_sessions WHERE session_id = ?", [session_id])
            if not rows:
                raise KeyError(f"no annotation session {session_id!r}")
            self._sessions[session_id] = _session(rows[0])
        return self._sessions[session_id]

    def sessions(self) -> list[Session]:
        return [_session(r) for r in self._fetch("SELECT * FROM annotation_sessions ORDER BY created_at, session_id")]

    def find_session(self, annotator: str, n: int, seed: int) -> Session:
        """The started session (annotator, seed, n): KeyError when it was never started, ValueError when
        its id belongs to another annotator (a name that differs only in case or punctuation)."""
        name = clean_annotator(annotator)
        sid = session_id_for(name, int(seed), int(n))
        try:
            session = self.session(sid)
        except KeyError:
            raise KeyError(f"no session {sid}: start it first, with the same name, N and seed") from None
        if session.annotator != name:
            raise ValueError(f"session {session.session_id} belongs to {session.annotator!r}, not {name!r}")
        return session

    # -- the organiser's plan -------------------------------------------------------------
    def fix_plan(self, n: int, seed: int, by: str) -> Plan:
        """Every annotator's next session is (n, seed) from now on; replaces an earlier plan."""
        n, seed = int(n), int(seed)
        if n < 1:
            raise ValueError(f"a session needs at least 1 concept, got n={n}")
        with self._connection() as con:
            con.execute("INSERT OR REPLACE INTO annotation_plan VALUES ('current', ?, ?, ?, ?)", [n, seed, by, _now()])
        return self.plan()  # type: ignore[return-value]

    def plan(self) -> Plan | None:
        rows = self._fetch("SELECT n, seed, fixed_by, fixed_at FROM annotation_plan WHERE plan = 'current'")
        return Plan(*rows[0]) if rows else None

    def clear_plan(self) -> None:
        with self._connection() as con:
            con.execute("DELETE FROM annotation_plan")

    # -- answers -----------------------------------------------------------------------
    def _check_in_session(self, session: Session, ref: str) -> FeatureRef:
        if ref not in session.features:
            raise ValueError(f"concept {ref} is not part of session {session.session_id}")
        return parse_feature_ref(ref)

    def save_label(self, session_id: str, ref: str, label: str) -> Answer:
        """Store the annotator's own (blind) label, once.

        Sending the same label again (a double click, a retry) changes nothing; a
        different one is refused, since the annotator has seen the automatic name
        by then. Check and insert run under one lock, so two racing submits cannot
        both pass the check.
        """
        label = " ".join(str(label or "").split())
        if not label:
            raise ValueError("write your own label for the concept before revealing its name")
        session = self.session(session_id)
        sae_id, k = self._check_in_session(session, ref)
        with self._connection() as con:
            row = con.execute(
                "INSERT INTO annotation_answers VALUES (?, ?, ?, ?, ?, NULL, ?, NULL) "
                "ON CONFLICT (session_id, sae_id, feature) DO NOTHING RETURNING *",
                [session_id, session.annotator, sae_id, k, label, _now()],
            ).fetchone()
            if row is None:
                row = con.execute("SELECT * FROM annotation_answers WHERE session_id = ? AND sae_id = ? "
                                        "AND feature = ?", [session_id, sae_id, k]).fetchone()
        if row[4] != label:
            raise ValueError(f"your label for concept {ref} is already saved and its name was revealed; "
                             "it cannot be changed (blind protocol)")
        return Answer(*row)

    def save_rating(self, session_id: str, ref: str, rating: int) -> Answer:
        """Store the 0-5 rating of the automatic name; the label must be saved first (blind protocol)."""
        rating = check_rating(rating)
        session = self.session(session_id)
        sae_id, k = self._check_in_session(session, ref)
        with self._connection() as con:
            row = con.execute(
                "UPDATE annotation_answers SET rating = ?, rated_at = ? "
                "WHERE session_id = ? AND sae_id = ? AND feature = ? RETURNING *",
                [rating, _now(), session_id, sae_id, k],
            ).fetchone()
        if row is None:
            raise ValueError(f"concept {ref}: save your own label before rating the automatic name")
        return Answer(*row)

    def save_answer(self, session_id: str, ref: str, label: str, rating: object) -> Answer:
        """The label, then the rating, of concept ``ref``: a whole answer for clients that name the concept.

        The rating is checked before the label is stored, so a bad one stores nothing.
        Safe to retry: the same answer again stores nothing new, a changed rating
        replaces the old one, and a changed label is refused (blind protocol).
        """
        rating = check_rating(rating)
        self.save_label(session_id, ref, label)
        return self.save_rating(session_id, ref, rating)

    def answer(self, session_id: str, ref: str) -> Answer | None:
        sae_id, k = parse_feature_ref(ref)
        rows = self._fetch("SELECT * FROM annotation_answers WHERE session_id = ? AND sae_id = ? AND feature = ?",
                           [session_id, sae_id, k])
        return Answer(*rows[0]) if rows else None

    def answers(self, session_id: str | None = None, annotator: str | None = None) -> list[Answer]:
        where, params = [], []
        if session_id is not None:
            where.append("session_id = ?")
            params.append(session_id)
        if annotator is not None:
            where.append("annotator = ?")
            params.append(annotator)
        sql = "SELECT * FROM annotation_answers"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY annotator, session_id, labelled_at, sae_id, feature"
        return [Answer(*r) for r in self._fetch(sql, params)]

    def next_index(self, session: Session, answers: Sequence[Answer] | None = None) -> int:
        """Index of the first concept without a rating (== n when the session is complete).

        ``answers``: the session's answers, when the caller has just read them.
        """
        answers = self.answers(session.session_id) if answers is None else answers
        rated = {a.ref for a in answers if a.rating is not None}
        for i, ref in enumerate(session.features):
            if ref not in rated:
                return i
        return len(session.features)

    def export_csv(self, path: str | Path, annotator: str | None = None) -> Path:
        """Every answer (or one annotator's) as CSV, one row per concept and session."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(CSV_COLUMNS)
            for a in self.answers(annotator=annotator):
                w.writerow([a.session_id, a.annotator, a.ref, a.sae_id, a.feature, a.label,
                            "" if a.rating is None else a.rating, a.labelled_at.isoformat(sep=" "),
                            "" if a.rated_at is None else a.rated_at.isoformat(sep=" ")])
        return path


def _session(row: tuple) -> Session:
    sid, annotator, seed, n, features, created = row
    return Session(sid, annotator, int(seed), int(n), tuple(json.loads(features)), created)
