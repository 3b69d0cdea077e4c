"""Human evaluation of concept names (AR&D Table 2): sessions, answers, summary.

The app opens the catalog read-only, so annotations live in a sibling DuckDB file,
``<catalog stem>.annotations.duckdb`` (:func:`annotations_path_for`).
:class:`AnnotationStore` is the only code that writes it. It holds one connection
guarded by a lock, so any number of request threads may submit at once. Every
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

:func:`summarize` reports the mean and std of ratings, the CLAP text cosine and
(when a model is given) BERTScore between automatic names and annotator labels,
and agreement between annotators on the concepts several of them rated:
Krippendorff's alpha (interval metric) and the mean pairwise Spearman correlation.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Protocol, Sequence

import duckdb
import numpy as np

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
"""

CSV_COLUMNS = ("session_id", "annotator", "feature_ref", "sae_id", "feature", "label", "rating",
               "labelled_at", "rated_at")


def annotations_path_for(catalog_path: str | Path) -> Path:
    """``runs/demo/catalog.duckdb`` -> ``runs/demo/catalog.annotations.duckdb``."""
    p = Path(catalog_path)
    return p.with_name(f"{p.stem}.annotations.duckdb")


def _split_ref(ref: str) -> tuple[str, int]:
    sae_id, sep, k = ref.rpartition("/")
    if not sep or not k.isdigit():
        raise ValueError(f"feature reference {ref!r} must be SAE_ID/K, e.g. tiny-audiollm-l5-e8/123")
    return sae_id, int(k)


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


