"""A small but realistic run for the app's tests: clips, activation store, SAEs, catalog.

:func:`build_ui_run` writes, under one folder:

- ``tiny-random/``: the tiny random Qwen2-Audio of ``conftest.build_tiny_qwen2_audio``
  (4 layers, d_model 32), listed in the catalog's ``models`` table so the app loads it;
- ``corpus/clips/*.wav``: 12 synthetic clips of four sound kinds (hum, beep, noise, clicks);
- ``run/activations``: an activation store at layers 1 and 2 whose tokens carry a
  per-kind direction scaled by the clip's loudness envelope (so a feature's activation
  over time follows the sound);
- ``run/saes/*``: two TopK SAEs (expansion 4) with one feature planted per sound kind;
- ``run/catalog.duckdb``: clips, model, SAEs, features (ranked, some named),
  ``ard`` top/bottom examples computed from the SAEs with ``ard_core.retrieval``,
  lens curves, Tables 1/3/4, Table 3's steering rows, one test clip's per-clip results, the planted
  features' detection scores, similar features (the similar stage's rows over every clip), and
  steerability rows (the 'hum' feature at layer 1 steers
  gender -> male on 3 of 4 probe clips at value 30; 'clicks' flipped nothing; 'beep' was not measured).

The expensive part (the tiny model) is built once per pytest session:
:func:`ui_run_dir` caches the folder under pytest's base temp.

To talk to the app over HTTP, :func:`serve_in_thread` serves it from the test's
own process and :func:`start_app_process` runs ``app.py`` in a subprocess (one a
test may SIGKILL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import pytest
import soundfile as sf
import torch

from ard_core.catalog import (
    Catalog,
    ClipPredictionRow,
    ClipRow,
    ClipScoreRow,
    DetectionRow,
    EvaluationRow,
    FeatureExampleRow,
    FeatureRow,
    LensEnrichmentRow,
    LensScoreRow,
    LensSummaryRow,
    ModelRow,
    SaeRow,
    SimilarFeatureRow,
    SteerabilityRow,
    SteeringResultRow,
    sae_id_for,
)
from ard_core.retrieval import clip_stats_sparse
from ard_core.sae import SaeConfig, TopKSAE
from ard_core.steerability import wilson_lower
from ard_core.store import ActivationWriter, StoreMeta

if TYPE_CHECKING:  # pragma: no cover
    from ard_core.ui.context import AppContext

SR = 16_000
MODEL_NAME = "tiny-random"
LAYERS = (1, 2)
EXPANSION = 4
D_MODEL = 32
K = 8
P = 3
TOKENS_PER_S = 25  # Qwen2-Audio: 100 mel frames/s, conv stride 2, pooling 2

KINDS = {
    "hum": ("a steady low hum", "low hum", "a low, steady electrical hum"),
    "beep": ("a high-pitched beep repeating", "high beep", "short high-pitched tonal beeps"),
    "noise": ("hissing white noise", "white noise", "broadband hiss like wind or static"),
    "clicks": ("rapid clicking sounds", "clicking", "trains of sharp clicks"),
}
PLANTED = {"hum": 5, "beep": 17, "noise": 42, "clicks": 77}
"""Feature index planted for each sound kind (same index in both SAEs)."""


@dataclass(frozen=True)
class UiRun:
    root: Path
    catalog: Path
    model_dir: Path
    clips_dir: Path
    sae_ids: tuple[str, ...]

    def ref(self, kind: str, layer: int = LAYERS[0]) -> str:
        """Feature reference of the feature planted for ``kind`` at ``layer``."""
        return f"{sae_id_for(MODEL_NAME, layer, EXPANSION)}/{PLANTED[kind]}"


def _clip_audio(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    if kind == "hum":
        x = 0.4 * np.sin(2 * np.pi * 110 * t) + 0.1 * np.sin(2 * np.pi * 220 * t)
    elif kind == "beep":
        gate = (np.floor(t * 4) % 2 == 0).astype(float)
        x = 0.4 * gate * np.sin(2 * np.pi * 2000 * t)
    elif kind == "noise":
        x = 0.3 * rng.standard_normal(t.size) * np.linspace(0.3, 1.0, t.size)
    else:  # clicks
        x = np.zeros(t.size)
        x[(np.arange(0, t.size, SR // 12))] = 0.9
        x = np.convolve(x, np.exp(-np.arange(200) / 30.0), mode="same")
    x = x + 0.005 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def _envelope(x: np.ndarray, n_tokens: int) -> np.ndarray:
    frames = np.array_split(x, n_tokens)
    env = np.array([np.sqrt(np.mean(f ** 2)) for f in frames])
    return env / max(env.max(), 1e-6)


def build_ui_run(root: Path) -> UiRun:
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import build_tiny_qwen2_audio

    root = Path(root)
    rng = np.random.default_rng(0)
    model_dir = build_tiny_qwen2_audio(root / MODEL_NAME, n_layers=4, d_model=D_MODEL)
    clips_dir = root / "corpus" / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    run = root / "run"

    # unit directions per kind, orthogonalised so planted features do not overlap
    q, _ = np.linalg.qr(rng.standard_normal((D_MODEL, D_MODEL)))
    direction = {kind: q[:, i].astype(np.float32) for i, kind in enumerate(KINDS)}

    clips: list[ClipRow] = []
    tokens: dict[str, np.ndarray] = {}
    for i in range(12):
        kind = list(KINDS)[i % len(KINDS)]
        seconds = 1.0 + 0.25 * (i % 3)
        audio = _clip_audio(kind, seconds, rng)
        path = clips_dir / f"{kind}_{i:02d}.wav"
        sf.write(path, audio, SR)
        clip_id = path.stem
        labels = {"sound_event": kind}
        if i % 2 == 0:
            labels["gender"] = "female" if i % 4 == 0 else "male"
        split = ("train", "probe", "test")[i % 3]
        caption = KINDS[kind][0]
        clips.append(ClipRow(clip_id, "ui-fixture", split, str(path.resolve()), seconds, labels, caption))
        T = int(round(seconds * TOKENS_PER_S))
        env = _envelope(audio, T)
        x = 0.25 * rng.standard_normal((T, D_MODEL)).astype(np.float32)
        tokens[clip_id] = x + 4.0 * env[:, None] * direction[kind][None, :]

    writer = ActivationWriter(run / "activations", StoreMeta(model=MODEL_NAME, layers=list(LAYERS), d_model=D_MODEL))
    for layer in LAYERS:
        for clip_id, x in tokens.items():
            scale = 1.0 + 0.5 * layer  # the stream grows with depth
            writer.add(clip_id, layer, (scale * x).astype(np.float16), np.arange(x.shape[0]))
    writer.commit(0)

    sae_rows, feature_rows, example_rows = [], [], []
    means: dict[str, torch.Tensor] = {}
    decoders: dict[str, torch.Tensor] = {}
    for layer in LAYERS:
        sae_id = sae_id_for(MODEL_NAME, layer, EXPANSION)
        d_sae = EXPANSION * D_MODEL
        torch.manual_seed(layer)
        sae = TopKSAE(SaeConfig(d_in=D_MODEL, d_sae=d_sae, k=K, model=MODEL_NAME, layer=layer))
        with torch.no_grad():
            sae.W_enc.mul_(0.3)
            for kind, k in PLANTED.items():
                v = torch.from_numpy(direction[kind])
                sae.W_enc[k] = 2.0 * v
                sae.W_dec[k] = v
                sae.b_enc[k] = -1.0
        folder = sae.save(run / "saes" / sae_id)
        ids = sorted(tokens)
        xs = [torch.from_numpy((1.0 + 0.5 * layer) * tokens[c]) for c in ids]
        lat = [sae.encode(x) for x in xs]
        stats = clip_stats_sparse([a for a, _ in lat], [i for _, i in lat], d_sae)
        means[sae_id], decoders[sae_id] = stats.mean_act, sae.W_dec.detach()
        r = (stats.mean_act * stats.coverage).numpy()  # (clips, features)
        n_tok = sum(x.shape[0] for x in xs)
        density = stats.n_active.numpy() / n_tok
        mono = rng.uniform(0.0, 0.4, d_sae)
        for kind, k in PLANTED.items():
            mono[k] = 0.9 - 0.05 * list(KINDS).index(kind)
        alive = density > 0
        order = np.argsort(-np.where(alive, mono, -np.inf), kind="stable")
        rank = np.empty(d_sae, dtype=int)
        rank[order] = np.arange(1, d_sae + 1)
        names = {k: KINDS[kind] for kind, k in PLANTED.items()}
        for f in range(d_sae):
            name, desc = (names[f][1], names[f][2]) if f in names else (None, None)
            if f not in names and alive[f] and rank[f] <= 12:
                name, desc = f"mixed texture {f}", "clips share no clear sound; a polysemantic feature"
            feature_rows.append(FeatureRow(sae_id, f, name, desc, float(mono[f]) if alive[f] else None,
                                           int(rank[f]), float(density[f]),
                                           float(stats.max_act[f]) if alive[f] else None))
            if not alive[f]:
                continue
            fired = np.flatnonzero(r[:, f] > 0)
            top = fired[np.argsort(-r[fired, f], kind="stable")][:P]
            bottom = fired[np.argsort(r[fired, f], kind="stable")][:P]
            for kind_name, picks in (("top", top), ("bottom", bottom)):
                for rk, ci in enumerate(picks):
                    example_rows.append(FeatureExampleRow(
                        "ard", sae_id, f, kind_name, rk, ids[ci], float(r[ci, f]),
                        float(stats.mean_act[ci, f]), float(stats.coverage[ci, f])))
        sae_rows.append(SaeRow(sae_id, MODEL_NAME, layer, EXPANSION, K, D_MODEL, d_sae, str(folder),
                               0.2 - 0.05 * layer, float((~alive).mean()), float(K)))

    lens_rows, summary_rows, enrich_rows = [], [], []
    for t_i, (track, n_labels) in enumerate((("gender", 2), ("sound_event", 4))):
        for f_i, fmt in enumerate(("P1", "P2", "P3")):
            for pos_i, pos in enumerate(("last", "penultimate", "last_masked")):
                for sub_i, subset in enumerate(("all", "correct", "incorrect")):
                    for layer in range(1, 5):
                        s = 1 / (1 + np.exp(-(layer - 2.5 + 0.4 * f_i - 0.6 * sub_i - 0.5 * pos_i - t_i)))
                        lens_rows.append(LensScoreRow(MODEL_NAME, track, fmt, pos, subset, layer,
                                                      float(s - 0.1 * t_i), 20))
            summary_rows.append(LensSummaryRow(MODEL_NAME, track, fmt, 0.9 - 0.2 * t_i - 0.05 * f_i,
                                               2.5 + 0.3 * f_i + t_i, 20, n_labels))
    for lam in (0.0, 0.25, 0.5, 1.0):
        enrich_rows.append(LensEnrichmentRow(MODEL_NAME, "sound_event", "info_score", lam, 0, 2, 0.5 + 0.2 * lam, 16))
        for s in range(3):
            enrich_rows.append(LensEnrichmentRow(MODEL_NAME, "sound_event", "random_layer", lam, s, None,
                                                 0.5 + 0.05 * lam - 0.02 * s, 16))

    # evaluations in the shapes the stages write (precompute/evaluate_tables.py per_clip_rows and table4_rows,
    # precompute/steer_eval.py's spreads, precompute/lens.py's Pearson rows)
    t1 = sae_id_for(MODEL_NAME, LAYERS[-1], EXPANSION)
    evals = []
    for m_i, method in enumerate(("ard", "mean_act", "coverage", "random", "poly")):
        for metric, base in (("precision", 0.6), ("recall", 0.5), ("f1", 0.55), ("map", 0.4)):
            v = base - 0.08 * m_i
            evals.append(EvaluationRow("table1", method, t1, metric, v, 0.02, "per_clip", v - 0.04, v + 0.04, 12))
        evals.append(EvaluationRow("table1", method, t1, "ms", 8.0 - 0.5 * m_i, 0.1 if method == "random" else None,
                                   "per_clip", n=3 if method == "random" else None))
    evals += [EvaluationRow("table1_gap", "ard-random", t1, m, 0.24, 0.03, "per_clip", 0.18, 0.30, 12)
              for m in ("f1", "map")]
    for layer in LAYERS:
        sid = sae_id_for(MODEL_NAME, layer, EXPANSION)
        evals += [EvaluationRow("table4", "ard", sid, "ms", 7.0 + layer, None),
                  EvaluationRow("table4", "poly", sid, "ms", 6.0, None)]
    evals += [EvaluationRow("steering", "ard", sae_id_for(MODEL_NAME, 1, EXPANSION), "female->male", 0.75, 0.2,
                            "run", 0.25, 1.0, 4),
              EvaluationRow("steering", "poly", f"{MODEL_NAME}-l1-raw", "female->male", 0.0, 0.0, "run", 0.0, 0.0, 4)]
    evals += [EvaluationRow("coverage", m, t1, "share_top_clips_c_lt_0.5", v, None)  # precompute/score.py
              for m, v in (("ard", 0.25), ("mean_act", 0.125))]
    evals += [EvaluationRow("table3", "pearson", MODEL_NAME, "r", 0.42, None),
              EvaluationRow("table3", "pearson", MODEL_NAME, "p_value", 0.03, None)]
    # the per-clip view of one test clip and detection scores of the planted features
    tc = next(c for c in clips if c.split == "test")
    kind = tc.clip_id.rsplit("_", 1)[0]
    per_clip = [ClipScoreRow(t1, "ard", 0, tc.clip_id, 2, 1, 0.5, 1.0, 2 / 3, 1.0),
                ClipScoreRow(t1, "poly", 0, tc.clip_id, 0, 1, 0.0, 0.0, 0.0, 0.0)]
    clip_preds = [ClipPredictionRow(t1, "ard", 0, tc.clip_id, 1, PLANTED[kind], KINDS[kind][1], 1.5, KINDS[kind][0],
                                    0.92, True),
                  ClipPredictionRow(t1, "ard", 0, tc.clip_id, 2, 3, "mixed texture 3", 0.25, KINDS[kind][0], 0.41, False)]
    detection = [DetectionRow(sid, k, "clap", 0.6 + 0.1 * i, 4, 4) for sid in (r.sae_id for r in sae_rows)
                 for i, k in enumerate(PLANTED.values())]
    l1, l2 = (sae_id_for(MODEL_NAME, layer, EXPANSION) for layer in LAYERS)
    steering = [SteeringResultRow("female->male", "ard", sid, PLANTED["hum"], 30.0, "label_prob", sens, 4, layer,
                                  layer == 1, sens * 4 / 6, 6, probe)
                for sid, layer, sens, probe in ((l1, 1, 0.75, 0.75), (l2, 2, 0.25, 0.5))]
    steering += [SteeringResultRow("female->male", "poly", f"{MODEL_NAME}-l{layer}-raw", 3, 12.0, "label_prob", 0.0, 4,
                                   layer, layer == 1, 0.0, 6, 0.25) for layer in LAYERS]
    steer = [SteerabilityRow(sid, PLANTED[kind], track, target, value, flipped / n, n, flipped, mult, clip, "P3", how,
                             wilson_lower(flipped, n))
             for sid, kind, track, target, value, flipped, n, mult, clip, how in (
                 (l1, "hum", "gender", "male", 30.0, 3, 4, 2.0, "hum_00", "contrast"),
                 (l1, "hum", "gender", "female", 15.0, 1, 4, 1.0, "noise_02", "contrast"),
                 (l1, "clicks", "gender", "male", 12.0, 0, 4, 1.0, None, "name"),
                 (l2, "noise", "sound_event", "noise", 20.0, 2, 3, 2.0, "hum_04", "name"))]

    similar = similar_rows(sae_rows, means, decoders)
    with Catalog.open(run / "catalog.duckdb") as cat:
        cat.upsert(clips)
        cat.upsert([ModelRow(MODEL_NAME, str(model_dir), "Qwen2AudioAdapter", 4, D_MODEL)])
        for rows in (sae_rows, feature_rows, example_rows, lens_rows, summary_rows, enrich_rows, evals, steering,
                     per_clip, clip_preds, detection, steer, similar):
            cat.upsert(rows)
    return UiRun(root, run / "catalog.duckdb", model_dir, clips_dir, tuple(r.sae_id for r in sae_rows))


def similar_rows(saes: list[SaeRow], means: dict[str, torch.Tensor],
                 decoders: dict[str, torch.Tensor]) -> list[SimilarFeatureRow]:
    """The similar stage's rows over every clip: 10 decoder neighbours, 3 per SAE of the other layer."""
    from ard_core.similarity import correlation_neighbours, decoder_neighbours
    from precompute.similar import neighbour_rows

    rows: list[SimilarFeatureRow] = []
    for s in saes:
        listed = set(range(s.d_sae))
        alive = means[s.sae_id].sum(0) > 0
        rows += neighbour_rows(s.sae_id, "decoder", s.sae_id, decoder_neighbours(decoders[s.sae_id], 10, alive), listed)
        for o in saes:
            if o.layer != s.layer:
                nb = correlation_neighbours(means[s.sae_id], means[o.sae_id], 3)
                rows += neighbour_rows(s.sae_id, "activation", o.sae_id, nb, listed)
    return rows


