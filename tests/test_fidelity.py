"""Spliced-in fidelity on a tiny random Qwen2-Audio: the error term gives the unspliced model back bit for bit,
an identity reconstruction scores CE 1 and a zero one CE 0, the tail forward equals a hooked full forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ard_core.fidelity import (
    PromptBatch,
    Splice,
    answer_read,
    answer_stats,
    caption_ce,
    ce_score,
    teacher_forced,
)
from ard_core.prompts import CAPTION_QUESTION, attribute_prompt, label_token_ids
from ard_core.sae import SaeConfig, TopKSAE
from conftest import tone

CAPTIONS = ["a man speaking English", "a dog barking", "a woman speaking German in a sad voice"]


def identity_sae(d: int) -> TopKSAE:
    """W = [I; -I], k = d: each token keeps |x_i| on the latent of x_i's sign, so it decodes to x exactly."""
    w = torch.cat([torch.eye(d), -torch.eye(d)])
    return TopKSAE.from_tensors(SaeConfig(d_in=d, d_sae=2 * d, k=d),
                                {"W_enc": w, "b_enc": torch.zeros(2 * d), "W_dec": w, "b_dec": torch.zeros(d)})


def zero_sae(d: int) -> TopKSAE:
    """A decoder of zeros: its reconstruction is the zero vector, as zero-ablation."""
    sae = TopKSAE(SaeConfig(d_in=d, d_sae=4 * d, k=4))
    with torch.no_grad():
        sae.W_dec.zero_()
    return sae


def random_sae(d: int, seed: int = 0) -> TopKSAE:
    sae = TopKSAE(SaeConfig(d_in=d, d_sae=4 * d, k=4))
    sae.reset_parameters(torch.Generator().manual_seed(seed))
    return sae


@pytest.fixture(scope="module")
def audios() -> list[np.ndarray]:
    return [tone(0.4 + 0.15 * i, 150 + 90 * i, seed=i) for i in range(3)]


@pytest.fixture(scope="module")
def p3(tiny_llm, audios):
    prompt = attribute_prompt("gender", "P3", ("male", "female"))
    text = tiny_llm.build_prompt(prompt.question, prompt.prefix)
    inputs = tiny_llm.prepare(audios, [text] * len(audios))
    return PromptBatch(tiny_llm, inputs, [1, 2], answer_read(inputs))


@pytest.fixture(scope="module")
def captions(tiny_llm, audios):
    tf = teacher_forced(tiny_llm, audios, CAPTIONS, CAPTION_QUESTION)
    return tf, PromptBatch(tiny_llm, tf.inputs, [1, 2], tf.read)


@pytest.mark.parametrize("positions", ["audio", "all"])
@pytest.mark.parametrize("layer", [1, 2])
def test_splicing_with_the_error_term_restores_the_unspliced_outputs_exactly(p3, captions, positions, layer):
    d = p3.llm.d_model
    assert p3.tail_ok and captions[1].tail_ok
    for batch in (p3, captions[1]):
        got = batch.logits(Splice(layer, random_sae(d), positions, keep_error=True))
        assert torch.equal(got, batch.base)
        without = batch.logits(Splice(layer, random_sae(d), positions))
        assert not torch.equal(without, batch.base)  # the reconstruction alone does change them


def test_the_tail_forward_equals_a_hooked_full_forward(p3, captions):
    sae = random_sae(p3.llm.d_model, seed=1)
    for batch in (p3, captions[1]):
        for layer in (1, 2):
            for positions in ("audio", "all"):
                splice = Splice(layer, sae, positions)
                tail = batch.logits(splice)
                batch.tail_ok = False
                try:
                    full = batch.logits(splice)
                finally:
                    batch.tail_ok = True
                torch.testing.assert_close(tail, full, atol=1e-5, rtol=1e-5)


def _h(tf, batch, splice: Splice | None) -> float:
    logits = batch.base if splice is None else batch.logits(splice)
    return float(caption_ce(logits, tf.targets, tf.rows, len(CAPTIONS)).sum())


@pytest.mark.parametrize("positions", ["audio", "all"])
def test_ce_score_is_one_for_an_identity_reconstruction_and_zero_for_zero_ablation(captions, positions):
    tf, batch = captions
    d = batch.llm.d_model
    h_orig, h_zero = _h(tf, batch, None), _h(tf, batch, Splice(2, None, positions))
    h_id, h_nothing = _h(tf, batch, Splice(2, identity_sae(d), positions)), _h(tf, batch, Splice(2, zero_sae(d), positions))
    assert (h_id, h_nothing) == (h_orig, h_zero)  # exactly: the splice is the only thing that moves the loss
    # this random model's caption loss rises when layer 2's audio positions are zeroed, and falls when every
    # position is (its near-uniform guesses get no worse from a constant input): both cases of the score
    assert (h_zero > h_orig) == (positions == "audio")
    if h_zero > h_orig:
        assert ce_score(h_id, h_orig, h_zero) == 1.0 and ce_score(h_nothing, h_orig, h_zero) == 0.0
        partial = ce_score(_h(tf, batch, Splice(2, random_sae(d), positions)), h_orig, h_zero)
        assert partial is not None and partial != 1.0
    else:
        assert ce_score(h_id, h_orig, h_zero) is None  # nothing to recover


def test_teacher_forcing_reads_the_positions_that_predict_each_caption_token(tiny_llm, captions):
    tf, batch = captions
    tok = tiny_llm.tokenizer
    S = tf.inputs["input_ids"].shape[1]
    for i, c in enumerate(CAPTIONS):
        got = tf.targets[tf.rows == i].tolist()
        assert tok.decode(got).strip() == c
        where = tf.read[i].nonzero()[:, 0]
        assert where.max() == S - 2 and len(where) == len(got)  # the last prediction is of the last token
        assert tf.inputs["input_ids"][i, where + 1].tolist() == got
    # the summed CE is minus the log-probability of each target under its position's logits
    ce = caption_ce(batch.base, tf.targets, tf.rows, len(CAPTIONS))
    logp = torch.log_softmax(batch.base.double(), -1)
    assert ce.sum() == pytest.approx(float(-logp[torch.arange(len(tf.targets)), tf.targets].sum()))


def test_answer_stats_judge_by_label_logits_and_kl_is_zero_on_the_reference(tiny_llm, p3):
    ids = label_token_ids(tiny_llm.tokenizer, ["male", "female"])
    base = p3.base
    picks = [int(torch.argmax(base[i, ids])) for i in range(len(base))]
    st = answer_stats(base, base, [ids] * len(base), [{p} for p in picks])
    assert st.correct.all() and np.allclose(st.kl, 0.0)
    wrong = answer_stats(base, base, [ids] * len(base), [{1 - p} for p in picks])
    assert not wrong.correct.any()
    moved = answer_stats(p3.logits(Splice(2, None, "all")), base, [ids] * len(base), [{0}] * len(base))
    assert (moved.kl > 0).all()


def test_ce_score_undefined_when_zero_ablation_does_not_raise_the_loss():
    assert ce_score(1.0, 2.0, 2.0) is None
    assert ce_score(2.1, 2.0, 1.9) is None  # zeroing lowered the loss: nothing to recover
    assert ce_score(2.5, 2.0, 3.0) == pytest.approx(0.5)
    assert ce_score(3.5, 2.0, 3.0) == pytest.approx(-0.5)  # worse than zero-ablation
