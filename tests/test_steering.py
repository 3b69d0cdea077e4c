"""Steering: identity at the feature's own value, decoder-direction-only change, generation-time effect;
row-wise steering and the clip pool's fast path against the plain ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ard_core.activations import capture_layers
from ard_core.sae import SaeConfig, TopKSAE
from ard_core.prompts import label_token_ids
from ard_core.steer_batch import ClipPool
from ard_core.steering import RowSteer, SteerSpec, set_delta, steer, steer_rows, steer_vectors, steering
from conftest import tone

K_FEAT = 7
OWN = 5.0


@pytest.fixture(scope="module")
def sae():
    """d_in 32 (the tiny model), feature 7 has pre-activation exactly 5 on every token."""
    torch.manual_seed(0)
    s = TopKSAE(SaeConfig(d_in=32, d_sae=128, k=8))
    with torch.no_grad():
        s.W_enc.mul_(0.01)  # other latents stay small, so feature 7 is always in the top K
        s.W_enc[K_FEAT] = 0
        s.b_enc.zero_()
        s.b_enc[K_FEAT] = OWN
    return s.eval()


def _prompt(llm):
    return llm.build_prompt("What is the gender of the speaker in the speech?", "The speaker's gender is")


def test_value_equal_to_own_activation_is_exact_identity(tiny_llm, sae):
    x = torch.randn(20, 32)
    spec = SteerSpec(layer=1, values={K_FEAT: OWN}, sae=sae)
    assert torch.equal(steer_vectors(x, spec), x)
    res = steer(tiny_llm, tone(1.0), _prompt(tiny_llm), [spec], labels=["male", "female"], max_new_tokens=8)
    assert res.steered.text == res.original.text
    assert res.steered.label_probs == res.original.label_probs


def test_change_is_along_the_feature_decoder_row_only(tiny_llm, sae):
    inputs = tiny_llm.prepare([tone(1.0)], [_prompt(tiny_llm)])
    spec = SteerSpec(layer=1, values={K_FEAT: 9.0}, sae=sae)
    with capture_layers(tiny_llm, [1]) as cap, torch.inference_mode():
        tiny_llm.model(**inputs, use_cache=False)
        base = cap[1].clone()
    with steering(tiny_llm, [spec], ["audio"], inputs["input_ids"], inputs["attention_mask"]):
        with capture_layers(tiny_llm, [1]) as cap, torch.inference_mode():
            tiny_llm.model(**inputs, use_cache=False)
            steered = cap[1].clone()
    audio = tiny_llm.audio_positions(inputs["input_ids"])[0]
    delta = (steered - base)[0]
    expected = (9.0 - OWN) * sae.W_dec[K_FEAT].detach() / sae.cfg.input_scale
    torch.testing.assert_close(delta[audio], expected.expand(int(audio.sum()), -1), rtol=1e-5, atol=1e-5)
    assert torch.equal(delta[~audio], torch.zeros_like(delta[~audio]))  # other positions untouched


def test_without_error_term_output_is_the_reconstruction(sae):
    x = torch.randn(6, 32)
    out = steer_vectors(x, SteerSpec(layer=0, values={K_FEAT: OWN}, sae=sae, keep_error=False))
    torch.testing.assert_close(out, sae.reconstruct(x))
    assert not torch.allclose(out, x)


def test_generation_time_steering_affects_generated_tokens(tiny_llm, sae):
    spec = SteerSpec(layer=2, values={K_FEAT: 400.0}, sae=sae)
    prompt = tiny_llm.build_prompt("Generate a detailed caption for the audio clip")
    res = steer(tiny_llm, tone(1.0), prompt, [spec], positions=["generated"], max_new_tokens=12,
                labels=["male", "female"])
    # the prefill is not steered: the first token's distribution is unchanged ...
    assert res.steered.label_probs == res.original.label_probs
    tok = tiny_llm.tokenizer
    orig_ids = tok.encode(res.original.text)
    steer_ids = tok.encode(res.steered.text)
    assert orig_ids[:1] == steer_ids[:1]
    # ... but the generated tokens that follow are steered
    assert orig_ids != steer_ids


def test_poly_baseline_clamps_a_raw_neuron():
    x = torch.randn(4, 32)
    out = steer_vectors(x, SteerSpec(layer=0, values={3: 2.5}))
    assert (out[:, 3] == 2.5).all()
    assert torch.equal(out[:, [i for i in range(32) if i != 3]], x[:, [i for i in range(32) if i != 3]])


def test_bad_steering_requests_are_clear(sae):
    with pytest.raises(ValueError, match="finite"):
        SteerSpec(layer=0, values={1: float("nan")}, sae=sae)
    with pytest.raises(ValueError, match="does not exist"):
        SteerSpec(layer=0, values={1000: 1.0}, sae=sae)
    with pytest.raises(ValueError, match="mode"):
        SteerSpec(layer=0, values={1: 1.0}, sae=sae, mode="multiply")


@pytest.mark.parametrize("with_sae", [True, False], ids=["sae", "poly"])
def test_row_wise_steering_equals_steer_vectors_row_by_row(sae, with_sae):
    torch.manual_seed(1)
    x = torch.randn(30, 32)
    rows = torch.arange(30) % 3
    feats, vals = torch.tensor([K_FEAT, 2, -1]), torch.tensor([9.0, -4.0, 0.0])  # row 2 unsteered
    out = steer_rows(x, rows, RowSteer(1, feats, vals, sae if with_sae else None))
    for b in range(3):
        sel = rows == b
        want = x[sel] if feats[b] < 0 else steer_vectors(
            x[sel], SteerSpec(layer=1, values={int(feats[b]): float(vals[b])}, sae=sae if with_sae else None))
        torch.testing.assert_close(out[sel], want)
    assert torch.equal(out[rows == 2], x[rows == 2])


def test_set_delta_equals_encoding_again():
    """Every case of setting a feature (in the top K or not, raised, lowered below the (K+1)-th, negative)
    against steer_rows, which encodes the token again."""
    torch.manual_seed(3)
    s = TopKSAE(SaeConfig(d_in=32, d_sae=128, k=8, input_scale=0.5))
    x = torch.randn(40, 32) * 3
    pre = s.pre_acts(x)
    vals, idx = pre.topk(9, dim=-1)
    inside, outside = idx[:, 2], idx[:, 8]  # a latent in each token's top K, and its (K+1)-th
    far = (idx[:, 0] + 64) % 128  # usually far outside the top K
    cases = [(inside, vals[:, 0] + 5), (inside, vals[:, 8] - 1), (inside, torch.full((40,), -3.0)),
             (outside, vals[:, 0] + 1), (far, torch.full((40,), 0.01)), (far, vals[:, 7] + 0.5)]
    for feats, values in cases:
        feats = feats.clone()
        feats[::7] = -1  # some tokens unsteered
        spec = RowSteer(0, feats, values.float(), s)
        want = steer_rows(x, torch.arange(40), spec) - x
        torch.testing.assert_close(set_delta(s, vals, idx, feats, values.float()), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("with_sae", [True, False], ids=["sae", "poly"])
def test_clip_pool_steered_rows_match_steer_on_each_clip_alone(tiny_llm, sae, with_sae):
    """The pool's fast path (padded batches, forwards from the steered layer) against the plain one:
    ``steer`` on one clip at a time, the full model forward."""
    labels = ["male", "female"]
    audios = [tone(0.6 + 0.2 * i, 150 + 90 * i, seed=i) for i in range(3)]
    prompt = _prompt(tiny_llm)
    pool = ClipPool(tiny_llm, audios, prompt, label_token_ids(tiny_llm.tokenizer, labels), [1, 2], batch_rows=4)
    assert pool.tail_ok
    clips = np.array([0, 1, 2, 2, 0, 1])
    feats, vals = torch.tensor([K_FEAT, K_FEAT, 3, -1, 40, 3]), torch.tensor([30.0, 30.0, 20.0, 0.0, -25.0, 5.0])
    basis = sae if with_sae else None
    if not with_sae:
        feats = feats % 32
        feats[3] = -1
    got = pool.steered(RowSteer(2, feats, vals, basis), clips, ["audio", "prompt"])
    for i, (c, f, v) in enumerate(zip(clips, feats.tolist(), vals.tolist())):
        specs = [SteerSpec(layer=2, values={f: v}, sae=basis)] if f >= 0 else []
        res = steer(tiny_llm, audios[c], prompt, specs, positions=["audio", "prompt"], max_new_tokens=1, labels=labels)
        np.testing.assert_allclose(got.probs[i], [res.steered.label_probs[l] for l in labels], rtol=1e-4, atol=1e-6)
    unsteered = [steer(tiny_llm, a, prompt, [], max_new_tokens=1, labels=labels).original.label_probs for a in audios]
    np.testing.assert_allclose(pool.base.probs, [[p[l] for l in labels] for p in unsteered], rtol=1e-4, atol=1e-6)


def test_clip_pool_falls_back_to_full_forwards_when_the_tail_disagrees(tiny_llm):
    pool = ClipPool(tiny_llm, [tone(0.7)], _prompt(tiny_llm), label_token_ids(tiny_llm.tokenizer, ["male", "female"]),
                    [1], batch_rows=2)
    full = pool._full(torch.arange(1))
    assert pool._check(full)
    pool.hidden[1] = pool.hidden[1] + 0.5 * torch.randn_like(pool.hidden[1])  # a decoder doing more than its layers
    assert not pool._check(full)
