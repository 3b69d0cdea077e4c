"""Latency of one steered greedy generation (32 new tokens) on the loaded model.

    python bench/steer_latency.py [--catalog runs/demo/catalog.duckdb] [--feature SAE_ID/K --value V]

Needs a catalog with trained SAEs (run the demo pipeline first). Prints the median of 6 runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ard_core.audio import load_audio  # noqa: E402
from ard_core.catalog import Catalog  # noqa: E402
from ard_core.models import load_audiollm  # noqa: E402
from ard_core.steering import specs_for_features, steering  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="assets/models/tiny-audiollm")
    ap.add_argument("--catalog", default="runs/demo/catalog.duckdb")
    ap.add_argument("--audio", default="assets/corpus/clips/speech/speech-en-female-neutral-000.ogg")
    ap.add_argument("--feature", default="tiny-audiollm-l6-e8/251")
    ap.add_argument("--value", type=float, default=36.0)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    llm = load_audiollm(args.model, device=args.device)
    with Catalog.open(args.catalog, read_only=True) as cat:
        specs = specs_for_features(cat, {args.feature: args.value}, device=args.device)
    inputs = llm.prepare([load_audio(args.audio)], [llm.build_prompt("Generate a detailed caption for the audio clip")])
    times = []
    for _ in range(6):
        t0 = time.perf_counter()
        with steering(llm, specs, ["audio", "prompt", "generated"], inputs["input_ids"], inputs["attention_mask"]), \
                torch.inference_mode():
            out = llm.model.generate(**inputs, max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                                     do_sample=False, pad_token_id=llm.tokenizer.pad_token_id)
        times.append(time.perf_counter() - t0)
    n = out.shape[1] - inputs["input_ids"].shape[1]
    print(f"steered generation of {n} tokens on {args.device} ({args.threads} thread(s)): "
          f"median {statistics.median(times):.3f} s over {len(times)} runs")


if __name__ == "__main__":
    main()
