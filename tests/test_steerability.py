"""Steerability and steer-eval on a planted truth.

The fixture world: the tiny random model, 24 tone clips labelled male/female over train/probe/test,
an activation store at layers 1 and 2, and two SAEs. Feature PLANTED of the layer-2 SAE has as
decoder row the direction that raises the logit of the label the model does not answer (the
target) over the other: the gradient of that margin with respect to layer 2's output; the
SAE's other decoder rows are random and orthogonal to it. Three of them carry the same name
("man/woman speaking", so they are named candidates too). Steerability must find the planted feature and rank it first;
steer-eval must choose it on probe and never let a test clip change its choices.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ard_core.audio import load_audio
from ard_core.catalog import Catalog, ClipRow, FeatureRow, SaeRow, SteerabilityRow, SteeringResultRow, sae_id_for
from ard_core.config import RunConfig
from ard_core.datasets import load_manifest, save_manifest
from ard_core.models import ModelConfig
from ard_core.prompts import label_token_ids
from ard_core.sae import SaeConfig, TopKSAE
from ard_core.steerability import judge_prompt
from conftest import gender_tone_manifest, tone
from precompute import handover
from precompute.configs import EvaluateConfig, ExtractConfig, SteerabilityConfig, SteerEvalConfig
from precompute.extract import extract

PLANTED = 7
DECOYS = (3, 11, 20)
D_SAE = 64


def _bag_of_words(texts):
    vocab = ["man", "woman", "speaking", "dog"]
    v = np.array([[float(w in t.split()) for w in vocab] + [1e-3] for t in texts])
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _margin_direction(llm, audios, target: int, layer: int) -> torch.Tensor:
    """Unit direction at ``layer``'s output that raises logit[target] - logit[other] (summed gradient)."""
    prompt, labels = judge_prompt("gender", ["female", "male"])
    ids = label_token_ids(llm.tokenizer, labels)
    inputs = llm.prepare(audios, [llm.build_prompt(prompt.question, prompt.prefix)] * len(audios))
    grads = []

    def hook(_m, _i, out):
        h = out[0] if isinstance(out, tuple) else out
        h.retain_grad()
        grads.append(h)

    handle = llm.layers[layer].register_forward_hook(hook)
    try:
        logits = llm.model(**inputs, use_cache=False).logits[:, -1]
        (logits[:, ids[target]] - logits[:, ids[1 - target]]).sum().backward()
    finally:
        handle.remove()
        llm.model.zero_grad(set_to_none=True)
    g = grads[0].grad[inputs["attention_mask"].bool()].sum(0)
    return g / g.norm()


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir, tiny_llm):
    tmp = tmp_path_factory.mktemp("steerability")
    manifest = gender_tone_manifest(tmp, "m.csv")
    save_manifest(load_manifest(manifest), tmp / "run" / "dataset" / "manifest.csv")
    (tmp / "run.toml").write_text(f'[run]\nout_dir = "{tmp / "run"}"\ndevice = "cpu"\nseed = 1\n'
                                  f'[model]\nname_or_path = "{tiny_model_dir}"\n'
                                  '[extract]\nlayers = [1, 2]\nstore_dtype = "float32"\n')
    run = RunConfig.load(tmp / "run.toml")
    extract(run, run.section("model", ModelConfig), run.section("extract", ExtractConfig), llm=tiny_llm)
    handover.save(run, EvaluateConfig())
    with Catalog.open(run.run.catalog_path) as cat:
        clips = cat.rows(ClipRow)
    probe = [c for c in clips if c.split == "probe"]
    prompt, labels = judge_prompt("gender", ["female", "male"])
    with torch.no_grad():
        inputs = tiny_llm.prepare([load_audio(c.path) for c in probe],
                                  [tiny_llm.build_prompt(prompt.question, prompt.prefix)] * len(probe))
        logits = tiny_llm.model(**inputs, use_cache=False).logits[:, -1]
    answers = logits[:, label_token_ids(tiny_llm.tokenizer, labels)].argmax(-1)
    target = labels[int(answers.float().mean() >= 0.5) ^ 1]  # the label the model answers least
    direction = _margin_direction(tiny_llm, [load_audio(c.path) for c in probe], labels.index(target), 2)
    word = "man" if target == "male" else "woman"
    sae_rows, feats = [], []
    for layer in (1, 2):
        torch.manual_seed(10 + layer)
        sae = TopKSAE(SaeConfig(d_in=32, d_sae=D_SAE, k=6, model=tiny_llm.name, layer=layer))
        if layer == 2:
            with torch.no_grad():
                w = sae.W_dec - (sae.W_dec @ direction)[:, None] * direction[None, :]  # orthogonal to the margin
                sae.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
                sae.W_dec[PLANTED] = direction
        sid = sae_id_for(tiny_llm.name, layer, 2)
        sae_rows.append(SaeRow(sid, tiny_llm.name, layer, 2, 6, 32, D_SAE, str(sae.save(tmp / "run" / "saes" / sid)),
                               0.5, 0.0, 6.0))
        named = {k: f"{word} speaking" for k in (*DECOYS, PLANTED)}
        feats += [FeatureRow(sid, k, named.get(k), None, 0.5, k + 1, 0.1, 1.0) for k in range(D_SAE)]
    with Catalog.open(run.run.catalog_path) as cat:
        cat.upsert(sae_rows)
        cat.upsert(feats)
    return run, target, sae_rows


