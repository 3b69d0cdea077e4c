"""Stage ``steer``: steer one clip by clamping SAE features and print both answers.

    python -m precompute steer --config configs/demo.toml --audio clip.wav \\
        --feature tiny-audiollm-l6-e8/123 --value 8 --track gender

``--feature``/``--value`` repeat (pairs in order). With ``--track`` the prompt is
that track's P3 prompt (Table I) and the labels' next-token probabilities are
printed for both runs; otherwise ``--prompt`` (and optional ``--prefix``).
"""

from __future__ import annotations

import argparse

from ard_core.audio import load_audio
from ard_core.catalog import Catalog
from ard_core.config import ConfigError, resolve_device
from ard_core.models import ModelConfig
from ard_core.prompts import CAPTION_QUESTION, TRACK_PROMPTS, attribute_prompt, p3_options
from ard_core.steering import POSITION_KINDS, specs_for_features, steer
from precompute.cli import add_config_argument, load_config


def track_labels(cat: Catalog, track: str) -> list[str]:
    """The track's labels present in the catalog's clips, in Table I order (p3_options)."""
    from ard_core.catalog import ClipRow

    present = {c.labels[track] for c in cat.rows(ClipRow) if c.labels.get(track)}
    if not present:
        raise ConfigError(f"no clip in the catalog has a {track!r} label")
    labels = list(p3_options(track, sorted(present)))
    return [l for l in labels if l != "neutral"] if track == "emotion" else labels


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


def main(args: argparse.Namespace) -> int:
    if not args.feature or len(args.feature) != len(args.value):
        raise ConfigError(f"give one --value per --feature (got {len(args.feature)} features, {len(args.value)} values)")
    run = load_config(args)
    device = resolve_device(run.run.device)
    llm = run.section("model", ModelConfig).load(device)
    labels = None
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        if args.track:
            labels = track_labels(cat, args.track)
            p = attribute_prompt(args.track, "P3", labels)
            prompt = llm.build_prompt(p.question, p.prefix)
        else:
            prompt = llm.build_prompt(args.prompt, args.prefix)
        specs = specs_for_features(cat, dict(zip(args.feature, args.value)), mode=args.mode,
                                   keep_error=not args.no_error_term, device=device)
    res = steer(llm, load_audio(args.audio, sr=llm.sampling_rate), prompt, specs,
                positions=[p for p in args.positions.split(",") if p], max_new_tokens=args.max_new_tokens,
                labels=labels)
    for name, out in (("original", res.original), ("steered", res.steered)):
        print(f"{name:>9}: {out.text!r}")
        if out.label_probs:
            print(" " * 11 + "  ".join(f"{k}={v:.3f}" for k, v in out.label_probs.items()))
    return 0
