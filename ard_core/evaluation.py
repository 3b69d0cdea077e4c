"""Matching predicted concept names to reference concepts (AR&D section 4).

Given a similarity matrix S (predictions x references; CLAP text cosine by
default), predictions and references are matched one-to-one with the Hungarian
algorithm (``scipy.optimize.linear_sum_assignment``) maximising the total
similarity of the pairs that clear the threshold gamma (0.7 in the paper); a
pair below gamma never counts as a match. Then

    precision = matches / n_pred,  recall = matches / n_ref,  F1 = harmonic mean.

mAP: all n_pred x n_ref pairs are ranked by similarity (ties by index); a pair is
relevant when it is one of the Hungarian matches. AP = (1 / n_ref) * sum over the
relevant ranks i of precision@i, i.e. precision integrated over the ranks where
recall increases, normalised by the number of references, so a method scores
high only when its matched pairs are also its most similar ones. With a single
list of references per evaluation, mAP equals this AP; :func:`mean_ap` averages
it over several lists (e.g. seeds of the random baseline).

The references themselves (:func:`references`: one per labelled (track, label), worded by
:func:`label_phrase`, never by the captions the names come from), the
text embedder that puts names and references in one space (:class:`TextEmbedder`) and
the SAE the Table 1 baselines are compared on (:func:`table1_sae`) are here too, so
that the describe, evaluate and steerability stages share them without importing each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from ard_core.config import ConfigError
from ard_core.datasets.labels import label_phrase
from ard_core.datasets.manifest import MULTI_LABEL_SEP

if TYPE_CHECKING:
    from ard_core.catalog import ClipRow, SaeRow

DEFAULT_GAMMA = 0.7

EmbedFn = Callable[[Sequence[str]], np.ndarray]
"""Texts -> (n, D) unit vectors: a :class:`TextEmbedder`, or any function (tests use bag-of-words)."""


class MatchResult(NamedTuple):
    precision: float
    recall: float
    f1: float
    ap: float
    pairs: list[tuple[int, int, float]]  # (pred, ref, similarity) of the matches


def hungarian_matches(sim: np.ndarray, gamma: float = DEFAULT_GAMMA) -> list[tuple[int, int, float]]:
    """One-to-one matches with similarity >= gamma maximising their total similarity."""
    sim = np.asarray(sim, dtype=np.float64)
    if sim.size == 0:
        return []
    gain = np.where(sim >= gamma, sim, 0.0)  # pairs under gamma contribute nothing
    rows, cols = linear_sum_assignment(gain, maximize=True)
    return [(int(r), int(c), float(sim[r, c])) for r, c in zip(rows, cols) if sim[r, c] >= gamma]


def average_precision(sim: np.ndarray, relevant: set[tuple[int, int]], n_ref: int) -> float:
    if n_ref == 0:
        return 0.0
    flat = np.asarray(sim, dtype=np.float64).ravel()
    order = np.argsort(-flat, kind="stable")
    n_cols = sim.shape[1]
    hits, total = 0, 0.0
    for rank, f in enumerate(order, start=1):
        if (int(f // n_cols), int(f % n_cols)) in relevant:
            hits += 1
            total += hits / rank
            if hits == len(relevant):
                break
    return total / n_ref


def match_concepts(sim: np.ndarray, gamma: float = DEFAULT_GAMMA) -> MatchResult:
    sim = np.asarray(sim, dtype=np.float64)
    n_pred, n_ref = sim.shape
    pairs = hungarian_matches(sim, gamma)
    tp = len(pairs)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    ap = average_precision(sim, {(p, r) for p, r, _ in pairs}, n_ref)
    return MatchResult(precision, recall, f1, ap, pairs)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a / np.clip(np.linalg.norm(a, axis=1, keepdims=True), 1e-12, None)
    b = b / np.clip(np.linalg.norm(b, axis=1, keepdims=True), 1e-12, None)
    return a @ b.T


def mean_ap(results: Sequence[MatchResult]) -> float:
    return float(np.mean([r.ap for r in results])) if results else 0.0


# -- what is matched: references, text embeddings, the Table 1 SAE -----------------------------
class Reference(NamedTuple):
    track: str
    label: str
    text: str


REFERENCE_TEXTS = ("phrases", "labels")
"""How a label becomes reference text: its phrase (:func:`ard_core.datasets.labels.label_phrase`) or the
label itself."""

def reference_text(track: str, label: str, kind: str = "phrases") -> str:
    """``label``'s reference text: its phrase ('phrases') or itself ('labels')."""
    if kind not in REFERENCE_TEXTS:
        raise ConfigError(f"reference text {kind!r}: use one of {list(REFERENCE_TEXTS)}")
    return label_phrase(track, label) if kind == "phrases" else label


