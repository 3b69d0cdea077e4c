"""Measure the tiny AudioLLM on a split, and write its model card from what was measured.

:func:`evaluate_folder` loads a saved folder through the adapter (as the
workbench does) and returns the ``eval.json`` dict. The card is
``forge/templates/tiny_audiollm.md`` filled by :func:`card_values` from the
folder's own files (``config.json``, ``training_config.json``,
``train_summary.json``, ``label_sets.json``) and that dict, so the shipped
``README.md`` can be rebuilt from the shipped files alone.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ard_core.audio import iter_audio
from ard_core.config import load_json
from ard_core.datasets import load_manifest
from ard_core.prompts import CAPTION_QUESTION
from forge.cards import render_card
from forge.measure import AccuracyRow, accuracy_table, evaluate_attributes, generate_captions, word_f1
from forge.tiny_audiollm.config import TinyAudioLLMConfig


def evaluate_folder(folder: Path, manifest: Path, split: str = "test", batch_size: int = 32,
                    n_captions: int = 60, progress: bool = True) -> dict:
    """Load ``folder`` through the adapter and measure it on ``split`` (what the card reports)."""
    from ard_core.models import load_audiollm

    llm = load_audiollm(folder, device="cpu")
    label_sets = {k: tuple(v) for k, v in json.loads((Path(folder) / "label_sets.json").read_text()).items()}
    records = [r for r in load_manifest(manifest) if r.split == split]
    clips = list(iter_audio(records))
    recs, audio = [c.record for c in clips], [c.audio for c in clips]
    rows = evaluate_attributes(llm, recs, audio, label_sets, batch_size, progress=progress)
    # Captions on an evenly spaced subset (generation is the slow part).
    step = max(1, len(recs) // n_captions)
    caps = generate_captions(llm, recs[::step][:n_captions], audio[::step][:n_captions])
    f1 = float(np.mean([word_f1(c.reference, c.generated) for c in caps])) if caps else 0.0
    exact = float(np.mean([c.reference.strip().lower() == c.generated.lower() for c in caps])) if caps else 0.0
    return {"split": split, "accuracy": [r._asdict() for r in rows],
            "captions": {"n": len(caps), "word_f1": f1, "exact_match": exact,
                         "samples": [c._asdict() for c in caps[::max(1, len(caps) // 6)][:6]]}}


def _architecture_values(config: dict, cfg: TinyAudioLLMConfig, vocab: int) -> dict[str, object]:
    a, t = config["audio_config"], config["text_config"]
    return {
        "audio_layers": a["encoder_layers"], "audio_d": a["d_model"], "audio_heads": a["encoder_attention_heads"],
        "audio_ffn": a["encoder_ffn_dim"], "audio_positions": a["max_source_positions"],
        "audio_tokens": a["max_source_positions"] // 2, "chunk_s": cfg.arch.chunk_length_s,
        "text_layers": t["num_hidden_layers"], "text_d": t["hidden_size"], "text_heads": t["num_attention_heads"],
        "text_kv_heads": t["num_key_value_heads"], "text_ffn": t["intermediate_size"], "vocab": vocab,
    }


def _training_values(cfg: TinyAudioLLMConfig, summary: dict, labels: dict[str, list[str]]) -> dict[str, object]:
    notes = [n for n, hit in (("phase 1 ended at its share of the time budget", summary.get("encoder_timed_out")),
                              ("phase 2 ended at the time budget", summary.get("joint_timed_out"))) if hit]
    return {
        "params_m": summary["parameters"] / 1e6, "manifest": cfg.manifest, "train_clips": summary["train_clips"],
        "manifest_sha": summary.get("manifest_sha256", "?")[:16],
        "encoder_steps": summary["encoder_steps_done"], "encoder_batch": cfg.encoder_batch_size,
        "token_note": " and on every audio token" if cfg.token_aux else "",
        "steps": summary["steps_done"], "batch": cfg.batch_size,
        "track_weights": ", ".join(f"{k} {cfg.track_weights.get(k, 1.0):g}" for k in labels),
        "caption_pct": 100 * cfg.caption_fraction, "caption_question": CAPTION_QUESTION,
        "aux_weight": cfg.aux_weight, "encoder_lr": cfg.encoder_lr, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
        "spec_augment": cfg.spec_augment, "seed": summary["seed"], "train_minutes": summary["train_minutes"],
        "cpu_note": (f" ({summary['cpu_minutes']:.1f} minutes of CPU time, features and probe checks included; "
                     "the rest of the wall time the shared machine ran other jobs)" if "cpu_minutes" in summary else ""),
        "mel_shift": (f", the mel axis shifted by up to {cfg.mel_shift_bins} bins (vocal-tract-length perturbation)"
                      if cfg.mel_shift_bins else ""),
        "threads": summary["torch_threads"], "stopped": f" ({'; '.join(notes)})" if notes else "",
        "label_lines": "\n".join(f"- **{k}** ({len(v)}): {', '.join(v)}" for k, v in labels.items()),
    }


def _emotion_note(rows: list[AccuracyRow]) -> str:
    """Why emotion's chance differs between formats (P3 leaves 'neutral' out)."""
    emo = {r.fmt: r for r in rows if r.track == "emotion"}
    if "P3" not in emo or "P1" not in emo:
        return ""
    return (f"\nEmotion: P3 offers Table I's five options and is asked of the {emo['P3'].n} non-neutral "
            f"clips (chance {100 * emo['P3'].chance:.0f}%); P1, P2 and P3n choose among all six labels "
            f"on all {emo['P1'].n} emotion clips (chance {100 * emo['P1'].chance:.1f}%).\n")


