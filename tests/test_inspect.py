"""The Inspect tab: ranking what fires on a clip (planted truth, and the model against a dense
reference), the tab's handler and its ``/inspect`` endpoint, and the catalog read it uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ui_fixtures import UiRun, run, serve_in_thread  # noqa: F401 (run is a fixture)

from ard_core.inspection import SaeAt, rank_features
from ard_core.sae import SaeConfig, TopKSAE
from ard_core.ui import inspector
from ard_core.ui import steer as steer_tab
from ard_core.ui.context import AppContext, UserError


@pytest.fixture(scope="module")
def ctx(run: UiRun, tmp_path_factory: pytest.TempPathFactory):
    c = AppContext.open(run.catalog, annotations_path=tmp_path_factory.mktemp("insp") / "a.duckdb", clap="",
                        device="cpu")
    yield c
    c.close()


def _planted_sae(d: int = 16, planted: int = 7) -> tuple[TopKSAE, torch.Tensor]:
    torch.manual_seed(0)
    sae = TopKSAE(SaeConfig(d_in=d, d_sae=64, k=4))
    v = torch.nn.functional.normalize(torch.randn(d), dim=0)
    with torch.no_grad():
        sae.W_enc.mul_(0.05)
        sae.b_enc.fill_(-0.5)
        sae.W_enc[planted] = 3 * v
    return sae, v


def test_the_planted_feature_ranks_first_and_fires_where_it_was_planted() -> None:
    sae, v = _planted_sae()
    x = 0.05 * torch.randn(20, 16)
    x[5:10] += 2.0 * v  # the concept is there in tokens 5-9 only
    names = lambda refs: {r: ("planted" if r.endswith("/7") else "") for r in refs}  # noqa: E731
    feats, n_firing = rank_features({3: x}, [SaeAt("s", 3, sae)], names, top_n=5, named_only=True)
    assert [f.ref for f in feats] == ["s/7"] and n_firing >= 1
    f = feats[0]
    assert np.flatnonzero(f.acts > 0).tolist() == [5, 6, 7, 8, 9]
    # mu, c and r are the definitions over the clip's 20 tokens (the dense reference)
    dense = sae.encode_dense(x)[:, 7].detach().numpy()
    assert f.mean_act == pytest.approx(dense.mean()) and f.coverage == pytest.approx(0.25)
    assert f.score == pytest.approx(dense.mean() * 0.25) and f.max_act == pytest.approx(dense.max())
    np.testing.assert_allclose(f.acts, dense, rtol=1e-6)
    # unnamed features come in when asked for, ranked by r; refs the catalog does not list never do
    everything, _ = rank_features({3: x}, [SaeAt("s", 3, sae)], names, top_n=64, named_only=False)
    scores = [e.score for e in everything]
    assert scores == sorted(scores, reverse=True) and everything[0].ref == "s/7"
    assert rank_features({3: x}, [SaeAt("s", 3, sae)], lambda refs: {}, top_n=5)[0] == []


def _reference(ctx: AppContext, path: Path, sae_ids: list[str]) -> dict[str, tuple[float, float]]:
    """ref -> (mu, c) of every listed feature, from the model's hidden states and dense SAE latents."""
    from ard_core.audio import load_audio

    llm = ctx.llm
    inputs = llm.prepare([load_audio(path)], [inspector.inspect_prompt(ctx)])
    with torch.no_grad():
        hidden = llm.model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
    mask = llm.audio_positions(inputs["input_ids"])[0]
    names = {}
    out = {}
    for sae_id in sae_ids:
        row = ctx.catalog.sae(sae_id)
        z = ctx.sae(sae_id).encode_dense(hidden[row.layer + 1][0, mask].float()).detach()  # layer l = hidden_states[l + 1]
        mu, c = z.mean(0), (z > 0).float().mean(0)
        refs = [f"{sae_id}/{k}" for k in range(z.shape[1])]
        names.update(ctx.catalog.feature_names(refs))
        out.update({r: (float(mu[k]), float(c[k])) for k, r in enumerate(refs) if r in names and mu[k] > 0})
    return out