@pytest.fixture(scope="module")
def measured(world, tiny_llm):
    from precompute.steerability import steerability

    run, target, saes = world
    cfg = SteerabilityConfig(named_per_sae=4, contrast_per_sae=1, pool_clips=8, clips_per_target=6, screen_clips=2,
                             finalists=2, multiples=[0.25, 0.5, 1.0], batch_rows=16)
    steerability(run, None, cfg, llm=tiny_llm, embed=_bag_of_words)
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        return cat.steerability_for("gender", target)


def test_the_planted_feature_is_found_and_ranked_first(world, measured):
    run, target, saes = world
    planted = f"{saes[1].sae_id}/{PLANTED}"
    assert measured[0].ref == planted
    best = measured[0]
    assert best.how.startswith("name") and best.n == 6 and best.flipped == 6  # a finalist, every clip flipped
    assert best.multiple == 0.25  # the smallest value already flips them all
    decoys = [r for r in measured if r.sae_id == saes[1].sae_id and r.feature in DECOYS]
    assert len(decoys) == 3  # the same name made them candidates too: tried, and each flips less or needs more
    assert all((r.flip_rate, -r.multiple) < (best.flip_rate, -best.multiple) for r in decoys)
    assert {r.sae_id for r in measured} == {s.sae_id for s in saes}  # candidates on every SAE
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        assert cat.steerability(planted)[0].target == target
        clip = cat.clip(best.clip_id)
    assert clip.split == "probe"  # the example clip a deep link opens is a probe clip it flipped


def test_the_values_are_multiples_of_the_layers_median_norm(world, measured):
    from ard_core.store import ActivationStore

    run, target, saes = world
    store = ActivationStore(run.run.out_dir / "activations")
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        probe = [c.clip_id for c in cat.rows(ClipRow) if c.split == "probe"]
    norm = float(torch.cat([torch.from_numpy(store.clip_tokens(2, c)) for c in probe]).norm(dim=1).median())
    best = measured[0]
    assert best.multiple in (0.25, 0.5, 1.0)
    assert best.value == pytest.approx(best.multiple * norm, rel=1e-5)  # |W_dec row| = 1, input_scale 1


def _choices(run: RunConfig) -> list[tuple]:
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        return sorted((r.mapping, r.method, r.layer, r.sae_id, r.feature, r.value, r.best_layer, r.probe_flip_rate)
                      for r in cat.steering_results())


def test_steer_eval_chooses_on_probe_and_test_clips_never_change_the_choice(world, measured, tiny_llm, tmp_path):
    from precompute.steer_eval import steer_eval

    run, target, saes = world
    source = "female" if target == "male" else "male"
    cfg = SteerEvalConfig(mappings=[f"{source}->{target}"], split="test", batch_rows=16)
    out = steer_eval(run, None, cfg, llm=tiny_llm)
    first = _choices(run)
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        rows = cat.steering_results()
        test_clips = [c for c in cat.rows(ClipRow) if c.split == "test"]
    ard = [r for r in rows if r.method == "ard" and r.best_layer]
    assert [(r.sae_id, r.feature) for r in ard] == [(saes[1].sae_id, PLANTED)]  # chosen on probe: the planted one
    assert ard[0].sensitivity == 1.0 and ard[0].n_all == 4 and ard[0].sensitivity_all == ard[0].n / 4
    assert {r.method for r in rows} == {"ard", "poly"} and {r.layer for r in rows} == {1, 2}
    assert "| AR&D |" in (out / "README.md").read_text()
    # other test clips: new audio for every test clip, and half of them gone from the catalog
    for i, c in enumerate(test_clips):
        sf.write(c.path, tone(0.6, 900 + 150 * i, noise=0.2, seed=100 + i), 16000)
    with Catalog.open(run.run.catalog_path) as cat:
        for c in test_clips[:4]:  # two of each label
            cat.delete_where("clips", clip_id=c.clip_id)
    steer_eval(run, None, cfg, llm=tiny_llm)
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        assert {r.n_all for r in cat.steering_results()} == {2}  # the test split did change
    assert _choices(run) == first


def test_steer_cli_json_is_one_object_on_the_last_line(world, measured, tiny_llm, capsys, monkeypatch):
    from ard_core.steering import SteerSpec, steer
    from precompute import cli

    run, target, saes = world
    best = measured[0]
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        clip = cat.clip(best.clip_id)
    monkeypatch.setattr(ModelConfig, "load", lambda self, device: tiny_llm)  # the session's model, not a reload
    argv = ["steer", "--config", str(run.path), "--audio", clip.path, "--feature", best.ref, "--value", str(best.value),
            "--track", "gender", "--positions", "audio,prompt", "--max-new-tokens", "3"]
    assert cli.main(argv + ["--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    prompt, labels = judge_prompt("gender", ["female", "male"])
    sae = TopKSAE.load(saes[1].path)
    want = steer(tiny_llm, load_audio(clip.path), tiny_llm.build_prompt(prompt.question, prompt.prefix),
                 [SteerSpec(layer=2, values={PLANTED: best.value}, sae=sae)], positions=["audio", "prompt"],
                 max_new_tokens=3, labels=list(labels))
    assert set(got) == {"original", "steered"}
    for name, out in (("original", want.original), ("steered", want.steered)):
        assert got[name]["answer"] == out.text
        assert got[name]["label_probs"] == pytest.approx(out.label_probs)
    steered = got["steered"]["label_probs"]
    assert max(steered, key=steered.get) == target  # the planted feature's value flips this probe clip
    assert cli.main(argv) == 0  # the text output stays the default
    assert not capsys.readouterr().out.strip().startswith("{")
