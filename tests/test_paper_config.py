"""The paper's configuration, rehearsed end to end without a GPU.

``python -m precompute run --config configs/qwen2-audio-7b.toml`` as shipped, in a folder where
``data/`` holds miniature copies of every dataset it names, in their publishers' layouts
(tests/dataset_fixtures.py): all four WavCaps sources, IEMOCAP, FSD50K's eval set and both
AudioBench tasks. ``--set`` overrides only

- sizes: SAE K, batch, steps, warm-up and sample sizes, C (``score.top_c``);
- the model weights a test cannot download: the AudioLLM is a random tiny Qwen2-Audio with the
  real model's 32 decoder layers (so layers 5/16/26 are real indices) and its 30 s window (750
  audio tokens), and the CLAP is a random tiny one (msclap needs the hub);
- the endpoint: the summarizer and the steering judge talk to a local OpenAI-compatible server.

Every stage completes, the app opens the catalog, and the SAEs train again with
``[sae].source = "stream"`` (no store read) into a copy of the run, which score then reads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from ard_core.catalog import Catalog, SaeRow
from ard_core.datasets import load_manifest
from ard_core.store import ActivationStore
from conftest import build_tiny_clap, build_tiny_qwen2_audio
from dataset_fixtures import write_audiobench, write_fsd50k, write_iemocap, write_wavcaps

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "configs" / "qwen2-audio-7b.toml"
PIPELINE = ["dataset", "extract", "train-sae", "score", "similar", "describe", "evaluate", "quality", "lens",
            "steerability", "steer-eval"]

WAVCAPS = {  # (id, caption, seconds): 35 s is cut to the 30 s window; FreeSound and SoundBible share 2149
    "AudioSet_SL": [("YaaaaaaaaaaA", "A man speaks over wind.", 10.0), ("YbbbbbbbbbbB", "Rain on a roof.", 35.0),
                    ("YccccccccccC", "A dog barks.", 4.0), ("YmissingmisS", "Never downloaded.", 10.0)],
    "FreeSound": [("2149", "Birds chirp in a garden.", 2.0), ("180913", "A car passes by.", 3.0),
                  ("55", "Waves crash on rocks.", 6.0), ("999999", "Never downloaded.", 3.0)],
    "BBC_Sound_Effects": [("07070156", "An aircraft passes overhead.", 5.0), ("07070157", "A clock ticks.", 2.0),
                          ("07070158", "Never downloaded.", 2.0)],
    "SoundBible": [("2149", "Thunder rolls in the distance.", 1.5), ("12", "A bell rings.", 2.5),
                   ("13", "Never downloaded.", 1.0)],
}
IEMOCAP = [  # sessions 1 (train) and 5 (test); 'xxx' and 'oth' name no emotion
    ("Ses01F_impro01_F000", "neu", 2.0), ("Ses01F_impro01_M001", "hap", 2.5), ("Ses01F_impro01_F002", "sad", 1.5),
    ("Ses01F_impro01_M003", "ang", 2.0), ("Ses01F_impro01_F004", "xxx", 1.0), ("Ses01F_impro01_M005", "oth", 1.0),
    ("Ses05F_impro02_F000", "neu", 2.0), ("Ses05F_impro02_M001", "neu", 1.5), ("Ses05F_impro02_F002", "sad", 2.0),
    ("Ses05F_impro02_M003", "sad", 1.5), ("Ses05F_impro02_F004", "hap", 2.0), ("Ses05F_impro02_M005", "hap", 2.5),
    ("Ses05F_impro02_F006", "ang", 1.5), ("Ses05F_impro02_M007", "exc", 2.0),
]
SIZES = [  # what a CPU can do in minutes; everything else is the shipped config
    "sae.k=8", "sae.batch_size=128", "sae.steps=30", "sae.warmup_steps=5", "sae.checkpoint_every=20",
    "sae.init_sample_tokens=2048", "sae.eval_tokens=2048", "sae.buffer_tokens=512", "sae.threads=1",
    "score.top_c=16", "run.threads=1",
]


class _FakeLLM(BaseHTTPRequestHandler):
    """An OpenAI-compatible /chat/completions: names concepts, and judges steered answers."""

    calls: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = body["messages"][-1]["content"]
        type(self).calls.append((self.path, self.headers.get("Authorization"), body["model"], user))
        if "Reply with yes or no only" in user:
            content = "yes" if "female" in user.split("answered:")[-1].split("Does")[0] else "no"
        else:
            content = f"Name: sound {len(type(self).calls) % 7}\nDescription: what the captions share."
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def fake_llm():
    _FakeLLM.calls = []
    srv = HTTPServer(("127.0.0.1", 0), _FakeLLM)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


def _precompute(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "OPENAI_API_KEY": "rehearsal-key", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "precompute", *args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out.stdout


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory, fake_llm) -> tuple[Path, list[str]]:
    """The whole pipeline of the shipped config in a folder holding its data; returns (folder, --set items)."""
    root = tmp_path_factory.mktemp("paper")
    write_wavcaps(root / "data" / "WavCaps", WAVCAPS)
    write_iemocap(root / "data" / "IEMOCAP_full_release", IEMOCAP)
    write_fsd50k(root / "data" / "FSD50K")
    for task in ("iemocap_emotion_test", "voxceleb_gender_test"):
        write_audiobench(root / "data" / "AudioBench" / task, task)
    model = build_tiny_qwen2_audio(root / "models" / "qwen2-audio-32l-30s", n_layers=32, d_model=32,
                                   chunk_length_s=30, max_positions=1024)
    clap = build_tiny_clap(root / "models" / "tiny-clap")
    overrides = SIZES + [f"model.name_or_path={model}", "score.clap_backend=hf", f"score.clap_model={clap}",
                         f"describe.summarizer.base_url=http://127.0.0.1:{fake_llm.server_port}/v1"]
    out = _precompute(["run", "--config", str(SHIPPED), *[a for o in overrides for a in ("--set", o)]], root)
    assert all(f"[run] {stage}: done" in out for stage in PIPELINE), out
    return root, overrides


def test_every_stage_of_the_shipped_config_completes(rehearsal, fake_llm) -> None:
    root, _ = rehearsal
    run = root / "runs" / "qwen2-audio-7b"
    assert sorted(p.stem for p in (run / "stages").glob("*.done")) == sorted(PIPELINE)
    recs = {r.clip_id: r for r in load_manifest(run / "dataset" / "manifest.csv")}
    # 10 WavCaps clips with audio (ids prefixed by source), 12 IEMOCAP turns with an emotion
    assert {"freesound-2149", "soundbible-2149", "audioset_sl-YbbbbbbbbbbB"} <= set(recs)
    assert sum(r.dataset == "wavcaps" for r in recs.values()) == 10
    assert sum(r.dataset == "iemocap" for r in recs.values()) == 12  # xxx and oth dropped
    assert {r.dataset for r in recs.values()} == {"wavcaps", "iemocap", "fsd50k", "iemocap_emotion_test",
                                                  "voxceleb_gender_test"}
    store = ActivationStore(run / "activations")
    assert store.layers == [5, 16, 26] and store.meta.model == "qwen2-audio-32l-30s"
    tokens = {r.clip_id: r.n_tokens for r in store.index(16)}
    assert tokens["audioset_sl-YbbbbbbbbbbB"] == 750  # 35 s, cut to the 30 s window
    assert tokens["audioset_sl-YaaaaaaaaaaA"] == 250 and tokens["freesound-2149"] == 50  # 25 per second
    with Catalog.open(run / "catalog.duckdb", read_only=True) as cat:
        saes = cat.rows(SaeRow)
        trained = [s for s in saes if not s.control]
        assert sorted((s.layer, s.expansion) for s in trained) == [(l, e) for l in (5, 16, 26) for e in (4, 8, 16)]
        assert [(s.layer, s.expansion, s.sae_id.endswith("-random")) for s in saes if s.control] == [(26, 8, True)]
        assert cat.count("feature_examples") > 0 and cat.count("lens_scores") > 0
        assert cat.count("steering_results") > 0 and cat.count("evaluations") > 0
    saved = json.loads((run / "score" / "score_cfg.json").read_text())
    assert saved["top_c"] == 16 and saved["p"] == 4  # the override is in the saved copy, the rest as shipped
    kinds = {"judge" if "yes or no" in c[3] else "name" for c in _FakeLLM.calls}
    assert kinds == {"judge", "name"}
    assert {(c[0], c[1], c[2]) for c in _FakeLLM.calls} == {
        ("/v1/chat/completions", "Bearer rehearsal-key", "meta-llama/Meta-Llama-3-70B-Instruct")}


def test_the_app_opens_the_rehearsal_catalog(rehearsal) -> None:
    from ard_core.ui import concepts, feature
    from ard_core.ui.app import create_app
    from ard_core.catalog.browse import ConceptQuery

    root, _ = rehearsal
    app = create_app(root / "runs" / "qwen2-audio-7b" / "catalog.duckdb", clap="")
    ctx = app.ctx
    try:
        assert ctx.llm is not None and ctx.llm.n_layers == 32 and ctx.store is not None
        page = concepts.search_features(ctx, ConceptQuery(text="sound", named_only=True))
        assert page.total > 0, page.summary
        view = feature.feature_view(ctx, page.refs[0])
        assert view.feature.name.startswith("sound ") and view.n_top > 0
        trace = view.top[0].trace  # activation over time, recomputed from the store: 25 tokens per second
        assert len(trace.acts) > 0 and trace.note == "" and trace.times[1] - trace.times[0] == pytest.approx(0.04)
    finally:
        ctx.close()


def test_stream_mode_trains_the_grid_without_the_store(rehearsal) -> None:
    root, overrides = rehearsal
    run, copy = root / "runs" / "qwen2-audio-7b", root / "runs" / "stream"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("saes"))
    sets = [a for o in [*overrides, f"run.out_dir={copy}", "sae.source=stream"] for a in ("--set", o)]
    # the stored activations are moved away while the SAEs train: they cannot be read
    arrays = sorted((copy / "activations").glob("shard_*/layer_*.npy"))
    aside = copy / "aside"
    aside.mkdir()
    for i, f in enumerate(arrays):
        f.rename(aside / f"{i}.npy")
    _precompute(["train-sae", "--config", str(SHIPPED), *sets], root)
    for i, f in enumerate(arrays):
        (aside / f"{i}.npy").rename(f)
    _precompute(["score", "--config", str(SHIPPED), *sets], root)  # score reads the SAEs from the store's clips
    info = json.loads((copy / "saes" / "qwen2-audio-32l-30s-l26-e8" / "train.json").read_text())
    assert info["section"]["source"] == "stream" and info["steps"] == 30 and not info["data_in_memory"]
    assert info["metrics"]["fvu"] < 1.5
    assert json.loads((copy / "saes" / "stream.json").read_text())["blocks"]
    with Catalog.open(copy / "catalog.duckdb", read_only=True) as cat:
        saes = cat.rows(SaeRow)
        assert len(saes) == 9 + 1 and all(s.path.startswith(str(copy)) for s in saes)  # and the random control
        control = next(s for s in saes if s.control)  # built from the streamed tokens, the store moved away
        assert control.sae_id.endswith("l26-e8-random") and 0 < control.fvu and control.l0 == 8.0
        assert cat.count("feature_examples") > 0
