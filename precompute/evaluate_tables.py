"""The evaluate stage's tables as ``evaluations`` rows: Table 1 per clip (with bootstrap spreads
and paired gaps), Table 1 over the vocabulary, Table 4, and which tracks the names reach.

Spreads (``ard_core.spread``): each per-clip figure is a mean over the test clips; its ``std``
and 95% interval come from ``n_boot`` bootstrap resamples of the clips (the same resamples
for every method and metric, seeded by the run's seed, so gaps are paired). 'random' is the
mean over its seeds with the std over seeds (as the paper); its interval is the bootstrap of
the seed-averaged per-clip scores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from ard_core.catalog import EvaluationRow, SaeRow
from ard_core.clip_eval import ClipResult
from ard_core.evaluation import EmbedFn, Reference, cosine_matrix, match_concepts
from ard_core.spread import bootstrap
from ard_core.tables import GAPS, METHOD_ORDER

if TYPE_CHECKING:
    from precompute.evaluate import Candidates

METRICS = ("precision", "recall", "f1", "map")


def clip_matrix(results: Sequence[ClipResult]) -> np.ndarray:
    """(clips, 4) precision, recall, F1, AP of each clip."""
    return np.array([[r.score.precision, r.score.recall, r.score.f1, r.score.ap] for r in results], np.float64)


def _row(table: str, method: str, sae_id: str, metric: str, data: np.ndarray, n_boot: int, seed: int,
         std: float | None = None) -> EvaluationRow:
    s = bootstrap(data, n_resamples=n_boot, seed=seed)
    return EvaluationRow(table, method, sae_id, metric, s.value, s.std if std is None else std, "per_clip",
                         s.low, s.high, s.n)


def per_clip_rows(sae_id: str, results: Mapping[tuple[str, int], Sequence[ClipResult]],
                  ms: Mapping[tuple[str, str], float], ms_random: Sequence[float], n_boot: int,
                  seed: int) -> list[EvaluationRow]:
    """Table 1 (protocol 'per_clip') and the paired gaps between methods (table 'table1_gap')."""
    per_method: dict[str, np.ndarray] = {}
    rows: list[EvaluationRow] = []
    for method in METHOD_ORDER:
        seeds = sorted(s for m, s in results if m == method)
        if not seeds:
            continue
        mats = np.stack([clip_matrix(results[(method, s)]) for s in seeds])  # (seeds, clips, 4)
        per_method[method] = mats.mean(0)
        for k, metric in enumerate(METRICS):
            seed_std = float(mats[:, :, k].mean(1).std()) if method == "random" else None
            rows.append(_row("table1", method, sae_id, metric, per_method[method][:, k], n_boot, seed, seed_std))
        if method == "random":
            if ms_random:
                rows.append(EvaluationRow("table1", method, sae_id, "ms", float(np.mean(ms_random)),
                                          float(np.std(ms_random)), "per_clip", n=len(ms_random)))
        elif ms.get((method, sae_id)) is not None:
            rows.append(EvaluationRow("table1", method, sae_id, "ms", ms[(method, sae_id)], None, "per_clip"))
    for a, b in GAPS:
        if a in per_method and b in per_method:
            for k, metric in enumerate(METRICS):
                if metric in ("f1", "map"):
                    diff = per_method[a][:, k] - per_method[b][:, k]
                    rows.append(_row("table1_gap", f"{a}-{b}", sae_id, metric, diff, n_boot, seed))
    return rows


def reference_check_rows(sae_id: str, embedder: str, refs: Sequence[str], emb: Mapping[str, np.ndarray],
                         gamma: float) -> list[EvaluationRow]:
    """Can the text embedder tell the references apart? The share of pairs of distinct references whose
    similarity clears gamma (a name close to one of them then 'matches' the other too), and their mean
    similarity ('reference_check'). An embedder with many such pairs cannot separate good names from bad."""
    refs = sorted(set(refs))
    if len(refs) < 2:
        return []
    sim = cosine_matrix(np.stack([emb[r] for r in refs]), np.stack([emb[r] for r in refs]))
    pairs = sim[np.triu_indices(len(refs), k=1)]
    return [EvaluationRow("reference_check", embedder, sae_id, "pairs_over_gamma", float((pairs >= gamma).mean()),
                          None, "per_clip", n=len(pairs)),
            EvaluationRow("reference_check", embedder, sae_id, "mean_similarity", float(pairs.mean()), None,
                          "per_clip", n=len(pairs))]


def vocabulary_rows(sae_id: str, cands: Mapping[tuple[str, int], "Candidates"], ms: Mapping[tuple[str, str], float],
                    ms_random: Sequence[float], refs: Sequence[Reference], embed: EmbedFn,
                    gamma: float) -> list[EvaluationRow]:
    """Table 1 (protocol 'vocabulary'): every name of a method against one reference per (track, label),
    one global Hungarian matching; 'random' is the mean +- std over seeds."""
    ref_emb = embed([r.text for r in refs])

    def scores(names: list[str]) -> dict[str, float]:
        if not names or not refs:
            return dict.fromkeys(METRICS, 0.0)
        res = match_concepts(cosine_matrix(embed(names), ref_emb), gamma)
        return {"precision": res.precision, "recall": res.recall, "f1": res.f1, "map": res.ap}

    rows: list[EvaluationRow] = []
    for m in METHOD_ORDER:
        seeds = sorted(s for mm, s in cands if mm == m)
        if not seeds:
            continue
        per = [scores(cands[(m, s)].names) for s in seeds]
        for k in METRICS:
            vals = [p[k] for p in per]
            rows.append(EvaluationRow("table1", m, sae_id, k, float(np.mean(vals)),
                                      float(np.std(vals)) if m == "random" else None, "vocabulary", n=len(vals)))
        ms_val = (float(np.mean(ms_random)) if ms_random else None) if m == "random" else ms.get((m, sae_id))
        ms_std = float(np.std(ms_random)) if m == "random" and ms_random else None
        rows.append(EvaluationRow("table1", m, sae_id, "ms", ms_val, ms_std, "vocabulary"))
    return rows


def table4_rows(saes: Sequence[SaeRow], ms: Mapping[tuple[str, str], float]) -> list[EvaluationRow]:
    """Highest MS per SAE for ard ('random_sae' for a random control), and for poly (the raw neurons of the
    SAE's layer)."""
    rows: list[EvaluationRow] = []
    for s in saes:
        rows.append(EvaluationRow("table4", "random_sae" if s.control else "ard", s.sae_id, "ms",
                                  ms.get(("ard", s.sae_id)), None))
        if ("poly", s.sae_id) in ms and not s.control:
            rows.append(EvaluationRow("table4", "poly", s.sae_id, "ms", ms[("poly", s.sae_id)], None))
    return rows


def track_matches(ard: Sequence[tuple[str, int, str]], refs: Sequence[Reference], embed: EmbedFn,
                  gamma: float) -> dict[str, list[tuple[str, str, float]]]:
    """track -> [(feature ref, name ~ label, similarity)] of ard concepts whose best reference is that track's."""
    out: dict[str, list[tuple[str, str, float]]] = {r.track: [] for r in refs}
    if not ard or not refs:
        return out
    sim = cosine_matrix(embed([n for _, _, n in ard]), embed([r.text for r in refs]))
    for (sid, f, name), row in zip(ard, sim):
        j = int(np.argmax(row))
        if row[j] >= gamma:
            out[refs[j].track].append((f"{sid}/{f}", f"{name} ~ {refs[j].label}", float(row[j])))
    return out
