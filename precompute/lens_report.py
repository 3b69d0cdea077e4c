"""Markdown tables and PNG figures of the lens stage (AudioLens Figs. 2-5, Tables II-III)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from ard_core import tables
from ard_core.catalog import LensEnrichmentRow, LensSummaryRow
from ard_core.durable import atomic_path, write_text
from ard_core.lens import information_scores


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def table2(summary: Sequence[LensSummaryRow]) -> str:
    return "\n".join(tables.lens_table2(summary).markdown())


def enrichment_table(rows: Sequence[LensEnrichmentRow]) -> str:
    if not rows:
        return "(no enrichment study was run)"
    lams = sorted({r.lam for r in rows})
    ours = {r.lam: r for r in rows if r.method == "info_score"}
    rand = defaultdict(list)
    for r in rows:
        if r.method == "random_layer":
            rand[r.lam].append(r.accuracy)
    lines = ["| lambda | " + " | ".join(_fmt(l) for l in lams) + " |", "|---|" + "---|" * len(lams)]
    lines.append("| info-score layer (ours) | " + " | ".join(_fmt(100 * ours[l].accuracy, 1) for l in lams) + " |")
    lines.append("| random layer (mean +- std) | " + " | ".join(
        f"{100 * np.mean(rand[l]):.1f} +- {100 * np.std(rand[l]):.1f}" if rand[l] else "-" for l in lams) + " |")
    return "\n".join(lines)


def _curves(runs, pos_index: int, subset: str | None = None):  # noqa: ANN001, ANN202
    out = {}
    for r in runs:
        sel = slice(None)
        if subset is not None:
            correct = r.pred[:, -1, 0] == r.gold
            sel = correct if subset == "correct" else ~correct
        out[(r.track, r.fmt)] = information_scores(r.pred[sel, :, pos_index], r.gold[sel])
    return out


def figures(out_dir: Path, runs, enrich_rows: Sequence[LensEnrichmentRow], n_layers: int) -> list[str]:  # noqa: ANN001
    """Figs. 2-5 as PNGs in ``out_dir``; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    tracks = list(dict.fromkeys(r.track for r in runs))
    layers = np.arange(1, n_layers + 1)
    written = [_fig_formats(out_dir, runs, tracks, layers), _fig_correct_incorrect(out_dir, runs, tracks, layers),
               _fig_positions(out_dir, runs, tracks, layers)]
    if enrich_rows:
        written.append(_fig_enrichment(out_dir, enrich_rows))
    return written


def _grid(title: str, tracks: Sequence[str]):  # noqa: ANN202
    """One panel per track, sharing the y axis."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tracks), figsize=(3.2 * len(tracks), 2.8), sharey=True, squeeze=False)
    fig.suptitle(title, fontsize=10)
    return fig, axes[0]


def _fig_formats(out_dir: Path, runs, tracks: Sequence[str], layers: np.ndarray) -> str:  # noqa: ANN001
    """Fig. 2: last token, all formats."""
    fig, axes = _grid("Fig. 2: information score at the last token, P1/P2/P3", tracks)
    curves = _curves(runs, 0)
    for ax, t in zip(axes, tracks):
        for (tt, f), I in curves.items():
            if tt == t:
                ax.plot(layers, I, marker=".", label=f)
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("layer")
    axes[0].set_ylabel("I")
    axes[-1].legend(fontsize=7)
    return _save(fig, out_dir / "fig2_formats.png")


def _fig_correct_incorrect(out_dir: Path, runs, tracks: Sequence[str], layers: np.ndarray) -> str:  # noqa: ANN001
    """Fig. 3: correct vs incorrect, P3."""
    fig, axes = _grid("Fig. 3: correct vs incorrect predictions (P3, last token)", tracks)
    for ax, t in zip(axes, tracks):
        for subset, color in (("correct", "tab:green"), ("incorrect", "tab:red")):
            I = _curves([r for r in runs if r.track == t and r.fmt == "P3"], 0, subset).get((t, "P3"))
            if I is not None:
                ax.plot(layers, I, color=color, marker=".", label=subset)
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("layer")
    axes[-1].legend(fontsize=7)
    return _save(fig, out_dir / "fig3_correct_incorrect.png")


def _fig_positions(out_dir: Path, runs, tracks: Sequence[str], layers: np.ndarray) -> str:  # noqa: ANN001
    """Fig. 4: positions, P3."""
    fig, axes = _grid("Fig. 4: last vs penultimate vs audio-masked last token (P3)", tracks)
    for ax, t in zip(axes, tracks):
        p3 = [r for r in runs if r.track == t and r.fmt == "P3"]
        for pi, (name, color) in enumerate((("last", "tab:blue"), ("penultimate", "tab:orange"), ("last, audio masked", "tab:gray"))):
            I = _curves(p3, pi).get((t, "P3"))
            if I is not None:
                ax.plot(layers, I, color=color, marker=".", label=name)
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("layer")
    axes[-1].legend(fontsize=7)
    return _save(fig, out_dir / "fig4_positions.png")


def _fig_enrichment(out_dir: Path, enrich_rows: Sequence[LensEnrichmentRow]) -> str:
    """Fig. 5: accuracy vs lambda, l-bar from information scores against random layers."""
    import matplotlib.pyplot as plt

    lams = sorted({r.lam for r in enrich_rows})
    ours = [100 * next(r.accuracy for r in enrich_rows if r.method == "info_score" and r.lam == l) for l in lams]
    rand = [[100 * r.accuracy for r in enrich_rows if r.method == "random_layer" and r.lam == l] for l in lams]
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot(lams, ours, marker="o", label="layer from information scores")
    ax.errorbar(lams, [np.mean(x) for x in rand], yerr=[np.std(x) for x in rand], marker="s", capsize=3,
                label="random layer (5 seeds)")
    ax.set_xlabel("lambda")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Fig. 5: enrichment ({enrich_rows[0].track})", fontsize=10)
    ax.legend(fontsize=7)
    return _save(fig, out_dir / "fig5_enrichment.png")


def _save(fig, path: Path) -> str:  # noqa: ANN001
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def write_report(out_dir: Path, model: str, runs, summary, corr: tuple[float, float],  # noqa: ANN001
                 enrich_rows, n_layers: int) -> Path:
    pngs = figures(out_dir, runs, enrich_rows, n_layers)
    src = {r.source_layer for r in enrich_rows if r.method == "info_score"}
    text = [
        f"# AudioLens results for {model}",
        "",
        "Layers are numbered 1..L as in the paper (layer ell = output of decoder layer ell - 1).",
        "",
        "## Table II: accuracy (%) and critical layer",
        "",
        table2(summary),
        "",
        "## Table III: critical layer vs accuracy",
        "",
        f"Pearson r = {_fmt(corr[0], 3)}, p = {_fmt(corr[1], 4)} over {len(summary)} (track, format) pairs.",
        "",
        "## Fig. 5: enrichment accuracy (%)",
        "",
        (f"Track {enrich_rows[0].track}, l-bar = {sorted(src)}, n = {enrich_rows[0].n} test samples." if enrich_rows else ""),
        "",
        enrichment_table(enrich_rows),
        "",
        "## Figures",
        "",
        *[f"![{p}]({p})" for p in pngs],
        "",
    ]
    return write_text(out_dir / "README.md", "\n".join(text))
