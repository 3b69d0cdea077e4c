"""AudioLens: one-pass lens vs references, audio masking, enrichment, statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ard_core.activations import capture_layers
from ard_core.lens import (
    audio_masked_attention,
    critical_layer,
    enrich_source_layer,
    enrichment,
    information_scores,
    logit_lens,
    pearson,
)
from conftest import tone

LABELS = [" male", " female"]


def _inputs(llm, audios):
    p = llm.build_prompt("What is the gender of the speaker in the speech?", "The speaker's gender is")
    return llm.prepare(audios, [p] * len(audios))


def _label_ids(llm):
    from ard_core.prompts import label_token_ids

    return label_token_ids(llm.tokenizer, ["male", "female"])


def test_one_pass_lens_equals_manual_norm_then_unembed(tiny_llm):
    inputs = _inputs(tiny_llm, [tone(0.9, 300), tone(1.4, 700, seed=2)])
    ids = _label_ids(tiny_llm)
    out = logit_lens(tiny_llm, inputs, ids, positions=(-1, -2), full_softmax=True)
    assert out.label_logits.shape == (2, tiny_llm.n_layers, 2, 2)
    with torch.inference_mode():
        ref = tiny_llm.model(**inputs, output_hidden_states=True)
        W = tiny_llm.lm_head.weight[ids]
        for ell in range(1, tiny_llm.n_layers):  # HF hidden_states[ell] for ell < L is pre-norm
            h = ref.hidden_states[ell][:, [-1, -2]]
            manual = tiny_llm.final_norm(h) @ W.T
            torch.testing.assert_close(out.label_logits[:, ell - 1], manual.float(), rtol=1e-5, atol=1e-5)
        # last layer: equals the model's own final logits (HF's last state is already normed)
        torch.testing.assert_close(out.label_logits[:, -1], ref.logits[:, [-1, -2]][..., ids].float(),
                                   rtol=1e-5, atol=1e-5)
        full = torch.softmax(ref.logits[:, -1].float(), -1)[:, ids]
    torch.testing.assert_close(out.label_probs[:, -1, 0], full, rtol=1e-5, atol=1e-6)


def test_audio_mask_removes_audio_influence_at_layer_1(tiny_llm):
    a, b = tone(1.0, 300), tone(1.0, 1200, noise=0.2, seed=5)  # same length, different content
    ids = _label_ids(tiny_llm)
    outs = {}
    for name, audio in (("a", a), ("b", b)):
        inputs = _inputs(tiny_llm, [audio])
        with capture_layers(tiny_llm, [0, 1]) as cap, torch.inference_mode():
            tiny_llm.model(**audio_masked_attention(tiny_llm, inputs), use_cache=False)
            masked = {l: cap[l][0, -1].clone() for l in (0, 1)}
            tiny_llm.model(**inputs, use_cache=False)
            plain = {l: cap[l][0, -1].clone() for l in (0, 1)}
        outs[name] = (masked, plain)
    # masked: the last token's layer-1 state (decoder layer 0 output) no longer depends on the audio
    torch.testing.assert_close(outs["a"][0][0], outs["b"][0][0], rtol=0, atol=1e-6)
    # unmasked it does, and so does the masked state one layer up (via the text tokens)
    assert not torch.allclose(outs["a"][1][0], outs["b"][1][0], atol=1e-4)
    assert not torch.allclose(outs["a"][0][1], outs["b"][0][1], atol=1e-4)


def test_audio_mask_leaves_other_positions_alone(tiny_llm):
    inputs = _inputs(tiny_llm, [tone(0.8, 300), tone(1.2, 500)])
    with capture_layers(tiny_llm, [tiny_llm.n_layers - 1]) as cap, torch.inference_mode():
        tiny_llm.model(**inputs, use_cache=False)
        plain = cap[tiny_llm.n_layers - 1].clone()
        tiny_llm.model(**audio_masked_attention(tiny_llm, inputs), use_cache=False)
        masked = cap[tiny_llm.n_layers - 1].clone()
    real = inputs["attention_mask"].bool()
    real[:, -1] = False
    torch.testing.assert_close(masked[real], plain[real], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(masked[:, -1], plain[:, -1], atol=1e-4)


def _all_layers(llm, inputs):
    with capture_layers(llm, list(range(llm.n_layers))) as cap, torch.inference_mode():
        llm.model(**inputs, use_cache=False)
    return {l: cap[l].clone() for l in range(llm.n_layers)}


def test_enrichment_changes_exactly_the_target_layer_and_position(tiny_llm):
    inputs = _inputs(tiny_llm, [tone(0.8, 300), tone(1.2, 500)])
    L = tiny_llm.n_layers
    src, gap, lam = 1, 2, 1.5  # lens layers: add 1.5 * h^1 to h^3
    base = _all_layers(tiny_llm, inputs)
    with enrichment(tiny_llm, src, gap, lam):  # registered before the capture hooks: they see its edit
        enr = _all_layers(tiny_llm, inputs)
    for l in range(src + gap - 1):  # decoder layers before the target: untouched
        assert torch.equal(base[l], enr[l])
    t = src + gap - 1  # decoder index of lens layer src + gap
    torch.testing.assert_close(enr[t][:, -1], base[t][:, -1] + lam * base[src - 1][:, -1])
    assert torch.equal(enr[t][:, :-1], base[t][:, :-1])
    for l in range(t + 1, L):  # later layers change only at the last position (causal)
        assert torch.equal(enr[l][:, :-1], base[l][:, :-1])
        assert not torch.allclose(enr[l][:, -1], base[l][:, -1])


def test_enrichment_per_row_source_and_bounds(tiny_llm):
    inputs = _inputs(tiny_llm, [tone(0.8, 300), tone(0.8, 500)])
    with pytest.raises(ValueError, match="source \\+ gap"):
        with enrichment(tiny_llm, 3, 2, 1.0):
            pass
    L = tiny_llm.n_layers
    base = _all_layers(tiny_llm, inputs)
    with enrichment(tiny_llm, torch.tensor([1, 2]), 1, torch.tensor([1.0, 2.0])):
        enr = _all_layers(tiny_llm, inputs)
    torch.testing.assert_close(enr[1][0, -1], base[1][0, -1] + base[0][0, -1])  # row 0: h^2 += h^1
    assert torch.equal(enr[1][1], base[1][1])  # row 1 untouched at lens layer 2
    # row 1: h^3 += 2 h^2, where h^2 of row 1 was itself unchanged
    torch.testing.assert_close(enr[2][1, -1], base[2][1, -1] + 2.0 * base[1][1, -1])


def test_information_score_and_critical_layer_hand_example():
    gold = np.array([0, 1, 1, 0])
    pred = np.array([[1, 0, 0], [1, 1, 1], [0, 1, 1], [1, 1, 0]])  # (N=4, L=3)
    I = information_scores(pred, gold)
    assert I.tolist() == [0.25, 0.75, 1.0]
    # |Y| = 2, alpha = 0.2 -> threshold 0.6: s = [0, 0.15, 0.4] -> (0.15*2 + 0.4*3) / 0.55
    assert critical_layer(I, 2) == pytest.approx(1.5 / 0.55)
    # |Y| = 4 -> threshold 0.3: s = [0, 0.45, 0.7] -> (0.45*2 + 0.7*3) / 1.15
    assert critical_layer(I, 4) == pytest.approx(3.0 / 1.15)
    # only the last layer informative -> exactly L
    assert critical_layer([0.5, 0.5, 1.0], 2) == pytest.approx(3.0)
    assert math.isnan(critical_layer([0.1, 0.2], 2))


def test_enrich_source_layer_and_pearson():
    assert enrich_source_layer([0.1, 0.6, 0.3, 0.9, 0.2], n_layers=5, gap=2) == 2  # 0.9 at ell=4 has no room
    r, p = pearson([1, 2, 3, 4, float("nan")], [2, 4, 6, 8.5, 1])
    assert r > 0.99 and p < 0.05
