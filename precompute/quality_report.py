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


def _cell(r: SaeMetricRow | None, std: bool = True) -> str:
    if r is None or r.value is None:
        return "-"
    return f"{r.value:.2f}" + (f" +- {r.std:.2f}" if std and r.std is not None else "")


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
                     f"{_cell(idx.get((i, 'kl')))} | {_cell(idx.get((i, 'kl@all')))} | "
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
    return f"it {what} {trained - control:.2f} worse ({control:.2f} vs {trained:.2f})"


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

        def pair(metric: str) -> str:
            return f"{_num(getattr(idx.get((c.sae_id, metric)), 'value', None))} vs " \
                   f"{_num(getattr(idx.get((t, metric)), 'value', None))}"

        said = [f"**Random control** `{c.sae_id}` (never trained) vs its trained twin `{t}`: explained variance "
                f"{pair('explained_variance')}, CE score {pair('ce_score')}, KL {pair('kl')}."]
        verdicts = [_verdict("probes (k = 1)", track_mean(idx, c.sae_id, "probe_k1_", pr),
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
            "Sparse probes per track (balanced test accuracy, mean over the track's one-vs-rest tasks; "
            "MODEL-lL-neurons: the layer's raw neurons):", "",
            *probes_md(rows, [s.sae_id for s in saes] + neurons), "", *control_md(rows, saes, table1)]