def test_inspecting_a_clip_matches_a_dense_reference(ctx: AppContext, run: UiRun) -> None:
    ids = inspector.sae_choices(ctx)
    assert ids == list(run.sae_ids)
    path = run.clips_dir / "beep_01.wav"
    v = inspector.run_inspect(ctx, str(path), ids, top_n=10, named_only=False)
    ref = _reference(ctx, path, ids)
    want = sorted(ref, key=lambda r: -ref[r][0] * ref[r][1])[:10]
    assert v.refs == want
    for f in v.data["features"]:
        assert (f["mean_act"], f["coverage"]) == pytest.approx(ref[f["ref"]], rel=1e-4, abs=1e-6)
        assert len(f["activation"]) == v.data["n_tokens"] == 25 + 6  # 1.25 s: 31 audio tokens
    assert list(v.table["feature"]) == v.refs and list(v.table.columns) == inspector.COLUMNS
    # named only: the same ranking restricted to named features
    named = inspector.run_inspect(ctx, str(path), ids, top_n=10, named_only=True)
    names = ctx.catalog.feature_names(list(ref))
    assert named.refs == [r for r in sorted(ref, key=lambda r: -ref[r][0] * ref[r][1]) if names[r]][:10]


def test_a_clip_not_in_the_corpus_and_the_steer_link(ctx: AppContext, run: UiRun, tmp_path: Path) -> None:
    t = np.arange(16000 * 2) / 16000
    path = tmp_path / "my recording.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t) * (t > 0.5)).astype(np.float32), 16000)
    v = inspector.run_inspect(ctx, str(path), ",".join(run.sae_ids), top_n=5, named_only=False)
    assert v.summary.startswith("**my recording.wav** · 2.00 s · 50 audio tokens")
    assert len(v.refs) == 5 and f'href="?feature={v.refs[0]}"' in v.figure.layout.yaxis2.ticktext[0]
    # "steer this": the Steer tab gets this clip and the feature (and the measured preset where there is one)
    audio, clip, preset, feats, pending = steer_tab.clip_link_updates(ctx, run.ref("hum"), str(path))
    assert (audio, clip, feats, pending) == (str(path), None, [run.ref("hum")], {})
    assert preset == "gender: multiple choice (P3)"


@pytest.mark.parametrize("args,match", [
    (dict(audio_path=None), "give an audio clip"),
    (dict(sae_ids=[]), "at least one SAE"),
    (dict(sae_ids=["no-such-sae"]), "cannot read the loaded model"),
    (dict(top_n=0), "from 1 to 50"),
])
def test_bad_requests_say_what_to_fix(ctx: AppContext, run: UiRun, args: dict, match: str) -> None:
    base = dict(audio_path=str(run.clips_dir / "hum_00.wav"), sae_ids=list(run.sae_ids), top_n=5)
    with pytest.raises(UserError, match=match):
        inspector.run_inspect(ctx, **{**base, **args})


def test_best_steerability_read(ctx: AppContext, run: UiRun) -> None:
    best = ctx.catalog.best_steerability([run.ref("hum"), run.ref("clicks"), run.ref("beep")])
    assert set(best) == {run.ref("hum"), run.ref("clicks")}  # 'beep' was not measured
    assert (best[run.ref("hum")].target, best[run.ref("hum")].flipped) == ("male", 3)  # 3/4 beats 1/4
    assert inspector._steers(best[run.ref("clicks")]) == "tried gender: no flip"


def test_inspect_endpoint_has_named_parameters_and_matches_the_handler(ctx: AppContext, run: UiRun) -> None:
    gradio_client = pytest.importorskip("gradio_client")
    with serve_in_thread(ctx) as url:
        client = gradio_client.Client(url, verbose=False, download_files=False, analytics_enabled=False)
        info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/inspect"]
        assert [p["parameter_name"] for p in info["parameters"]] == ["audio", "saes", "top_n", "named_only"]
        clip = str(run.clips_dir / "noise_02.wav")
        got = client.predict(audio=gradio_client.handle_file(clip), saes=list(run.sae_ids), top_n=4,
                             named_only=False, api_name="/inspect")
    data = got[3]
    want = inspector.run_inspect(ctx, clip, list(run.sae_ids), 4, False)
    assert [f["ref"] for f in data["features"]] == want.refs
    assert data["features"][0]["activation"] == pytest.approx(want.data["features"][0]["activation"])
