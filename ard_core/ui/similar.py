"""The feature page's "similar features" section, from the catalog's ``similar_features`` rows
(the similar stage): the nearest features within the SAE by decoder cosine, and per SAE of
another layer the features whose clip means correlate most over the probing clips."""

from __future__ import annotations

import html
from typing import Sequence

from ard_core.catalog import SimilarFeature


def _link(f: SimilarFeature) -> str:
    name = html.escape(f.name) if f.name else "<i>unnamed</i>"
    return f"[{f.ref}](?feature={f.ref}) {name}"


def similar_markdown(rows: Sequence[SimilarFeature]) -> str:
    """Two short tables (within the SAE; in other layers' SAEs), or why there are none."""
    if not rows:
        return ("### Similar features\n<small>Not computed for this catalog: run "
                "`python -m precompute similar --config CONFIG`.</small>")
    out = ["### Similar features"]
    within = [r for r in rows if r.kind == "decoder"]
    if within:
        out += ["**In this SAE**, by decoder cosine (they write nearly the same direction):", "",
                "| feature | cosine |", "|---|---|"]
        out += [f"| {_link(r)} | {r.similarity:.3f} |" for r in within]
    across = [r for r in rows if r.kind == "activation"]
    if across:
        out += ["", "**In other layers' SAEs**, by the correlation of clip mean activations over the probing clips:",
                "", "| layer | feature | correlation |", "|---|---|---|"]
        out += [f"| {r.layer} | {_link(r)} | {r.similarity:.3f} |" for r in across]
    return "\n".join(out)
