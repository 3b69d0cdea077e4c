"""P3 accuracy of the shipped tiny AudioLLM on the test split, per subgroup of clips: each label, speech
clips by espeak pitch (< 50 or >= 50) and gender, composite clips (a labelled sound inside speech or noise)
against plain ones. The reasons its card gives for the aims it misses (assets/models/tiny-audiollm/aims.json)
quote these figures.

    python scripts/p3_by_group.py [TRACK ...]      # default: every track (about 5 min on one CPU thread)
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from ard_core.audio import iter_audio
from ard_core.datasets import TRACKS, load_manifest
from forge.measure import evaluate_attributes

REPO = Path(__file__).resolve().parents[1]
SPEECH = {"gender", "language", "emotion"}


def groups_of(record) -> list[str]:  # noqa: ANN001 - a ClipRecord
    """The subgroups a clip belongs to."""
    composite = bool(set(record.labels) - SPEECH and set(record.labels) & SPEECH) or bool(record.meta.get("snr_db"))
    out = ["composite" if composite else "plain"]
    if record.meta.get("espeak_pitch"):
        out.append(f"{record.labels.get('gender')} speech, espeak pitch {'< 50' if float(record.meta['espeak_pitch']) < 50 else '>= 50'}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tracks", nargs="*", default=list(TRACKS))
    p.add_argument("--model", type=Path, default=REPO / "assets" / "models" / "tiny-audiollm")
    p.add_argument("--manifest", type=Path, default=REPO / "assets" / "corpus" / "manifest.csv")
    args = p.parse_args()
    from ard_core.models import load_audiollm

    llm = load_audiollm(args.model, device="cpu")
    labels = {k: tuple(v) for k, v in json.loads((args.model / "label_sets.json").read_text()).items()}
    test = [r for r in load_manifest(args.manifest) if r.split == "test"]
    for track in args.tracks:
        groups = defaultdict(list)
        for clip in iter_audio([r for r in test if track in r.labels]):
            for g in [f"label {clip.record.labels[track]}", *groups_of(clip.record)]:
                groups[g].append(clip)
        for g, clips in sorted(groups.items()):
            rows = evaluate_attributes(llm, [c.record for c in clips], [c.audio for c in clips], labels,
                                       formats=("P3",), tracks=(track,), progress=False)
            for row in rows:  # none where P3 asks no such clip (neutral emotion)
                print(f"{track:12s} {g:40s} n={row.n:4d}  P3 {100 * row.accuracy:5.1f}%", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