def _weakest_note(rows: list[AccuracyRow]) -> str:
    """The weakest P3 track and whether any track is perfect (the lens views need failures)."""
    note = ("Language is read from unseen sentences: the test split's sentences are never heard in "
            "training (`assets/corpus/DATA.md`).")
    p3 = {r.track: r.accuracy for r in rows if r.fmt == "P3"}
    if not p3:
        return note
    weakest = min(p3, key=p3.get)
    perfect = [k for k, v in p3.items() if v >= 1.0]
    return (f"The weakest track under P3 is {weakest} ({100 * p3[weakest]:.1f}%); "
            + (f"{', '.join(perfect)} has no P3 failures. " if perfect else
               "every track has P3 failures, which the logit-lens views need. ") + note)


def _evaluation_values(result: dict) -> dict[str, object]:
    rows = [AccuracyRow(**r) for r in result["accuracy"]]
    caps = result["captions"]
    return {
        "split": result["split"], "accuracy_table": accuracy_table(rows),
        "emotion_note": _emotion_note(rows), "weakest_note": _weakest_note(rows),
        "caption_n": caps["n"], "word_f1": caps["word_f1"], "exact_pct": 100 * caps["exact_match"],
        "samples": "\n".join(f"| {c['clip_id']} | {c['reference']} | {c['generated']} |" for c in caps["samples"]),
    }


def aims(folder: Path, result: dict) -> str:
    """The P3 aims of ``folder/aims.json`` ({"p3": {track: fraction}, "why": {track: text}, "note": text})
    against the measured test accuracy: met or missed, for a missed aim the reason recorded beside it, then the
    note (what else was tried)."""
    path = Path(folder) / "aims.json"
    if not path.is_file():
        return "(no aims recorded for this model)"
    spec = json.loads(path.read_text())
    p3 = {r["track"]: r["accuracy"] for r in result["accuracy"] if r["fmt"] == "P3"}
    lines = ["| track | aim (P3, test) | measured | |", "|---|---|---|---|"]
    why = []
    for track, aim in spec["p3"].items():
        got = p3.get(track)
        met = got is not None and got >= aim
        shown = f"{100 * got:.1f}%" if got is not None else "not measured"
        lines.append(f"| {track} | >= {100 * aim:.0f}% | {shown} | {'met' if met else 'missed'} |")
        if not met:
            why.append(f"- **{track}** missed: {spec.get('why', {}).get(track, 'no reason recorded')}")
    note = [""] + [spec["note"]] if spec.get("note") else []
    return "\n".join(lines + ([""] + why if why else []) + note)


def learning_curve(folder: Path) -> str:
    """The probe-split P3 accuracy per track at each monitored phase-2 step, as a Markdown table."""
    path = Path(folder) / "probe_curve.csv"
    if not path.is_file():
        return "(no learning curve was recorded for this model)"
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["format"] == "P3"]
    tracks = list(dict.fromkeys(r["track"] for r in rows))
    by_step: dict[int, dict[str, str]] = {}
    for r in rows:
        by_step.setdefault(int(r["step"]), {})[r["track"]] = f"{100 * float(r['accuracy']):.0f}%"
    lines = ["| phase-2 step | " + " | ".join(tracks) + " |", "|---|" + "---|" * len(tracks)]
    lines += [f"| {step} | " + " | ".join(cells.get(t, "-") for t in tracks) + " |" for step, cells in sorted(by_step.items())]
    return "\n".join(lines)


def card_values(folder: Path, result: dict) -> dict[str, object]:
    """Every field of the card template, from the folder's files and a measured ``result``.

    Training settings come from the folder's own ``training_config.json``, not from
    whatever config is current.
    """
    folder = Path(folder)
    cfg = load_json(TinyAudioLLMConfig, folder / "training_config.json")
    summary = json.loads((folder / "train_summary.json").read_text())
    labels = json.loads((folder / "label_sets.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    return (_architecture_values(config, cfg, summary["vocab"]) | _training_values(cfg, summary, labels)
            | _evaluation_values(result) | {"learning_curve": learning_curve(folder), "aims": aims(folder, result),
                                              "monitor_clips": cfg.monitor_clips, "eval_every": cfg.eval_every})


def write_card(folder: Path, result: dict) -> Path:
    """``folder/README.md`` from the template; returns its path."""
    path = Path(folder) / "README.md"
    path.write_text(render_card("tiny_audiollm", card_values(folder, result)))
    return path
