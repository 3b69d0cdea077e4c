"""Agreement and similarity statistics of the annotations (AR&D Table 2).

:func:`summarize` reports the mean and std of ratings, the CLAP text cosine and
(when a model is given) BERTScore between automatic names and annotator labels,
and agreement between annotators on the concepts several of them rated:
Krippendorff's alpha (interval metric, from the ``krippendorff`` package) and the
mean pairwise Spearman correlation. The answers come from
:class:`ard_core.catalog.AnnotationStore`.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Protocol, Sequence

import krippendorff
import numpy as np

from ard_core.catalog.annotations import Answer

# -- agreement -------------------------------------------------------------------------
def krippendorff_alpha_interval(data: np.ndarray) -> float:
    """Krippendorff's alpha with the interval metric (the ``krippendorff`` package).

    ``data``: (coders, units) float array, NaN where a coder did not rate a unit.
    Units with fewer than two ratings are not pairable and are dropped. Returns NaN
    when fewer than two pairable values exist or all of them are equal (expected
    disagreement 0), where the package raises or divides by zero.
    """
    data = np.asarray(data, dtype=np.float64)
    pairable = data[:, (~np.isnan(data)).sum(axis=0) >= 2]
    values = pairable[~np.isnan(pairable)]
    if values.size < 2 or np.all(values == values[0]):
        return float("nan")
    return float(krippendorff.alpha(reliability_data=pairable, level_of_measurement="interval"))


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
