"""Benchmark: one-pass logit lens vs the per-layer re-forward reference.

The reference (as in Patchscopes-style lens code) runs the model once per layer
and reads that layer's hidden state at the last position; the one-pass lens
reads every layer from a single forward (ard_core.lens.logit_lens). Both produce
the same label logits (checked here before timing). Measured side by side in
one run, alternating, on the same clips; prints the speed ratio last.

    python bench/lens.py                       # shipped tiny model + mini corpus
    python bench/lens.py --model PATH --manifest CSV --clips 32 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ard_core.activations import capture_layers  # noqa: E402
from ard_core.audio import load_audio  # noqa: E402
from ard_core.datasets import load_manifest  # noqa: E402
from ard_core.lens import logit_lens, unembed_labels  # noqa: E402
from ard_core.models import load_audiollm  # noqa: E402
from ard_core.prompts import TRACK_PROMPTS, attribute_prompt, label_token_ids  # noqa: E402


@torch.inference_mode()
def per_layer_reference(llm, inputs, label_ids) -> torch.Tensor:
    """(B, L, 1, Y): one full forward per layer, each reading only its own layer."""
    ids = torch.as_tensor(label_ids)
    outs = []
    for layer in range(llm.n_layers):
        with capture_layers(llm, [layer]) as cap:
            llm.model(**inputs, use_cache=False)
        outs.append(unembed_labels(llm, cap[layer][:, -1:], ids).float())
    return torch.stack(outs, dim=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="assets/models/tiny-audiollm")
    ap.add_argument("--manifest", default="assets/corpus/manifest.csv")
    ap.add_argument("--clips", type=int, default=32, help="speech clips from the test split")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    llm = load_audiollm(args.model, device=args.device)
    recs = [r for r in load_manifest(args.manifest) if r.split == "test" and "gender" in r.labels][: args.clips]
    audios = [load_audio(r.path) for r in recs]
    p = attribute_prompt("gender", "P3")
    prompt = llm.build_prompt(p.question, p.prefix)
    label_ids = label_token_ids(llm.tokenizer, TRACK_PROMPTS["gender"].paper_options)
    batches = [llm.prepare(audios[i : i + args.batch], [prompt] * len(audios[i : i + args.batch]))
               for i in range(0, len(audios), args.batch)]

    one = torch.cat([logit_lens(llm, b, label_ids).label_logits for b in batches])
    ref = torch.cat([per_layer_reference(llm, b, label_ids) for b in batches])
    torch.testing.assert_close(one, ref, rtol=1e-4, atol=1e-4)

    t_one, t_ref = [], []
    for _ in range(args.repeats):  # alternate so machine noise hits both alike
        t0 = time.perf_counter()
        for b in batches:
            logit_lens(llm, b, label_ids)
        t_one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for b in batches:
            per_layer_reference(llm, b, label_ids)
        t_ref.append(time.perf_counter() - t0)
    m_one, m_ref = statistics.median(t_one), statistics.median(t_ref)
    n = len(audios)
    print(f"model {llm.name}: {llm.n_layers} layers, {n} clips, batch {args.batch}, device {args.device}")
    print(f"one-pass lens:          {m_one:.3f} s  ({n / m_one:.1f} clips/s)")
    print(f"per-layer re-forward:   {m_ref:.3f} s  ({n / m_ref:.1f} clips/s)")
    print(f"target ratio >= n_layers / 2 = {llm.n_layers / 2:.1f}")
    print(f"speed ratio (re-forward / one-pass): {m_ref / m_one:.2f}")


if __name__ == "__main__":
    main()
