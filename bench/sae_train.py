"""Tokens/s of one TopK SAE training step: this implementation's sparse path against
the plain dense-scatter reference, side by side.

The reference is the SAELens-style step: pre-activations, TopK, scatter of the K
values into a dense (batch, d_sae) matrix, a dense decoder GEMM, and autograd
through all of it (``TopKSAE.impl = "dense"``, checked equal to the sparse path in
tests/test_sae.py). Both run the same full step: forward, MSE (+ AuxK when
``--dead-frac`` > 0), backward, decoder-gradient projection, Adam, decoder
renormalisation. Steps are interleaved (sparse, dense, sparse, ...) so that load
from other processes hits both alike; the median is reported. The encoder's forward
GEMM alone is timed too: it is the floor a step cannot go below.

    python bench/sae_train.py                    # d=1024, e=16, K=32 and 250, batch 4096, CPU
    python bench/sae_train.py --device cuda      # on a GPU (bf16 autocast as in training)

The last line is the speed ratio (sparse tokens/s over dense tokens/s) per K.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ard_core.sae import SaeConfig, TopKSAE  # noqa: E402
from ard_core.sae.recipe import make_optimizer, train_step  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_k(k: int, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    d_sae = args.d_in * args.expansion
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(args.batch, args.d_in, generator=g) + 0.5).to(device)
    dead = None
    if args.dead_frac > 0:
        dead = torch.zeros(d_sae, dtype=torch.bool, device=device)
        dead[: int(args.dead_frac * d_sae)] = True
    autocast = device.type == "cuda"
    models = {}
    for impl in ("sparse", "dense"):
        sae = TopKSAE(SaeConfig(d_in=args.d_in, d_sae=d_sae, k=k), device=device)
        sae.reset_parameters(torch.Generator().manual_seed(1))
        sae.impl = impl  # type: ignore[assignment]
        models[impl] = (sae, make_optimizer(sae, 1e-4))
    times: dict[str, list[float]] = {"sparse": [], "dense": [], "encoder_gemm": []}
    for rep in range(args.steps + 1):  # rep 0 warms up
        for impl, (sae, opt) in models.items():
            _sync(device)
            t0 = time.perf_counter()
            train_step(sae, sae, opt, None, x, dead, 1 / 32, autocast)
            _sync(device)
            if rep:
                times[impl].append(time.perf_counter() - t0)
        sae = models["sparse"][0]
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            _sync(device)
            t0 = time.perf_counter()
            F.linear(x - sae.b_dec, sae.W_enc, sae.b_enc)
            _sync(device)
        if rep:
            times["encoder_gemm"].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--d-in", type=int, default=1024)
    p.add_argument("--expansion", type=int, default=16)
    p.add_argument("--k", type=int, nargs="+", default=[32, 250])
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=3, help="timed steps per implementation (after one warm-up)")
    p.add_argument("--dead-frac", type=float, default=0.0, help="fraction of latents marked dead (AuxK on)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    d_sae = args.d_in * args.expansion
    print(f"TopK SAE training step: d_in={args.d_in} d_sae={d_sae} batch={args.batch} dead_frac={args.dead_frac} "
          f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}, median of {args.steps} steps")
    print(f"{'K':>5} {'sparse s/step':>14} {'dense s/step':>13} {'sparse tok/s':>13} {'dense tok/s':>12} "
          f"{'ratio':>6} {'enc GEMM s':>11}")
    ratios = []
    for k in args.k:
        r = bench_k(k, args, device)
        ratio = r["dense"] / r["sparse"]
        ratios.append(f"K={k}: {ratio:.2f}x")
        print(f"{k:>5} {r['sparse']:>14.3f} {r['dense']:>13.3f} {args.batch / r['sparse']:>13.0f} "
              f"{args.batch / r['dense']:>12.0f} {ratio:>5.2f}x {r['encoder_gemm']:>11.3f}", flush=True)
    print("speed ratio sparse/dense (tokens/s): " + "  ".join(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