def clip_labels(labels: dict[str, str]) -> list[tuple[str, str]]:
    """A clip's (track, label) pairs, multi-label cells (FSD50K's 'a;b') split, in track order."""
    return [(t, v) for t, cell in sorted(labels.items()) for v in (cell or "").split(MULTI_LABEL_SEP) if v]


def references(clips: Sequence[ClipRow], kind: str = "phrases", splits: Sequence[str] | None = None) -> list[Reference]:
    """One reference concept per (track, label) of ``clips`` in ``splits`` (None: every split), with
    its text (:func:`reference_text`): the vocabulary the global ('vocabulary') matching is scored on."""
    seen = {pair for c in clips if splits is None or c.split in splits for pair in clip_labels(c.labels)}
    return [Reference(t, l, reference_text(t, l, kind)) for t, l in sorted(seen)]


class TextEmbedder:
    """Texts -> unit vectors (n, D) for matching concept names with references.

    kind 'clap': the CLAP text tower (``clap_backend``/``clap_model``: the model the clips
    were embedded with for monosemanticity); 'hf-mean': the attention-masked mean of a
    transformers encoder's last hidden state (``text_model``), L2-normalised.
    """

    def __init__(self, kind: str, device: str, *, clap_backend: str = "hf", clap_model: str = "",
                 text_model: str = "") -> None:
        if kind not in ("clap", "hf-mean"):
            raise ConfigError(f"text embedder {kind!r}: use 'clap' or 'hf-mean'")
        self.kind = kind
        if kind == "clap":
            from ard_core.clap import load_clap

            self.clap = load_clap(clap_backend, clap_model, device=device)
        else:
            from transformers import AutoModel, AutoTokenizer

            self.tok = AutoTokenizer.from_pretrained(text_model)
            self.model = AutoModel.from_pretrained(text_model).to(device).eval()
        self.device = device

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if self.kind == "clap":
            return self.clap.embed_text(list(texts), progress=False)
        import torch

        with torch.inference_mode():
            batch = self.tok(list(texts), padding=True, truncation=True, return_tensors="pt").to(self.device)
            h = self.model(**batch).last_hidden_state
            m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(e, dim=-1).cpu().numpy()


def table1_sae(saes: Sequence[SaeRow], wanted: str | None) -> SaeRow:
    """The SAE of Table 1: ``wanted`` by id, or (None) the deepest layer's trained SAE with expansion nearest 8
    (never a random control: the control gets its own row in Table 1)."""
    trained = [s for s in saes if not s.control]
    if wanted is not None:
        for s in trained:
            if s.sae_id == wanted:
                return s
        raise ConfigError(f"[describe].table1_sae {wanted!r} is not a trained SAE of the catalog; have "
                          f"{[s.sae_id for s in trained]}")
    if not trained:
        raise ConfigError(f"no trained SAE in the catalog (only the random controls {[s.sae_id for s in saes]}); "
                          "run train-sae")
    deepest = max(s.layer for s in trained)
    return min((s for s in trained if s.layer == deepest), key=lambda s: (abs(s.expansion - 8), s.expansion))
