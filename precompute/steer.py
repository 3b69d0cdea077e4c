"""Stage ``steer``: steer one clip by clamping SAE features and print both answers.

    python -m precompute steer --config configs/demo.toml --audio clip.wav \\
        --feature tiny-audiollm-l6-e8/123 --value 8 --track gender

``--feature``/``--value`` repeat (pairs in order). With ``--track`` the prompt is
that track's P3 prompt (Table I; for emotion with 'neutral' among the labels, P3n: the
question the steerability stage judges by) and the labels' next-token probabilities are
printed for both runs; otherwise ``--prompt`` (and optional ``--prefix``).

``--json`` prints, as the last line, one JSON object
``{"original": {"answer": ..., "label_probs": {...}}, "steered": {...}}`` (``label_probs``
is null without ``--track``); the text output stays the default.
"""

from __future__ import annotations

import argparse
import json

from ard_core.audio import load_audio
from ard_core.catalog import Catalog, ClipRow
from ard_core.config import ConfigError, RunConfig, resolve_device
from ard_core.models import ModelConfig
from ard_core.prompts import CAPTION_QUESTION, TRACK_PROMPTS
from ard_core.steerability import judge_prompt
from ard_core.steering import POSITION_KINDS, SteerResult, specs_for_features, steer
from precompute.cli import add_config_argument, load_config


def track_present(cat: Catalog, track: str) -> list[str]:
    """The track's labels present in the catalog's clips."""
    present = sorted({c.labels[track] for c in cat.rows(ClipRow) if c.labels.get(track)})
    if not present:
        raise ConfigError(f"no clip in the catalog has a {track!r} label")
    return present


def as_json(res: SteerResult) -> str:
    """Both runs as one JSON line: {"original": {"answer", "label_probs"}, "steered": {...}}."""
    return json.dumps({name: {"answer": out.text, "label_probs": out.label_probs}
                       for name, out in (("original", res.original), ("steered", res.steered))})


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)
    p.add_argument("--audio", required=True, help="audio file (any format soundfile reads)")
    p.add_argument("--feature", action="append", default=[], help="feature SAE_ID/K (repeatable)")
    p.add_argument("--value", action="append", type=float, default=[], help="steering value, one per --feature")
    p.add_argument("--mode", choices=["set", "add"], default="set", help="set the latent to the value, or add it")
    p.add_argument("--positions", default="audio,prompt,generated",
                   help=f"comma-separated subset of {','.join(POSITION_KINDS)}")
    p.add_argument("--no-error-term", action="store_true", help="the paper's variant: replace x by x_hat' alone")
    p.add_argument("--track", choices=sorted(TRACK_PROMPTS), help="use this track's P3 prompt and show label probabilities")
    p.add_argument("--prompt", default=CAPTION_QUESTION, help="user question (ignored with --track)")
    p.add_argument("--prefix", default=None, help="assistant prefix, e.g. \"The speaker's gender is\"")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print both answers as one JSON object on the last line")


def main(args: argparse.Namespace) -> int:
    if not args.feature or len(args.feature) != len(args.value):
        raise ConfigError(f"give one --value per --feature (got {len(args.feature)} features, {len(args.value)} values)")
    run = load_config(args)
    device = resolve_device(run.run.device)
    llm = run.section("model", ModelConfig).load(device)
    labels = None
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        if args.track:
            p, labels_t = judge_prompt(args.track, track_present(cat, args.track))
            labels = list(labels_t)
            prompt = llm.build_prompt(p.question, p.prefix)
        else:
            prompt = llm.build_prompt(args.prompt, args.prefix)
        specs = specs_for_features(cat, dict(zip(args.feature, args.value)), mode=args.mode,
                                   keep_error=not args.no_error_term, device=device)
    res = steer(llm, load_audio(args.audio, sr=llm.sampling_rate), prompt, specs,
                positions=[p for p in args.positions.split(",") if p], max_new_tokens=args.max_new_tokens,
                labels=labels)
    if args.json:
        print(as_json(res))
        return 0
    for name, out in (("original", res.original), ("steered", res.steered)):
        print(f"{name:>9}: {out.text!r}")
        if out.label_probs:
            print(" " * 11 + "  ".join(f"{k}={v:.3f}" for k, v in out.label_probs.items()))
    return 0
