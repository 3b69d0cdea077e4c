"""Latency of the app's handlers on a catalog of realistic size.

Builds a synthetic catalog through ``ard_core.catalog`` (the bulk path,
``Catalog.upsert_columns``): 100k clips, 3 SAEs x 32,768 features, p = 4 top and
bottom clips per feature for 'ard', the baselines' examples and scores for the top
C features (mean_act, coverage, poly, 10 random seeds), names and descriptions of
the top C, captions, and the activation index, as the pipeline writes them. Clip
paths point into a small pool of synthetic WAV files so the feature page draws real
spectrograms. The build is cached (``--rebuild`` forces it).

Then it calls the functions the Gradio events call, on the catalog opened read-only
as the app opens it, over many random requests:

* feature page: ``feature.show`` (the Open button / deep link), and the same plus
  Gradio's serialisation of its figures (``Figure.to_json``, what the browser waits for);
* concept search: the Search button's handler (``concepts._run``) with one or two
  words from the names' vocabulary, a random sort and sometimes an SAE or layer filter;
* concepts-table page: the pager's handler with no text, a random sort and page.

The spectrogram cache is cleared before every feature page: with 100k clips a
random feature's clips are almost never cached. Without an activation store
beside the catalog the page shows a note in place of each clip's activation
trace and of the activation histogram. ``--store`` adds one, with random SAEs of the
real size (d_in = 4096, d_z = 32,768): the page then encodes each example clip with its
SAE, as the app does.

    python bench/catalog_scale.py                    # build once (a few minutes), measure
    python bench/catalog_scale.py --requests 300 --out /tmp/cat --rebuild
    python bench/catalog_scale.py --quick            # 10k clips, 3 x 4,096 features
    python bench/catalog_scale.py --store            # 20 pages with activation traces (~5 GB on disk)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ard_core.catalog import (  # noqa: E402
    CONCEPT_SORTS,
    ActivationIndexRow,
    Catalog,
    ClipCaptionRow,
    ClipRow,
    FeatureExampleRow,
    FeatureRow,
    MethodConceptRow,
    MethodScoreRow,
    ModelRow,
    NotFound,
    SaeRow,
    sae_id_for,
)

SR = 16_000
MODEL = "synthetic-audiollm"
VOCAB = (
    "dog bark barking cat meow bird birdsong chirp crow rooster cow horse sheep insect buzz bee cricket frog "
    "speech speaker woman man child female male voice whisper shout laugh crying cough sneeze breathing "
    "singing choir music guitar piano drum drums violin flute trumpet bass synth electronic techno jazz rock "
    "beat rhythm melody chord tone beep siren alarm bell ring ringtone telephone doorbell clock tick "
    "engine car truck motorcycle train airplane helicopter traffic horn brake tyre road street "
    "water rain thunder wind storm ocean waves stream drip splash pour toilet sink shower "
    "door knock footsteps walking running typing keyboard mouse click clicks applause crowd cheering "
    "chatter conversation murmur reverb echo hall room outdoor indoor distant close loud quiet "
    "noise hiss static hum buzzing rumble crackle pop squeak scrape rustle tapping hammer saw drill "
    "german english french spanish mandarin accent fast slow calm angry happy sad emotional neutral"
).split()
SOUNDS = ("hum", "beep", "noise", "clicks", "chirp")


@dataclass(frozen=True)
class Spec:
    """What the synthetic catalog holds; a change rebuilds the cache."""

    n_clips: int = 100_000
    layers: tuple[int, ...] = (8, 16, 24)
    expansion: int = 8
    d_in: int = 4096
    k: int = 250
    p: int = 4
    top_c: int = 5000
    random_seeds: int = 10
    n_audio: int = 200
    seed: int = 0
    version: int = 3
    """Bumped when the builder changes what it writes."""

    @property
    def d_sae(self) -> int:
        return self.d_in * self.expansion

    def key(self) -> str:
        return hashlib.sha1(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:10]


QUICK = Spec(n_clips=10_000, d_in=512, top_c=1000, n_audio=60)


# -- building --------------------------------------------------------------------------
def _audio(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    if kind == "hum":
        x = 0.4 * np.sin(2 * np.pi * rng.uniform(60, 300) * t)
    elif kind == "beep":
        x = 0.4 * (np.floor(t * rng.uniform(2, 6)) % 2 == 0) * np.sin(2 * np.pi * rng.uniform(800, 3000) * t)
    elif kind == "noise":
        x = 0.3 * rng.standard_normal(t.size) * np.linspace(rng.uniform(0.1, 1), rng.uniform(0.1, 1), t.size)
    elif kind == "chirp":
        x = 0.4 * np.sin(2 * np.pi * (200 + 1500 * (t % 1.0)) * t)
    else:
        x = np.zeros(t.size)
        x[np.arange(0, t.size, int(SR / rng.uniform(4, 20)))] = 0.9
        x = np.convolve(x, np.exp(-np.arange(200) / 30.0), mode="same")
    return (x + 0.005 * rng.standard_normal(t.size)).astype(np.float32)


def _words(rng: np.random.Generator, n: int) -> list[str]:
    return [VOCAB[i] for i in rng.integers(0, len(VOCAB), n)]


def _sentence(rng: np.random.Generator, lo: int, hi: int) -> str:
    return " ".join(_words(rng, int(rng.integers(lo, hi + 1))))


def _pick(rng: np.random.Generator, pool: np.ndarray, n_features: int, p: int) -> np.ndarray:
    """(n_features, 2p) distinct clip indices per feature (top p, then bottom p)."""
    out = rng.integers(0, len(pool), (n_features, 2 * p))
    for _ in range(4):  # redraw the rare duplicates within a row
        s = np.sort(out, axis=1)
        dup = (s[:, 1:] == s[:, :-1]).any(axis=1)
        if not dup.any():
            break
        out[dup] = rng.integers(0, len(pool), (int(dup.sum()), 2 * p))
    return pool[out]


def _examples(method: str, sae_id: str, features: np.ndarray, picks: np.ndarray, clip_ids: np.ndarray,
              rng: np.random.Generator, p: int) -> dict[str, np.ndarray]:
    """Columns of feature_examples for ``features`` with their (F, 2p) picks, scores as the stage writes them."""
    F = len(features)
    mu = rng.gamma(2.0, 0.5, (F, 2 * p))
    cov = rng.uniform(0.0, 1.0, (F, 2 * p))
    r = mu * cov
    r[:, :p] = -np.sort(-r[:, :p], axis=1)  # top: descending
    r[:, p:] = np.sort(r[:, p:], axis=1) * 0.01  # bottom: ascending, far below the top
    if method.startswith("random:"):
        r = mu = cov = np.full((F, 2 * p), np.nan)
    kind = np.array(["top"] * p + ["bottom"] * p)
    rank = np.tile(np.arange(p), 2)
    return {"method": np.full(F * 2 * p, method), "sae_id": np.full(F * 2 * p, sae_id),
            "feature": np.repeat(features, 2 * p).astype(np.int32), "kind": np.tile(kind, F),
            "rank": np.tile(rank, F).astype(np.int32), "clip_id": clip_ids[picks.reshape(-1)],
            "score": r.reshape(-1), "mean_act": mu.reshape(-1), "coverage": cov.reshape(-1)}


def _merge(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def build(root: Path, spec: Spec) -> None:
    """Write the catalog and the audio pool under ``root`` (emptied first)."""
    if root.exists():
        shutil.rmtree(root)
    (root / "clips").mkdir(parents=True)
    rng = np.random.default_rng(spec.seed)
    import soundfile as sf

    t0 = time.perf_counter()
    pool_paths, pool_dur = [], []
    for j in range(spec.n_audio):
        seconds = float(rng.integers(3, 11))
        path = root / "clips" / f"pool_{j:04d}.wav"
        sf.write(path, _audio(SOUNDS[j % len(SOUNDS)], seconds, rng), SR)
        pool_paths.append(str(path))
        pool_dur.append(seconds)

    n = spec.n_clips
    clip_ids = np.array([f"syn-{i:06d}" for i in range(n)])
    split = rng.choice(np.array(["train", "probe", "test"]), n, p=[0.7, 0.15, 0.15])
    pool_of = np.arange(n) % spec.n_audio
    datasets = rng.choice(np.array(["audioset", "vctk", "esc50", "commonvoice"]), n)
    labels = [json.dumps({"sound_event": VOCAB[int(a)], "gender": ("female", "male")[int(b)]}, sort_keys=True)
              for a, b in zip(rng.integers(0, len(VOCAB), n), rng.integers(0, 2, n))]
    captions = np.array([_sentence(rng, 6, 14) for _ in range(n)])
    probe = np.flatnonzero(split != "test")

    with Catalog.open(root / "catalog.duckdb") as cat:
        cat.upsert_columns(ClipRow, {
            "clip_id": clip_ids, "dataset": datasets, "split": split,
            "path": np.array(pool_paths)[pool_of], "duration_s": np.array(pool_dur)[pool_of], "labels": labels,
            "caption": captions})
        cat.upsert([ModelRow(MODEL, "models/" + MODEL, "Qwen2AudioAdapter", 32, spec.d_in)])
        n_tok = rng.integers(75, 251, n).astype(np.int32)  # 3-10 s at 25 tokens/s
        for layer in spec.layers:
            cat.upsert_columns(ActivationIndexRow, {
                "model": np.full(n, MODEL), "layer": np.full(n, layer, np.int32), "clip_id": clip_ids,
                "shard": np.array([f"shard_{i // 2048:05d}" for i in range(n)]),
                "offset": (np.cumsum(n_tok) - n_tok).astype(np.int64), "n_tokens": n_tok})
        cat.upsert_columns(ClipCaptionRow, {"model": np.full(len(probe), MODEL), "clip_id": clip_ids[probe],
                                            "caption": captions[probe]})

        deepest = max(spec.layers)
        for layer in spec.layers:
            sae_id = sae_id_for(MODEL, layer, spec.expansion)
            d = spec.d_sae
            cat.upsert([SaeRow(sae_id, MODEL, layer, spec.expansion, spec.k, spec.d_in, d,
                               f"saes/{sae_id}", float(rng.uniform(0.1, 0.3)), 0.05, float(spec.k))])
            alive = rng.uniform(size=d) > 0.05
            feats = np.arange(d)
            mono = np.where(alive, rng.beta(2, 5, d), np.nan)
            order = np.argsort(-np.nan_to_num(mono, nan=-1.0), kind="stable")
            rank = np.empty(d, np.int64)
            rank[order] = np.arange(1, d + 1)
            density = np.where(alive, 10 ** rng.uniform(-5, -1, d), 0.0)
            max_act = np.where(alive, rng.gamma(3.0, 2.0, d), np.nan)
            top_c = feats[order[: spec.top_c]]
            names = {int(f): (" ".join(_words(rng, int(rng.integers(2, 4)))), _sentence(rng, 6, 14)) for f in top_c}
            cat.upsert_columns(FeatureRow, {
                "sae_id": np.full(d, sae_id), "feature": feats.astype(np.int32),
                "name": [names[f][0] if f in names else None for f in range(d)],
                "description": [names[f][1] if f in names else None for f in range(d)],
                "monosemanticity": [None if np.isnan(m) else float(m) for m in mono], "rank": rank,
                "density": density, "max_act": [None if np.isnan(m) else float(m) for m in max_act]})

            live = feats[alive]
            parts = [_examples("ard", sae_id, live, _pick(rng, probe, len(live), spec.p), clip_ids, rng, spec.p)]
            for m in ("mean_act", "coverage"):
                parts.append(_examples(m, sae_id, top_c, _pick(rng, probe, len(top_c), spec.p), clip_ids, rng, spec.p))
            for s in range(spec.random_seeds):
                parts.append(_examples(f"random:{s}", sae_id, top_c, _pick(rng, probe, len(top_c), spec.p),
                                       clip_ids, rng, spec.p))
            poly = np.arange(min(spec.top_c, spec.d_in))
            parts.append(_examples("poly", sae_id, poly, _pick(rng, probe, len(poly), spec.p), clip_ids, rng, spec.p))
            cat.upsert_columns(FeatureExampleRow, _merge(parts))

            scores = [{"method": np.full(d, m), "sae_id": np.full(d, sae_id), "feature": feats.astype(np.int32),
                       "seed": np.zeros(d, np.int32),
                       "monosemanticity": mono if m == "ard" else np.where(alive, rng.beta(2, 6, d), np.nan),
                       "rank": rank if m == "ard" else rng.permutation(d) + 1} for m in ("ard", "mean_act", "coverage")]
            for s in range(spec.random_seeds):
                c = len(top_c)
                scores.append({"method": np.full(c, "random"), "sae_id": np.full(c, sae_id),
                               "feature": top_c.astype(np.int32), "seed": np.full(c, s, np.int32),
                               "monosemanticity": rng.beta(1, 8, c), "rank": rank[top_c]})
            scores.append({"method": np.full(spec.d_in, "poly"), "sae_id": np.full(spec.d_in, sae_id),
                           "feature": np.arange(spec.d_in, dtype=np.int32), "seed": np.zeros(spec.d_in, np.int32),
                           "monosemanticity": rng.beta(1, 6, spec.d_in), "rank": rng.permutation(spec.d_in) + 1})
            cat.upsert_columns(MethodScoreRow, _merge(scores))

            # describe: 'ard' top C for every SAE; the other methods and random seeds for the Table 1 SAE
            concepts = [("ard", top_c, 0)]
            if layer == deepest:
                concepts += [(m, top_c, 0) for m in ("mean_act", "coverage")] + [("poly", poly, 0)]
                concepts += [("random", top_c, s) for s in range(spec.random_seeds)]
            cat.upsert_columns(MethodConceptRow, _merge([
                {"method": np.full(len(fs), m), "sae_id": np.full(len(fs), sae_id), "feature": fs.astype(np.int32),
                 "seed": np.full(len(fs), s, np.int32),
                 "name": np.array([" ".join(_words(rng, 2)) for _ in fs]),
                 "description": np.array([_sentence(rng, 6, 14) for _ in fs])} for m, fs, s in concepts]))
            print(f"  {sae_id}: {d:,} features, {int(alive.sum()):,} alive, {len(names):,} named "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        counts = {t: cat.count(t) for t in ("clips", "features", "feature_examples", "method_scores",
                                             "method_concepts", "clip_captions", "activation_index")}
    size = (root / "catalog.duckdb").stat().st_size
    print("  rows: " + ", ".join(f"{t} {c:,}" for t, c in counts.items()) + f"; {size / 2**20:.0f} MiB; "
          f"built in {time.perf_counter() - t0:.0f} s", flush=True)


def ensure_built(root: Path, spec: Spec, rebuild: bool) -> Path:
    stamp = root / "spec.json"
    want = json.dumps({**dataclasses.asdict(spec), "key": spec.key()}, sort_keys=True)
    if rebuild or not stamp.is_file() or stamp.read_text() != want:
        print(f"building the synthetic catalog in {root} ...", flush=True)
        build(root, spec)
        stamp.write_text(want)  # written last: a killed build is rebuilt
    else:
        print(f"using the cached synthetic catalog in {root} (--rebuild to force)")
    return root / "catalog.duckdb"


def request_refs(spec: Spec, n: int, seed: int) -> list[str]:
    """The features the feature-page requests open: uniform over the SAEs and their latents."""
    rng = np.random.default_rng(seed)
    saes = [sae_id_for(MODEL, layer, spec.expansion) for layer in sorted(spec.layers)]
    return [f"{saes[rng.integers(len(saes))]}/{rng.integers(spec.d_sae)}" for _ in range(n)]


def ensure_store(root: Path, spec: Spec, refs: list[str]) -> Path:
    """``root/with-store``: a copy of the catalog beside random SAEs of the real size and an
    activation store (float16, d_in wide, 25 tokens per second of clip) holding every clip the
    pages of ``refs`` show. Not all 100k clips: at d_in = 4096 that store would be ~100 GB."""
    import torch

    from ard_core.sae import SaeConfig, TopKSAE
    from ard_core.store import ActivationWriter, StoreMeta

    out = root / "with-store"
    stamp = out / "store.json"
    want = json.dumps({"key": spec.key(), "refs": refs})
    if stamp.is_file() and stamp.read_text() == want:
        print(f"using the cached activation store and SAEs in {out}")
        return out / "catalog.duckdb"
    print(f"building random SAEs and an activation store for {len(refs)} pages in {out} ...", flush=True)
    t0 = time.perf_counter()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy(root / "catalog.duckdb", out / "catalog.duckdb")
    with Catalog.open(out / "catalog.duckdb", read_only=True) as cat:
        saes = {r.sae_id: r for r in cat.rows(SaeRow)}
        need: set[tuple[int, str]] = set()
        for ref in refs:
            try:
                page = cat.feature_page(ref)
            except NotFound:  # a dead latent: not listed
                continue
            need |= {(saes[page.feature.sae_id].layer, e.clip_id) for e in page.examples}
        duration = {c.clip_id: c.duration_s for c in cat.clips(sorted({c for _, c in need})).values()}
    for row in saes.values():
        sae = TopKSAE(SaeConfig(d_in=row.d_in, d_sae=row.d_sae, k=row.k, model=MODEL, layer=row.layer))
        sae.reset_parameters(torch.Generator().manual_seed(row.layer))
        sae.save(out / row.path)
    rng = np.random.default_rng(spec.seed)
    writer = ActivationWriter(out / "activations", StoreMeta(model=MODEL, layers=sorted(spec.layers), d_model=spec.d_in))
    for i, (layer, clip_id) in enumerate(sorted(need)):
        n = max(1, round(duration[clip_id] * 25))
        writer.add(clip_id, layer, rng.standard_normal((n, spec.d_in), dtype=np.float32).astype(np.float16),
                   np.arange(n))
        if i % 256 == 255:
            writer.commit(i // 256)
    writer.commit(len(need) // 256 + 1)
    stamp.write_text(want)
    print(f"  {len(saes)} SAEs, {len(need):,} clip-layers stored ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out / "catalog.duckdb"


# -- measuring ---------------------------------------------------------------------------
def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000.0, q))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="catalog folder (default: a cached folder under the temp dir)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the catalog even if a cached one matches")
    ap.add_argument("--quick", action="store_true", help="a small catalog (10k clips, 3 x 4,096 features), few requests")
    ap.add_argument("--requests", type=int, default=None, help="requests per handler (default 200; 20 with --store)")
    ap.add_argument("--threads", type=int, default=1, help="DuckDB and torch threads (the app's machine is shared)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--store", action="store_true",
                    help="with an activation store and SAEs of the real size: activation traces and histograms "
                         "are computed as in the app (SAE encodes on the CPU; --requests defaults to 20)")
    args = ap.parse_args()
    spec = QUICK if args.quick else Spec()
    n_req = args.requests or (20 if args.store else 200)
    if args.quick:
        n_req = min(n_req, 30)
    root = args.out or Path(tempfile.gettempdir()) / f"ard-catalog-scale-{spec.key()}"
    path = ensure_built(root, spec, args.rebuild)
    refs = request_refs(spec, n_req, args.seed)
    if args.store:
        path = ensure_store(root, spec, refs)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from ard_core.ui import concepts, feature
    from ard_core.ui.context import AppContext

    torch.set_num_threads(args.threads)
    ann = Path(tempfile.mkdtemp()) / "annotations.duckdb"
    ctx = AppContext.open(path, load_model=False, annotations_path=ann, clap="")
    ctx.catalog.con.execute(f"SET threads = {args.threads}")
    saes = [r.sae_id for r in ctx.catalog.saes()]
    layers = [str(r.layer) for r in ctx.catalog.saes()]
    n_feat = spec.d_sae

    def page(i: int) -> tuple[float, float]:
        """(feature.show, Gradio's serialisation of its figures) in seconds."""
        ctx.spectrograms.clear()
        t0 = time.perf_counter()
        ups = feature.show(ctx, refs[i])
        t1 = time.perf_counter()
        for u in ups:
            if hasattr(u, "to_json"):
                u.to_json()
        return t1 - t0, time.perf_counter() - t1

    sorts = list(CONCEPT_SORTS)

    def search_args(i: int) -> tuple:
        r = np.random.default_rng((args.seed, i))
        text = " ".join(VOCAB[j] for j in r.integers(0, len(VOCAB), int(r.integers(1, 3))))
        sae = saes[r.integers(len(saes))] if r.uniform() < 0.25 else concepts.ALL
        layer = layers[r.integers(len(layers))] if r.uniform() < 0.25 else concepts.ALL
        return (text, sae, layer, 0.0, bool(r.uniform() < 0.2), sorts[r.integers(len(sorts))],
                bool(r.uniform() < 0.5), 25, 1)

    def search(i: int) -> None:
        concepts._run(ctx, *search_args(i))

    total = spec.d_sae * len(spec.layers)

    def table_page(i: int) -> None:
        r = np.random.default_rng((args.seed, 10_000 + i))
        size = int(r.choice(concepts.PAGE_SIZES))
        concepts._run(ctx, "", concepts.ALL, concepts.ALL, 0.0, False, sorts[r.integers(len(sorts))],
                      bool(r.uniform() < 0.5), size, int(r.integers(1, total // size + 1)))

    if ctx.store is not None:  # the first page of each SAE loads it and encodes the histogram's token sample
        for sae_id in saes:
            first = next((i for i, r in enumerate(refs) if r.startswith(sae_id + "/")), None)
            if first is not None:
                print(f"first page of {sae_id} after start (SAE load + histogram sample): {page(first)[0]:.1f} s",
                      flush=True)
    for fn in (page, search, table_page):  # warm-up: imports, first queries
        fn(0)
    print(f"catalog {path} ({path.stat().st_size / 2**20:.0f} MiB): {spec.n_clips:,} clips, {len(saes)} SAEs x "
          f"{n_feat:,} features, p={spec.p}; {n_req} random requests each; threads={args.threads}; "
          f"activation store: {'yes' if ctx.store is not None else 'none (notes instead of traces)'}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    shown, with_json, searched, paged = [], [], [], []
    for i in range(n_req):  # interleaved, so that load from other processes hits all alike
        a, b = page(i)
        shown.append(a)
        with_json.append(a + b)
        searched.append(timed(lambda: search(i)))
        paged.append(timed(lambda: table_page(i)))
    rows = [("feature page (feature.show)", shown), ("feature page + figure JSON", with_json),
            ("concept search (Search)", searched), ("concepts-table page (pager)", paged)]
    print(f"{'handler':<32} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for name, ts in rows:
        print(f"{name:<32} {pct(ts, 50):>8.1f} {pct(ts, 95):>8.1f} {max(ts) * 1000:>8.1f}")
    print(f"load average at end:   {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"goals: feature page p95 < 150 ms (got {pct(with_json, 95):.0f} with JSON, {pct(shown, 95):.0f} without), "
          f"search p95 < 300 ms (got {pct(searched, 95):.0f})")
    ctx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
