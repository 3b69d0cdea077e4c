"""The steer-eval stage's report, ``OUT_DIR/steering/README.md``: Table 3 and its per-layer rows."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ard_core.catalog import SteeringResultRow
from ard_core.durable import write_text
from precompute.configs import SteerEvalConfig

METHODS = (("poly", "Poly. Feats."), ("ard", "AR&D"))


def _pair(r: SteeringResultRow) -> str:
    sens = "-" if r.sensitivity is None or np.isnan(r.sensitivity) else f"{r.sensitivity:.2f}"
    return f"{sens} ({r.sensitivity_all:.2f})"


def table3(rows: Sequence[SteeringResultRow], mappings: Sequence[str]) -> list[str]:
    """Table 3: each method's best layer (chosen on probe) per mapping."""
    lines = ["| Method | " + " | ".join(mappings) + " |", "|---|" + "---|" * len(mappings)]
    for method, label in METHODS:
        cells = []
        for m in mappings:
            best = [r for r in rows if r.mapping == m and r.method == method and r.best_layer]
            cells.append(f"{_pair(best[0])} L{best[0].layer}" if best else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def per_layer(rows: Sequence[SteeringResultRow], names: dict[str, str]) -> list[str]:
    lines = ["| mapping | method | layer | feature | value | probe flip rate | sensitivity (all) | n / n_all |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r.mapping, r.method, r.layer)):
        ref = f"{r.sae_id}/{r.feature}"
        name = f" '{names[ref]}'" if names.get(ref) else ""
        star = " *" if r.best_layer else ""
        lines.append(f"| {r.mapping} | {r.method} | {r.layer}{star} | `{ref}`{name} | {r.value:.3g} | "
                     f"{r.probe_flip_rate:.2f} | {_pair(r)} | {r.n} / {r.n_all} |")
    return lines


def write_report(out_dir: Path, rows: Sequence[SteeringResultRow], names: dict[str, str],
                 cfg: SteerEvalConfig) -> Path:
    """Write ``out_dir/README.md``; returns ``out_dir``."""
    lines = [f"# Steering sensitivity (Table 3), judge = {cfg.judge}, {cfg.split} split", "",
             "Each method's (feature, value) and its best layer (L) are chosen on the probe split by the "
             "steerability stage's sweep (AR&D: SAE features; Poly. Feats.: the raw neuron of highest probe "
             f"contrast). Cells: sensitivity on the {cfg.split} split = samples that shift to the target / source "
             "samples not already answered with the target (in parentheses: / all source samples).", "",
             *table3(rows, cfg.mappings), "", "## Per layer (* = the layer chosen on probe)", "",
             *per_layer(rows, names)]
    write_text(out_dir / "README.md", "\n".join(lines) + "\n")
    return out_dir
