"""``python -m forge eval``: re-measure the shipped tiny models and reproduce their cards' figures.

    python -m forge eval                    # both models, print the tables
    python -m forge eval --audiollm         # only the AudioLLM
    python -m forge eval --clap --write     # also rewrite eval.json and README.md

Loads ``[tiny_audiollm].out_dir`` through ``ard_core.models.load_audiollm`` and
``[tiny_clap].out_dir`` through ``ard_core.clap.load_clap`` (offline), and
measures them on the corpus's test split exactly as the trainers do at their
end. Runs in a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json

from ard_core.config import RunConfig
from forge.config import add_config_argument
from forge.measure import AccuracyRow, accuracy_table
from forge.tiny_audiollm import card as audiollm_card
from forge.tiny_audiollm.config import TinyAudioLLMConfig
from forge.tiny_clap import card as clap_card
from forge.tiny_clap.config import TinyClapConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--audiollm", action="store_true", help="evaluate the tiny AudioLLM")
    parser.add_argument("--clap", action="store_true", help="evaluate the tiny CLAP")
    parser.add_argument("--split", default="test", help="manifest split to measure (the cards use 'test')")
    parser.add_argument("--write", action="store_true", help="rewrite eval.json and README.md in the folders")


def eval_audiollm(cfg: TinyAudioLLMConfig, split: str, write: bool) -> None:
    result = audiollm_card.evaluate_folder(cfg.out_dir, cfg.manifest, split=split)
    print(f"## tiny-audiollm ({split} split)\n")
    print(accuracy_table([AccuracyRow(**r) for r in result["accuracy"]]))
    caps = result["captions"]
    print(f"\ncaptions: word F1 {caps['word_f1']:.2f}, exact match {100 * caps['exact_match']:.0f}% "
          f"over {caps['n']} clips\n")
    if write:
        (cfg.out_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        audiollm_card.write_card(cfg.out_dir, result)


def eval_clap(cfg: TinyClapConfig, split: str, write: bool) -> None:
    result = clap_card.evaluate_clap_folder(cfg.out_dir, cfg.manifest, split=split)
    print(f"## tiny-clap ({split} split): audio -> text over distinct captions\n")
    print(clap_card.retrieval_report(result))
    if write:
        (cfg.out_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        clap_card.write_card(cfg.out_dir, result)


def main(args: argparse.Namespace) -> int:
    config = RunConfig.load(args.config)
    both = not (args.audiollm or args.clap)
    if args.audiollm or both:
        eval_audiollm(config.section("tiny_audiollm", TinyAudioLLMConfig), args.split, args.write)
    if args.clap or both:
        eval_clap(config.section("tiny_clap", TinyClapConfig), args.split, args.write)
    return 0
