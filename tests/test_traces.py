"""A feature's activations recomputed from the store (ard_core.traces), against a dense encode."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from ard_core.sae import SaeConfig, TopKSAE
from ard_core.store import ActivationStore, ActivationWriter, StoreMeta
from ard_core.traces import activation_over_time, activation_sample, token_seconds

D, LAYER = 16, 3
TOKENS = {"a": 5, "b": 8, "c": 3, "d": 6}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[TopKSAE, ActivationStore]:
    root = tmp_path_factory.mktemp("traces") / "activations"
    rng = np.random.default_rng(0)
    writer = ActivationWriter(root, StoreMeta(model="m", layers=[LAYER], d_model=D))
    for clip_id, n in TOKENS.items():
        writer.add(clip_id, LAYER, rng.standard_normal((n, D)).astype(np.float16), np.arange(n))
    writer.commit(0)
    torch.manual_seed(0)
    return TopKSAE(SaeConfig(d_in=D, d_sae=64, k=4)).eval(), ActivationStore(root)


def _dense(sae: TopKSAE, x: np.ndarray, feature: int) -> np.ndarray:
    return sae.encode_dense(torch.from_numpy(np.asarray(x, np.float32)))[:, feature].detach().numpy()


def test_trace_is_the_dense_encode_column_over_the_clip_span(setup) -> None:
    sae, store = setup
    x = store.clip_tokens(LAYER, "b")
    # a feature that fires on some token of clip b
    feature = int(np.argmax(np.stack([_dense(sae, x, f).max() for f in range(64)])))
    tr = activation_over_time(sae, store, LAYER, feature, "b", duration_s=2.0)
    np.testing.assert_allclose(tr.acts, _dense(sae, x, feature), rtol=1e-5, atol=1e-6)
    assert tr.acts.max() > 0 and tr.note == ""
    np.testing.assert_allclose(tr.times, np.arange(8) * 2.0 / 8)  # 8 tokens spread over 2 s
    assert activation_over_time(sae, store, LAYER, feature, "b", duration_s=0).times[1] == pytest.approx(0.04)
    # Qwen2-Audio's 25 tokens per second: the last partial token dropped, or the clip cut to the 30 s window
    assert activation_over_time(sae, store, LAYER, feature, "b", duration_s=0.35).times[1] == pytest.approx(0.04)
    assert token_seconds(37, 1.5) == token_seconds(750, 35.0) == pytest.approx(0.04)
    assert token_seconds(8, 2.0) == pytest.approx(0.25)


def test_trace_says_why_it_is_empty(setup) -> None:
    sae, store = setup
    tr = activation_over_time(sae, store, LAYER, 0, "missing", 1.0)
    assert tr.acts.size == 0 and "no stored activations at layer 3" in tr.note


def test_activation_sample_is_seeded_and_stops_at_the_budget(setup) -> None:
    sae, store = setup
    s = activation_sample(sae, store, LAYER, token_budget=9, seed=0)
    index = store.index(LAYER)
    order = [index[i].clip_id for i in np.random.default_rng(0).permutation(len(index))]
    # clips in the seeded order until the budget is reached (the last one may overshoot it)
    n = np.cumsum([TOKENS[c] for c in order])
    assert s.clip_ids == order[: int(np.searchsorted(n, 9)) + 1]
    assert s.n_tokens == sum(TOKENS[c] for c in s.clip_ids) == s.acts.shape[0] >= 9
    assert activation_sample(sae, store, LAYER, token_budget=9, seed=0).clip_ids == s.clip_ids
    x = np.concatenate([store.clip_tokens(LAYER, c) for c in s.clip_ids])
    np.testing.assert_allclose(s.feature_values(7), _dense(sae, x, 7), rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyError, match="layer 1"):
        activation_sample(sae, store, 1, token_budget=9)


def test_an_empty_budget_samples_nothing(setup) -> None:
    sae, store = setup
    s = activation_sample(sae, store, LAYER, token_budget=0)
    assert (s.clip_ids, s.n_tokens, tuple(s.acts.shape)) == ([], 0, (0, 4))