class AnnotationStore:
    """The annotations file; safe to share between threads (one connection, one lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(str(self.path))
        except duckdb.IOException as exc:
            raise RuntimeError(f"cannot open the annotations file {str(self.path)!r}: {exc} "
                               "(is another app process using it?)") from exc
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}  # sessions never change once created
        with self._lock:
            self._con.execute(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def __enter__(self) -> "AnnotationStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fetch(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        with self._lock:
            return self._con.execute(sql, list(params)).fetchall()

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
        with self._lock:
            row = self._con.execute("SELECT * FROM annotation_sessions WHERE session_id = ?", [sid]).fetchone()
            if row is None:
                pool = sorted(set(candidates))
                if not pool:
                    raise ValueError("no named concepts to annotate: run the describe stage first")
                order = np.random.default_rng(seed).permutation(len(pool))[: min(n, len(pool))]
                refs = [pool[i] for i in order]
                for r in refs:
                    _split_ref(r)
                self._con.execute(
                    "INSERT INTO annotation_sessions VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [sid, annotator, seed, n, json.dumps(refs), _now()],
                )
                row = self._con.execute("SELECT * FROM annotation_sessions WHERE session_id = ?", [sid]).fetchone()
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

    # -- answers -----------------------------------------------------------------------
    def _check_in_session(self, session: Session, ref: str) -> tuple[str, int]:
        if ref not in session.features:
            raise ValueError(f"concept {ref} is not part of session {session.session_id}")
        return _split_ref(ref)

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
        with self._lock:
            row = self._con.execute(
                "INSERT INTO annotation_answers VALUES (?, ?, ?, ?, ?, NULL, ?, NULL) "
                "ON CONFLICT (session_id, sae_id, feature) DO NOTHING RETURNING *",
                [session_id, session.annotator, sae_id, k, label, _now()],
            ).fetchone()
            if row is None:
                row = self._con.execute("SELECT * FROM annotation_answers WHERE session_id = ? AND sae_id = ? "
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
        with self._lock:
            row = self._con.execute(
                "UPDATE annotation_answers SET rating = ?, rated_at = ? "
                "WHERE session_id = ? AND sae_id = ? AND feature = ? RETURNING *",
                [rating, _now(), session_id, sae_id, k],
            ).fetchone()
        if row is None:
            raise ValueError(f"concept {ref}: save your own label before rating the automatic name")
        return Answer(*row)

    def answer(self, session_id: str, ref: str) -> Answer | None:
        sae_id, k = _split_ref(ref)
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


# -- agreement -------------------------------------------------------------------------
def krippendorff_alpha_interval(data: np.ndarray) -> float:
    """Krippendorff's alpha with the interval metric.

    ``data``: (coders, units) float array, NaN where a coder did not rate a unit.
    Units with fewer than two ratings are not pairable and are dropped. Returns NaN
    when fewer than two pairable values exist or all values are equal.
    """
    data = np.asarray(data, dtype=np.float64)
    values = []  # the pairable values of each unit
    for u in range(data.shape[1]):
        col = data[:, u]
        col = col[~np.isnan(col)]
        if col.size >= 2:
            values.append(col)
    if not values:
        return float("nan")
    n = sum(v.size for v in values)
    # observed disagreement: within-unit squared differences, each unit weighted by 1/(m_u - 1)
    d_o = sum(((v[:, None] - v[None, :]) ** 2).sum() / (v.size - 1) for v in values) / n
    allv = np.concatenate(values)
    d_e = ((allv[:, None] - allv[None, :]) ** 2).sum() / (n * (n - 1))
    if d_e == 0:
        return float("nan")
    return float(1.0 - d_o / d_e)


def mean_pairwise_spearman(ratings: Mapping[str, Mapping[str, float]], min_shared: int = 3) -> tuple[float, int]:
    """Mean Spearman rho over annotator pairs sharing >= ``min_shared`` concepts; (rho, n_pairs)."""
    from scipy.stats import spearmanr

    rhos = []
    for a, b in itertools.combinations(sorted(ratings), 2):
        shared = sorted(set(ratings[a]) & set(ratings[b]))
        if len(shared) < min_shared:
            continue
        x = [ratings[a][r] for r in shared]
        y = [ratings[b][r] for r in shared]
        if len(set(x)) < 2 or len(set(y)) < 2:
            continue  # rho is undefined for a constant vector
        rhos.append(float(spearmanr(x, y).statistic))
    return (float(np.mean(rhos)) if rhos else float("nan")), len(rhos)


# -- text similarity backends ----------------------------------------------------------
class TextEmbedder(Protocol):
    def embed_text(self, texts: Sequence[str], batch_size: int = 64, progress: bool = True) -> np.ndarray: ...


class BertScorer:
    """BERTScore F1 (Zhang et al. 2020) without idf weighting or baseline rescaling.

    Token embeddings from the last hidden layer of any local transformers encoder;
    each candidate token is matched to its most similar reference token (precision)
    and vice versa (recall); F1 is their harmonic mean. Special tokens are excluded.
    """

    def __init__(self, model: object, tokenizer: object, name: str) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name

    @classmethod
    def load(cls, path: str | Path) -> "BertScorer":
        from transformers import AutoModel, AutoTokenizer

        return cls(AutoModel.from_pretrained(str(path)), AutoTokenizer.from_pretrained(str(path)),
                   Path(str(path)).name)

    def _tokens(self, text: str) -> np.ndarray:
        import torch

        enc = self.tokenizer(text, return_tensors="pt", return_special_tokens_mask=True, truncation=True)
        special = enc.pop("special_tokens_mask")[0].bool()
        with torch.no_grad():
            h = self.model(**{k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}).last_hidden_state[0]
        h = h[~special] if (~special).any() else h
        return torch.nn.functional.normalize(h.float(), dim=-1).numpy()

    def f1(self, candidates: Sequence[str], references: Sequence[str]) -> np.ndarray:
        out = []
        for c, r in zip(candidates, references):
            sim = self._tokens(c) @ self._tokens(r).T
            p, rc = sim.max(axis=1).mean(), sim.max(axis=0).mean()
            out.append(2 * p * rc / (p + rc) if p + rc > 0 else 0.0)
        return np.asarray(out, dtype=np.float64)


# -- summary ---------------------------------------------------------------------------
@dataclass
class Metric:
    """One line of the summary: a value with its spread, or the reason it is missing."""

    name: str
    mean: float | None
    std: float | None
    n: int
    note: str = ""

    def text(self, digits: int = 3) -> str:
        if self.mean is None or np.isnan(self.mean):
            return f"unavailable: {self.note}" if self.note else "unavailable"
        s = f"{self.mean:.{digits}f}"
        if self.std is not None and not np.isnan(self.std):
            s += f" ± {self.std:.{digits}f}"
        return s + f" (n={self.n})" + (f"; {self.note}" if self.note else "")


@dataclass
class AnnotatorStats:
    annotator: str
    n_rated: int
    mean: float
    std: float


@dataclass
class AnnotationSummary:
    n_answers: int
    n_rated: int
    per_annotator: list[AnnotatorStats]
    rating: Metric
    clap_cosine: Metric
    bertscore: Metric
    alpha: Metric
    spearman: Metric


def latest_ratings(answers: Sequence[Answer]) -> dict[str, dict[str, float]]:
    """annotator -> {concept ref -> rating}; a concept rated in several sessions keeps the latest."""
    out: dict[str, dict[str, tuple[dt.datetime, float]]] = {}
    for a in answers:
        if a.rating is None:
            continue
        prev = out.setdefault(a.annotator, {}).get(a.ref)
        if prev is None or (a.rated_at or a.labelled_at) >= prev[0]:
            out[a.annotator][a.ref] = (a.rated_at or a.labelled_at, float(a.rating))
    return {ann: {ref: v for ref, (_, v) in d.items()} for ann, d in out.items()}


def summarize(answers: Sequence[Answer], names: Mapping[str, str], clap: TextEmbedder | None = None,
              bert: BertScorer | None = None, clap_note: str = "", bert_note: str = "") -> AnnotationSummary:
    """Table 2 numbers from ``answers``; ``names`` maps a concept ref to its automatic name.

    ``clap_note``/``bert_note`` say why a backend is missing when it is None.
    """
    rated = [a for a in answers if a.rating is not None]
    r = np.array([a.rating for a in rated], dtype=np.float64)
    rating = Metric("rating (0-5)", float(r.mean()) if r.size else None,
                    float(r.std(ddof=1)) if r.size > 1 else None, int(r.size),
                    "" if r.size else "no ratings yet")
    per = []
    for ann in sorted({a.annotator for a in rated}):
        x = np.array([a.rating for a in rated if a.annotator == ann], dtype=np.float64)
        per.append(AnnotatorStats(ann, int(x.size), float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0))

    pairs = [(names[a.ref], a.label) for a in answers if a.label and names.get(a.ref)]
    if clap is None:
        clap_m = Metric("CLAP cosine", None, None, 0, clap_note or "no CLAP model loaded")
    elif not pairs:
        clap_m = Metric("CLAP cosine", None, None, 0, "no labelled concepts with an automatic name yet")
    else:
        e_name = clap.embed_text([p[0] for p in pairs], progress=False)
        e_label = clap.embed_text([p[1] for p in pairs], progress=False)
        cos = (e_name * e_label).sum(axis=1)
        clap_m = Metric("CLAP cosine", float(cos.mean()), float(cos.std(ddof=1)) if cos.size > 1 else None,
                        int(cos.size), getattr(clap, "name", ""))
    if bert is None:
        bert_m = Metric("BERTScore F1", None, None, 0, bert_note or "no BERTScore model available")
    elif not pairs:
        bert_m = Metric("BERTScore F1", None, None, 0, "no labelled concepts with an automatic name yet")
    else:
        f = bert.f1([p[1] for p in pairs], [p[0] for p in pairs])
        bert_m = Metric("BERTScore F1", float(f.mean()), float(f.std(ddof=1)) if f.size > 1 else None,
                        int(f.size), bert.name)

    by_ann = latest_ratings(answers)
    shared_refs = sorted({ref for d in by_ann.values() for ref in d
                          if sum(ref in e for e in by_ann.values()) >= 2})
    if len(by_ann) < 2 or not shared_refs:
        note = "needs two or more annotators rating the same concepts (same seed and N)"
        alpha = Metric("Krippendorff's alpha (interval)", None, None, 0, note)
        spear = Metric("mean pairwise Spearman", None, None, 0, note)
    else:
        coders = sorted(by_ann)
        mat = np.array([[by_ann[c].get(ref, np.nan) for ref in shared_refs] for c in coders])
        a = krippendorff_alpha_interval(mat)
        alpha = Metric("Krippendorff's alpha (interval)", a, None, len(shared_refs),
                       f"{len(coders)} annotators" if not np.isnan(a) else "all shared ratings are identical")
        rho, n_pairs = mean_pairwise_spearman(by_ann)
        spear = Metric("mean pairwise Spearman", rho, None, n_pairs,
                       "annotator pairs" if n_pairs else "no pair shares 3+ non-constant ratings")
    return AnnotationSummary(len(answers), len(rated), per, rating, clap_m, bert_m, alpha, spear)
