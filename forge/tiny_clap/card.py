"""Measure the tiny CLAP's retrieval and text space, and write its model card from what was measured.

:func:`evaluate_clap_folder` loads a saved folder through ``ard_core.clap`` (as
the workbench does) and returns the ``eval.json`` dict: audio -> text R@1/R@5
over the split's distinct captions, overall and per group, and the text space's
separability table (:mod:`forge.tiny_clap.separability`). The card is
``forge/templates/tiny_clap.md`` filled by :func:`card_values` from the
folder's own files and that dict, so the shipped ``README.md`` can be rebuilt
from the shipped files alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from ard_core.audio import iter_audio
from ard_core.config import load_json
from ard_core.datasets import load_manifest
from forge.cards import render_card
from forge.measure import evaluate_clap
from ard_core.datasets.labels import LABEL_PHRASES
from forge.tiny_clap.config import TinyClapConfig
from forge.tiny_clap.phrases import TRAIN_PARAPHRASES
from forge.tiny_clap.separability import (BETWEEN_AIM, WITHIN_AIM, SeparabilityRow, WordingMiss, meets_aims,
                                          separability, wording_misses)

GROUPS: tuple[tuple[str, str], ...] = (("speech", "language"), ("animal", "animal"), ("sound event", "sound_event"))
"""(name in the card, track that marks a clip of the group)."""


def evaluate_clap_folder(folder: Path, manifest: Path, split: str = "test") -> dict:
    """Load ``folder`` through ``load_clap`` and measure R@k on ``split``, overall and per group."""
    from ard_core.clap import load_clap

    emb = load_clap("hf", folder)
    clips = list(iter_audio([r for r in load_manifest(manifest) if r.split == split and r.caption.strip()]))
    res = evaluate_clap(emb, [c.record for c in clips], [c.audio for c in clips])
    # Per group (speech / animal / sound event) as well: the speech captions are the fine-grained ones.
    groups: dict[str, dict] = {}
    for name, track in GROUPS:
        sub = [c for c in clips if track in c.record.labels]
        if sub:
            r = evaluate_clap(emb, [c.record for c in sub], [c.audio for c in sub], progress=False)
            groups[name] = r._asdict()
    return {"split": split, "all": res._asdict(), "groups": groups,
            "separability": [r._asdict() for r in separability(emb)],
            "wording_misses": [m._asdict() for m in wording_misses(emb)]}


def retrieval_report(result: dict) -> str:
    """One line per group of an :func:`evaluate_clap_folder` result (as printed by ``forge eval``)."""
    lines = []
    for name, r in [("all", result["all"]), *result["groups"].items()]:
        rec, ch = r["recall"], r["chance"]
        lines.append(f"{name:12s} n={r['n_clips']:4d} captions={r['n_captions']:4d} "
                     f"R@1 {100 * rec[1]:5.1f}% (chance {100 * ch[1]:.1f}%)  "
                     f"R@5 {100 * rec[5]:5.1f}% (chance {100 * ch[5]:.1f}%)")
    for r in (SeparabilityRow(**row) for row in result.get("separability", [])):
        lines.append(f"text space {r.track:12s} between-label max {r.between_max:.3f} ({r.between_pair})  "
                     f"within min {r.within_min:.3f} mean {r.within_mean:.3f}  held-out min {r.heldout_min:.3f} "
                     f"mean {r.heldout_mean:.3f} nearest {100 * r.heldout_nearest:.0f}%"
                     f"{'' if meets_aims(r) else '  (misses an aim)'}")
    for m in (WordingMiss(**m) for m in result.get("wording_misses", [])):
        lines.append(f"under the within-label aim: {m.track} {m.label} '{m.phrase}' "
                     f"({'held-out' if m.heldout else 'training'}) min {m.min_cosine:.3f}, nearest '{m.nearest}'")
    return "\n".join(lines)


def _table_row(name: str, r: dict) -> str:
    rec, ch = r["recall"], r["chance"]
    return (f"| {name} | {r['n_clips']} | {r['n_captions']} | {100 * rec['1']:.1f}% ({100 * ch['1']:.1f}%) "
            f"| {100 * rec['5']:.1f}% ({100 * ch['5']:.1f}%) |")


def _separability_row(r: SeparabilityRow) -> str:
    ok = "yes" if meets_aims(r) else "**no**"
    return (f"| {r.track} | {r.n_labels} | {r.between_max:.3f} | {r.between_pair} | {r.within_min:.3f} "
            f"({r.within_mean:.3f}) | {r.heldout_min:.3f} ({r.heldout_mean:.3f}) | {100 * r.heldout_nearest:.0f}% "
            f"| {ok} |")


def _misses_text(misses: list[dict]) -> str:
    if not misses:
        return f"Every phrase, held-out ones included, is above {WITHIN_AIM:g} with every other phrase of its label."
    lines = [f"Phrases under {WITHIN_AIM:g} with some other phrase of their label (nearest reference phrase):"]
    for m in (WordingMiss(**m) for m in misses):
        kind = "held-out" if m.heldout else "training"
        lines.append(f"- {m.track} {m.label}: '{m.phrase}' ({kind}), min {m.min_cosine:.3f}, nearest '{m.nearest}'"
                     + (_rare_words(m) if m.heldout else ""))
    return "\n".join(lines)


def _rare_words(m: WordingMiss) -> str:
    """Why a held-out wording may miss: words of it that the label's training phrases use once only."""
    train = [LABEL_PHRASES[m.track][m.label], *TRAIN_PARAPHRASES[m.track][m.label]]
    notes = []
    for word in m.phrase.split():
        uses = [p for p in train if word in p.split()]
        if len(uses) == 1:
            notes.append(f"'{word}' is trained only in '{uses[0]}'")
        elif not uses:
            notes.append(f"'{word}' is in no training phrase of the label")
    return f"; {', '.join(notes)}" if notes else ""