def ui_run_dir(base: Path) -> UiRun:
    """:func:`build_ui_run` under ``base/ui-run``, reused when an earlier test built it."""
    root = Path(base) / "ui-run"
    done = root / "DONE"
    if not done.exists():
        build_ui_run(root)
        done.write_text("ok")
    return UiRun(root, root / "run" / "catalog.duckdb", root / MODEL_NAME, root / "corpus" / "clips",
                 tuple(sae_id_for(MODEL_NAME, layer, EXPANSION) for layer in LAYERS))



@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> UiRun:
    """The fixture run (catalog, tiny model, clips), built once per session under its base temp dir; test
    modules import this fixture by name."""
    return ui_run_dir(tmp_path_factory.getbasetemp())

# -- serving the app in tests ------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_in_thread(ctx: "AppContext") -> Iterator[str]:
    """The app on ``ctx`` served from this process (a thread) on a free port; yields its URL."""
    from ard_core.ui.app import create_app, launch

    app = create_app(ctx=ctx)
    port = free_port()
    launch(app, port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.demo.close()


@dataclass
class AppProcess:
    """``python app.py`` running in a subprocess (so a test can SIGKILL it)."""

    proc: subprocess.Popen
    url: str
    log_path: Path

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when the machine loses power or the OOM killer strikes."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()


def start_app_process(catalog: Path, annotations: Path, log_path: Path, *args: str,
                      timeout_s: float = 180.0) -> AppProcess:
    """Start ``app.py`` on ``catalog`` (extra CLI ``args``) on a free port; return once it answers HTTP."""
    import urllib.request

    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    log = log_path.open("a")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "app.py"), "--catalog", str(catalog), "--port", str(port),
         "--annotations", str(annotations), "--clap", "", *args],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()  # the child holds its own descriptor
    app = AppProcess(proc, f"http://127.0.0.1:{port}/", log_path)
    deadline = time.time() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}:\n{app.log_tail()}")
        try:
            with urllib.request.urlopen(app.url, timeout=2) as r:
                if r.status == 200:
                    return app
        except OSError:
            pass
        if time.time() > deadline:
            app.kill()
            raise RuntimeError(f"app.py did not answer within {timeout_s:.0f} s:\n{app.log_tail()}")
        time.sleep(0.5)
