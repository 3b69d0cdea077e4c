"""Reproduce the figures in the tiny models' cards from the shipped folders.

    python scripts/eval_tiny_models.py              # both models, print the tables
    python scripts/eval_tiny_models.py --audiollm   # only the AudioLLM
    python scripts/eval_tiny_models.py --clap --write   # also rewrite README.md and eval.json

Loads ``assets/models/tiny-audiollm`` through ``ard_core.models.load_audiollm``
and ``assets/models/tiny-clap`` through ``ard_core.clap.load_clap`` (offline),
and measures them on the corpus's test split exactly as the training stages do
at their end. Runs in a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ard_core.attribute_eval import AccuracyRow, accuracy_table  # noqa: E402
from ard_core.config import RunConfig  # noqa: E402
from precompute import train_tiny_audiollm as tal  # noqa: E402
from precompute import train_tiny_clap as tcl  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.toml"),
                        help="config with the [tiny_audiollm] / [tiny_clap] tables (folders, manifest)")
    parser.add_argument("--audiollm", action="store_true", help="evaluate the tiny AudioLLM")
    parser.add_argument("--clap", action="store_true", help="evaluate the tiny CLAP")
    parser.add_argument("--split", default="test", help="manifest split to measure (the cards use 'test')")
    parser.add_argument("--write", action="store_true", help="rewrite eval.json and README.md in the folders")
    args = parser.parse_args(argv)
    both = not (args.audiollm or args.clap)
    run = RunConfig.load(args.config)

    if args.audiollm or both:
        cfg = run.section("tiny_audiollm", tal.TinyAudioLLMConfig)
        result = tal.evaluate_folder(cfg.out_dir, cfg.manifest, split=args.split)
        print(f"## tiny-audiollm ({args.split} split)\n")
        print(accuracy_table([AccuracyRow(**r) for r in result["accuracy"]]))
        caps = result["captions"]
        print(f"\ncaptions: word F1 {caps['word_f1']:.2f}, exact match {100 * caps['exact_match']:.0f}% "
              f"over {caps['n']} clips\n")
        if args.write:
            (cfg.out_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
            tal.write_card(cfg.out_dir, result)

    if args.clap or both:
        cfg = run.section("tiny_clap", tcl.TinyClapConfig)
        result = tcl.evaluate_clap_folder(cfg.out_dir, cfg.manifest, split=args.split)
        print(f"## tiny-clap ({args.split} split): audio -> text over distinct captions\n")
        for name, r in [("all", result["all"]), *result["groups"].items()]:
            print(f"{name:12s} n={r['n_clips']:4d} captions={r['n_captions']:4d} "
                  f"R@1 {100 * r['recall'][1]:5.1f}% (chance {100 * r['chance'][1]:.1f}%)  "
                  f"R@5 {100 * r['recall'][5]:5.1f}% (chance {100 * r['chance'][5]:.1f}%)")
        if args.write:
            (cfg.out_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
            tcl.write_clap_card(cfg.out_dir, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
