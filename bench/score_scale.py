"""Stage-2 scoring at scale: tokens/s and peak memory, and whether memory grows with tokens.

(a) statistics + selection, measured at 100k and 1M tokens: synthetic TopK codes
    (K distinct latents per token, drawn per clip from a Zipf law over the d_z latents
    (``synthetic_codes``), 75-125 tokens per clip,
    batches of 64 clips as ``[score].batch_clips``) through ``clip_stats_sparse`` and a
    ``RepresentativeSelector`` keeping the top and bottom p clips of every latent for
    the three methods: what ``precompute/score.py`` streams once the SAE has encoded a
    batch. Making the codes is not timed.
(b) the full path, measured at 20k and 50k tokens: ``ard_core.retrieval.select_representatives`` (read
    the store, encode with the SAE, statistics, selection) on an activation store of
    synthetic float16 activations (d = 4096, 256 clips per shard as the extract stage
    writes) through a TopK SAE of d_z = 32,768, K = 250. The time for 1M tokens is
    projected linearly from the larger run; it is not measured.

Each run is a fresh subprocess, so its peak RSS (``getrusage`` ru_maxrss, "peak RSS";
for (b) it includes writing the store and initialising the SAE)
is its own. A thread samples anonymous RSS (RSS less file-backed pages: the store's
memory-mapped shard being read, up to 210 MB at 256 clips per shard) every 20 ms;
"base anon" is it after imports and setup (for (b): the SAE's weights and the store's
index), "peak anon" its maximum, and its values at 25/50/75/100 % of the tokens show
whether memory grows with them.

    python bench/score_scale.py             # (a) 100k + 1M tokens, (b) 20k + 50k tokens (about 8 min on 1 CPU thread)
    python bench/score_scale.py --quick     # smoke run: small sizes, seconds
    python bench/score_scale.py --only stats --stats-tokens 100000 1000000 3000000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib(anon: bool = False) -> float:
    """Resident set size; ``anon``: less file-backed pages (the store's memory-mapped shards)."""
    with open("/proc/self/statm") as f:
        resident, shared = (int(x) for x in f.read().split()[1:3])
    return (resident - shared if anon else resident) * PAGE / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class Sampler(threading.Thread):
    """Anonymous RSS every ``every`` seconds; ``peak`` is the largest sample."""

    def __init__(self, every: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.every, self.peak, self._done = every, 0.0, threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, rss_mib(anon=True))
            time.sleep(self.every)

    def stop(self) -> float:
        self._done.set()
        self.join()
        return max(self.peak, rss_mib(anon=True))


def synthetic_codes(g, lengths: list[int], d_z: int, k: int, per_clip: int = 2048):  # noqa: ANN001, ANN201
    """(acts (n, K) float32, indices (n, K) int64) for clips of ``lengths`` tokens.

    Like a real SAE's codes, latents are far from uniform: each clip draws ``per_clip``
    latents from a Zipf law (exponent 1, over a fixed random ranking of the d_z latents),
    and each of its tokens keeps K distinct ones of those; ~2 % of kept values are 0 (ReLU).
    """
    import torch

    m = min(per_clip, d_z)
    gen = torch.Generator().manual_seed(12345)  # the same latent ranking in every call
    probs = (1.0 / torch.arange(1, d_z + 1, dtype=torch.float64))[torch.randperm(d_z, generator=gen)]
    strides = torch.tensor([s for s in range(1, 8 * k, 2) if math.gcd(s, m) == 1][:64])
    acts_all, idx_all = [], []
    for n in lengths:
        pool = torch.multinomial(probs, m, replacement=False, generator=g)  # (m,) this clip's latents
        base = torch.randint(0, m, (n, 1), generator=g)
        stride = strides[torch.randint(0, len(strides), (n, 1), generator=g)]
        idx_all.append(pool[(base + torch.arange(k) * stride) % m])  # base + j * stride (mod m): K distinct
        acts = torch.rand(n, k, generator=g) * 3.0
        acts[torch.rand(n, k, generator=g) < 0.02] = 0.0
        acts_all.append(acts)
    return torch.cat(acts_all), torch.cat(idx_all)


def child_stats(tokens: int, d_z: int, k: int, p: int, batch_clips: int) -> dict:
    import torch

    from ard_core.retrieval import METHODS, RepresentativeSelector, clip_stats_sparse

    g = torch.Generator().manual_seed(0)
    sel = RepresentativeSelector(d_z, p=p, methods=METHODS, seed=0)
    base = rss_mib(anon=True)
    sampler = Sampler()
    sampler.start()
    done, clips, spent = 0, 0, 0.0
    marks, next_mark = [], 1
    while done < tokens:
        lengths: list[int] = []
        for n in torch.randint(75, 126, (batch_clips,), generator=g).tolist():
            n = min(n, tokens - done - sum(lengths))
            if n <= 0:
                break
            lengths.append(n)
        acts, idx = synthetic_codes(g, lengths, d_z, k)
        ids = [f"clip{clips + i:07d}" for i in range(len(lengths))]
        t0 = time.perf_counter()
        stats = clip_stats_sparse(list(acts.split(lengths)), list(idx.split(lengths)), d_z)
        sel.update(ids, stats, sum(lengths))
        spent += time.perf_counter() - t0
        done += sum(lengths)
        clips += len(lengths)
        while next_mark <= 4 and done >= next_mark * tokens / 4:
            marks.append(rss_mib(anon=True))
            next_mark += 1
    t0 = time.perf_counter()
    for m in METHODS:
        sel.result(m)
    spent += time.perf_counter() - t0
    anon = sampler.stop()
    return {"tokens": done, "clips": clips, "seconds": spent, "base": base, "anon": anon, "peak": peak_mib(),
            "marks": marks}


def child_full(tokens: int, d_in: int, d_z: int, k: int, p: int, batch_clips: int, root: Path) -> dict:
    import torch

    from ard_core.retrieval import select_representatives
    from ard_core.sae import SaeConfig, TopKSAE
    from ard_core.store import ActivationStore, ActivationWriter, StoreMeta
    from precompute.configs import ScoreConfig

    rng = np.random.default_rng(0)
    layer, per_shard = 16, 256
    writer = ActivationWriter(root, StoreMeta(model="synthetic", layers=[layer], d_model=d_in))
    ids: list[str] = []
    done, shard = 0, 0
    while done < tokens:
        n = int(min(rng.integers(75, 126), tokens - done))
        cid = f"clip{len(ids):07d}"
        writer.add(cid, layer, rng.standard_normal((n, d_in), dtype=np.float32).astype(np.float16), np.arange(n))
        ids.append(cid)
        done += n
        if len(ids) % per_shard == 0:
            writer.commit(shard)
            shard += 1
    if len(ids) % per_shard:
        writer.commit(shard)
    sae = TopKSAE(SaeConfig(d_in=d_in, d_sae=d_z, k=k))
    sae.reset_parameters(torch.Generator().manual_seed(0))
    sae.eval()
    store = ActivationStore(root)
    store.index(layer)
    cfg = ScoreConfig(p=p, batch_clips=batch_clips)
    base = rss_mib(anon=True)
    sampler = Sampler()
    sampler.start()
    marks: list[float] = []
    quarter = [len(ids) * q // 4 for q in (1, 2, 3)]
    orig = store.iter_clips

    def iter_clips(layer: int):  # noqa: ANN202 - RSS at each quarter of the clips, as they stream
        for i, item in enumerate(orig(layer)):
            if i in quarter:
                marks.append(rss_mib(anon=True))
            yield item

    store.iter_clips = iter_clips  # type: ignore[method-assign]
    t0 = time.perf_counter()
    select_representatives(store, layer, set(ids), d_z, sae, p=cfg.p, methods=cfg.methods, seed=0,
                           batch_clips=cfg.batch_clips, encode_tokens=cfg.encode_tokens, desc="bench")
    spent = time.perf_counter() - t0
    marks.append(rss_mib(anon=True))
    anon = sampler.stop()
    return {"tokens": done, "clips": len(ids), "seconds": spent, "base": base, "anon": anon, "peak": peak_mib(),
            "marks": marks}


def run_child(args: argparse.Namespace, kind: str, tokens: int) -> dict:
    cmd = [sys.executable, __file__, "--_child", kind, "--_tokens", str(tokens), "--threads", str(args.threads),
           "--d-in", str(args.d_in), "--d-z", str(args.d_z), "--k", str(args.k), "--p", str(args.p),
           "--batch-clips", str(args.batch_clips)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1"}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{kind} run at {tokens:,} tokens failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def row(label: str, r: dict) -> str:
    marks = " / ".join(f"{m:,.0f}" for m in r["marks"])
    return (f"{label:<10} {r['tokens']:>10,} {r['clips']:>7,} {r['seconds']:>9.1f} {r['tokens'] / r['seconds']:>10,.0f} "
            f"{r['base']:>9,.0f} {r['anon']:>9,.0f} {r['anon'] - r['base']:>7,.0f} {r['peak']:>9,.0f}   {marks}")


def growth(runs: list[dict]) -> str:
    if len(runs) < 2:
        return ""
    a, b = runs[0], runs[-1]
    return (f"memory vs tokens: {b['tokens'] / a['tokens']:.1f}x the tokens -> anon peak {b['anon'] - a['anon']:+,.0f} MiB "
            f"({a['anon']:,.0f} -> {b['anon']:,.0f}), RSS peak {b['peak'] - a['peak']:+,.0f} MiB; anon RSS over the "
            f"larger run {min(b['marks']):,.0f}..{max(b['marks']):,.0f} MiB")


HEADER = (f"{'':<10} {'tokens':>10} {'clips':>7} {'seconds':>9} {'tokens/s':>10} {'base anon':>9} {'peak anon':>9} "
          f"{'+anon':>7} {'peak RSS':>9}   anon MiB at 25/50/75/100 % of tokens")


def measure(args: argparse.Namespace, kind: str, sizes: list[int], title: str) -> list[dict]:
    """Run ``kind`` once per token count, each in its own process, printing a row as each ends."""
    print(f"\n{title}")
    print(HEADER)
    runs = []
    for n in sizes:
        runs.append(run_child(args, kind, n))
        print(row("measured", runs[-1]), flush=True)
    return runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d-in", type=int, default=4096)
    ap.add_argument("--d-z", type=int, default=32_768)
    ap.add_argument("--k", type=int, default=250)
    ap.add_argument("--p", type=int, default=4)
    ap.add_argument("--batch-clips", type=int, default=64)
    ap.add_argument("--stats-tokens", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--full-tokens", type=int, nargs="+", default=[20_000, 50_000])
    ap.add_argument("--project", type=int, default=1_000_000, help="token count the full path's time is projected to")
    ap.add_argument("--only", choices=["stats", "full"], default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--quick", action="store_true", help="smoke run: (a) 20k + 50k tokens, (b) 1k + 2k tokens")
    ap.add_argument("--_child", choices=["stats", "full"], help=argparse.SUPPRESS)
    ap.add_argument("--_tokens", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._child:
        import torch

        torch.set_num_threads(args.threads)
        if args._child == "stats":
            r = child_stats(args._tokens, args.d_z, args.k, args.p, args.batch_clips)
        else:
            with tempfile.TemporaryDirectory(prefix="ard-score-scale-") as d:
                r = child_full(args._tokens, args.d_in, args.d_z, args.k, args.p, args.batch_clips, Path(d))
        print(json.dumps(r))
        return 0

    if args.quick:
        args.stats_tokens, args.full_tokens = [20_000, 50_000], [1_000, 2_000]
    print(f"stage-2 scoring: d={args.d_in} d_z={args.d_z:,} K={args.k} p={args.p} batch={args.batch_clips} clips, "
          f"3 methods; torch threads={args.threads}; CPU; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.only in (None, "stats"):
        runs = measure(args, "stats", args.stats_tokens,
                       "(a) statistics + selection on synthetic TopK codes (measured)")
        print(growth(runs))
    if args.only in (None, "full"):
        runs = measure(args, "full", args.full_tokens,
                       "(b) full path: store -> SAE encode -> statistics -> selection (select_representatives)")
        last = runs[-1]
        rate = last["tokens"] / last["seconds"]
        secs = args.project / rate
        print(f"{'projected':<10} {args.project:>10,} {'':>7} {secs:>9,.0f} {rate:>10,.0f}   "
              f"(not measured: {args.project:,} tokens at the {last['tokens']:,}-token run's rate, "
              f"{secs / 3600:.2f} h)")
        print(growth(runs))
    print(f"\nload average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
