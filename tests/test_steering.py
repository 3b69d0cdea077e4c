"""Steering: identity at the feature's own value, decoder-direction-only change, generation-time effect."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ard_core.activations import capture_layers
from ard_core.sae import SaeConfig, TopKSAE
from ard_core.steering import SteerSpec, steer, steer_vectors, steering
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