def card_values(folder: Path, result: dict) -> dict[str, object]:
    """Every field of the card template, from the folder's files (``training_config.json``
    included, not the current config) and a measured ``result``."""
    folder = Path(folder)
    cfg = load_json(TinyClapConfig, folder / "training_config.json")
    config = json.loads((folder / "config.json").read_text())
    summary = json.loads((folder / "train_summary.json").read_text())
    a, t = config["audio_config"], config["text_config"]
    res = json.loads(json.dumps(result))  # int keys -> str keys, as read back from eval.json
    note = summary.get("manifest_note")  # provenance added after training, e.g. an older corpus build
    return {
        "params_m": summary["parameters"] / 1e6, "n_mels": a["num_mel_bins"], "chunk_s": cfg.chunk_length_s,
        "spec_size": a["spec_size"], "window": a["window_size"], "depths": a["depths"],
        "audio_width": cfg.audio_width, "audio_hidden": a["hidden_size"], "text_layers": t["num_hidden_layers"],
        "text_d": t["hidden_size"], "text_heads": t["num_attention_heads"], "vocab": summary["vocab"],
        "projection_dim": config["projection_dim"], "manifest": cfg.manifest, "train_clips": summary["train_clips"],
        "distinct_captions": summary["distinct_captions"], "manifest_sha": summary.get("manifest_sha256", "?")[:16],
        "manifest_note": f" {note}" if note else "", "audio_steps": summary.get("audio_steps_done", 0),
        "batch": cfg.batch_size, "steps": summary["steps_done"], "aux_weight": cfg.aux_weight, "lr": cfg.lr,
        "spec_augment": cfg.spec_augment, "seed": summary["seed"], "train_minutes": summary["train_minutes"],
        "cpu_minutes": summary["train_cpu_minutes"],
        "threads": summary["torch_threads"],
        "stopped": " (a phase ended at its time budget)" if summary["stopped_early"] else "",
        "split": result["split"],
        "rows": "\n".join([_table_row("all", res["all"])] + [_table_row(k, v) for k, v in res["groups"].items()]),
        "sep_rows": "\n".join(_separability_row(SeparabilityRow(**r)) for r in res["separability"]),
        "between_aim": BETWEEN_AIM, "within_aim": WITHIN_AIM, "text_weight": cfg.text_weight,
        "caption_weight": cfg.caption_weight,
        "text_temperature": cfg.text_temperature, "phrases_per_label": cfg.phrases_per_label,
        "n_paraphrases": summary["train_paraphrases"], "n_heldout": summary["heldout_paraphrases"],
        "misses": _misses_text(result.get("wording_misses", [])),
    }


def write_card(folder: Path, result: dict) -> Path:
    """``folder/README.md`` from the template; returns its path."""
    path = Path(folder) / "README.md"
    path.write_text(render_card("tiny_clap", card_values(folder, result)))
    return path
