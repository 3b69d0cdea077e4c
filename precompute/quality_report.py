"""Markdown of the SAE quality figures (``sae_metrics``), shared by the quality stage's README and
``python -m precompute report``: one line per SAE (its random control after it), spliced P3 accuracy
per track under the unspliced model's, the probes per track, and what each random control shows
next to its trained twin, said plainly when the control does as well.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from ard_core.catalog import EvaluationRow, SaeMetricRow, SaeRow, twin_of

Index = dict[tuple[str, str], SaeMetricRow]


def _index(rows: Iterable[SaeMetricRow]) -> Index:
    return {(r.sae_id, r.metric): r for r in rows}


def _cell(r: SaeMetricRow | None, std: bool = True, digits: int = 2) -> str:
    if r is None or r.value is None:
        return "-"
    return f"{r.value:.{digits}f}" + (f" +- {r.std:.{digits}f}" if std and r.std is not None else "")


def _tracks(rows: Iterable[SaeMetricRow], prefix: str) -> list[str]:
    return sorted({r.metric[len(prefix):] for r in rows if r.metric.startswith(prefix) and "@" not in r.metric})


def track_mean(idx: Index, sae_id: str, prefix: str, tracks: Sequence[str]) -> float | None:
    """Mean over ``tracks`` of ``prefix + track`` (None unless every track has a value)."""
    vals = [idx[(sae_id, prefix + t)].value for t in tracks if (sae_id, prefix + t) in idx]
    return float(np.mean(vals)) if vals and len(vals) == len(tracks) else None


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def summary_md(rows: Sequence[SaeMetricRow], saes: Sequence[SaeRow]) -> list[str]:
    """One line per SAE: held-out EV and L0, CE score and KL (audio / all positions), spliced accuracy
    and probes as means over tracks, seed stability."""
    idx = _index(rows)
    acc, pr = _tracks(rows, "spliced_acc_"), _tracks(rows, "probe_k1_")
    lines = ["| SAE | EV | L0 | CE score | CE score @all | KL | KL @all | spliced acc | probe k=1 | probe k=5 | "
             "seed stability |", "|---|" + "---|" * 10]
    for s in saes:
        i = s.sae_id
        lines.append(f"| {i} | {_cell(idx.get((i, 'explained_variance')))} | {_cell(idx.get((i, 'l0')))} | "
                     f"{_cell(idx.get((i, 'ce_score')))} | {_cell(idx.get((i, 'ce_score@all')))} | "
                     f"{_cell(idx.get((i, 'kl')), digits=3)} | {_cell(idx.get((i, 'kl@all')), digits=3)} | "
                     f"{_num(track_mean(idx, i, 'spliced_acc_', acc))} | {_num(track_mean(idx, i, 'probe_k1_', pr))} | "
                     f"{_num(track_mean(idx, i, 'probe_k5_', pr))} | {_cell(idx.get((i, 'seed_stability')))} |")
    return lines


def spliced_md(rows: Sequence[SaeMetricRow], saes: Sequence[SaeRow], model: str) -> list[str]:
    """P3 accuracy per track: the unspliced model first (with n), then each SAE spliced at audio positions."""
    idx = _index(rows)
    tracks = _tracks(rows, "spliced_acc_")
    if not tracks:
        return []
    n = {t: idx.get((model, f"n_{t}")) for t in tracks}
    lines = ["| | " + " | ".join(f"{t} (n={int(n[t].value) if n[t] else '?'})" for t in tracks) + " |",
             "|---|" + "---|" * len(tracks),
             f"| unspliced {model} | " + " | ".join(_cell(idx.get((model, f"acc_{t}"))) for t in tracks) + " |"]
    for s in saes:
        lines.append(f"| {s.sae_id} | " + " | ".join(_cell(idx.get((s.sae_id, f"spliced_acc_{t}"))) for t in tracks)
                     + " |")
    return lines


def zero_md(rows: Sequence[SaeMetricRow], model: str, layers: Sequence[int]) -> list[str]:
    """Each layer zero-ablated (audio positions / every position): what a splice is measured against."""
    idx = _index(rows)
    acc = _tracks(rows, "spliced_acc_")
    h = idx.get((model, "caption_ce"))
    if h is None and not acc:
        return []
    lines = [f"| layer zeroed at | caption CE (unspliced {_cell(h)}) | KL at the answer | P3 acc (mean over tracks) |",
             "|---|---|---|---|"]
    for layer in layers:
        for sfx, where in (("", "audio"), ("@all", "all")):
            ce, kl = idx.get((model, f"caption_ce_zero_l{layer}{sfx}")), idx.get((model, f"zero_kl_l{layer}{sfx}"))
            if ce is None and kl is None:
                continue
            vals = [idx[(model, f"zero_acc_l{layer}_{t}{sfx}")].value for t in acc
                    if (model, f"zero_acc_l{layer}_{t}{sfx}") in idx]
            lines.append(f"| {layer} {where} | {_cell(ce)} | {_cell(kl, digits=3)} | "
                         f"{_num(float(np.mean(vals)) if vals else None)} |")
    return lines


def probes_md(rows: Sequence[SaeMetricRow], ids: Sequence[str]) -> list[str]:
    """Balanced accuracy of the k = 1 / k = 5 probes per track (mean over the track's labels)."""
    idx = _index(rows)
    tracks = _tracks(rows, "probe_k1_")
    if not tracks:
        return []
    lines = ["| k = 1 / k = 5 | " + " | ".join(tracks) + " |", "|---|" + "---|" * len(tracks)]
    for i in ids:
        cells = [f"{_cell(idx.get((i, f'probe_k1_{t}')), False)} / {_cell(idx.get((i, f'probe_k5_{t}')), False)}"
                 for t in tracks]
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    return lines


def _verdict(what: str, control: float | None, trained: float | None) -> str | None:
    if control is None or trained is None:
        return None
    if control >= trained:
        return f"the random control {what} at least as well as the trained SAE ({control:.2f} vs {trained:.2f})"
    return f"it {what} {trained - control:.2f} less well ({control:.2f} vs {trained:.2f})"


def control_md(rows: Sequence[SaeMetricRow], saes: Sequence[SaeRow],
               table1: Sequence[EvaluationRow] = ()) -> list[str]:
    """A sentence per random control: its figures beside its trained twin's, and plainly whether it
    probes (k = 1 and 5) or names (Table 1 per-clip F1, when given) as well."""
    idx = _index(rows)
    pr = _tracks(rows, "probe_k1_")
    f1 = {r.method: r.value for r in table1 if r.metric == "f1"}
    out = []
    for c in (s for s in saes if s.control):
        t = twin_of(c.sae_id)

        def value(sae_id: str, metric: str) -> float | None:
            return getattr(idx.get((sae_id, metric)), "value", None)

        def pair(metric: str, digits: int = 2) -> str:
            a, b = value(c.sae_id, metric), value(t, metric)
            return " vs ".join("-" if v is None else f"{v:.{digits}f}" for v in (a, b))

        said = [f"**Random control** `{c.sae_id}` (never trained) vs its trained twin `{t}`: explained variance "
                f"{pair('explained_variance')}; spliced in at the audio positions CE score {pair('ce_score')}, KL "
                f"{pair('kl', 3)}; at every position CE score {pair('ce_score@all')}, KL {pair('kl@all', 3)}."]
        verdicts = [_verdict("keeps the caption loss, spliced in at every position,", value(c.sae_id, "ce_score@all"),
                             value(t, "ce_score@all")),
                    _verdict("probes (k = 1)", track_mean(idx, c.sae_id, "probe_k1_", pr),
                             track_mean(idx, t, "probe_k1_", pr)),
                    _verdict("probes (k = 5)", track_mean(idx, c.sae_id, "probe_k5_", pr),
                             track_mean(idx, t, "probe_k5_", pr))]
        if any(r.sae_id == t for r in table1):
            verdicts.append(_verdict("names (Table 1 per-clip F1)", f1.get("random_sae"), f1.get("ard")))
        said += [v[0].upper() + v[1:] + "." for v in verdicts if v]
        out.append(" ".join(said))
    return out


def quality_md(rows: Sequence[SaeMetricRow], saes: Sequence[SaeRow], model: str,
               table1: Sequence[EvaluationRow] = ()) -> list[str]:
    """The whole section: summary, spliced accuracy per track, probes per track, the controls."""
    layers = sorted({s.layer for s in saes})
    neurons = [f"{saes[0].model}-l{l}-neurons" for l in layers] if saes else []
    return [*summary_md(rows, saes), "", "Spliced P3 accuracy per track (audio positions; the unspliced model "
            "first):", "", *spliced_md(rows, saes, model), "",
            "Each layer's output zero-ablated, the reference of the CE score (H0) and of what a splice can lose: "
            "where zeroing changes little, the splice's figures at those positions say little.", "",
            *zero_md(rows, model, layers), "",
            "Sparse probes per track (balanced test accuracy, mean over the track's one-vs-rest tasks; "
            "MODEL-lL-neurons: the layer's raw neurons):", "",
            *probes_md(rows, [s.sae_id for s in saes] + neurons), "", *control_md(rows, saes, table1)]
