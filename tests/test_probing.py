"""Sparse probing on a store with a planted feature: the k = 1 probe finds the planted latent and separates
the classes; class means streamed batch by batch equal the plain means."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ard_core.probing import ClassMeans, clip_tasks, probe, top_difference, track_scores
from ard_core.sae import SaeConfig, TopKSAE
from ard_core.store import ActivationStore, ActivationWriter, StoreMeta

D, D_SAE, K, PLANTED, LAYER = 16, 64, 4, 37, 2


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """60 clips: 'female' ones carry direction u on some tokens, and u is latent PLANTED's decoder row.
    'language' labels are drawn at random (nothing to find)."""
    rng = np.random.default_rng(0)
    sae = TopKSAE(SaeConfig(d_in=D, d_sae=D_SAE, k=K))
    sae.reset_parameters(torch.Generator().manual_seed(1))
    u = sae.W_dec[PLANTED].detach().numpy().astype(np.float64)
    root = tmp_path_factory.mktemp("probe") / "activations"
    writer = ActivationWriter(root, StoreMeta(model="m", layers=[LAYER], d_model=D, dtype="float32"))
    labels, train, test = {}, set(), set()
    for i in range(60):
        cid = f"c{i:02d}"
        female = i % 2 == 1
        x = 0.3 * rng.standard_normal((12, D))
        if female:
            x[rng.random(12) < 0.5] += 3.0 * u
        writer.add(cid, LAYER, x.astype(np.float32), np.arange(12))
        labels[cid] = {"gender": "female" if female else "male", "language": ["English", "German"][rng.integers(2)]}
        (train if i < 40 else test).add(cid)
    writer.commit(0)
    return ActivationStore(root), sae, labels, train, test


def test_the_k1_probe_finds_the_planted_latent(planted):
    store, sae, labels, train, test = planted
    results = probe(store, LAYER, sae, labels, train, test, ks=[1, 5], batch_clips=7)
    by = {(r.track, r.label, r.k): r for r in results}
    for label in ("female", "male"):  # one-vs-rest on a two-label track: both tasks find it
        r1 = by[("gender", label, 1)]
        assert r1.features == [PLANTED]
        assert r1.accuracy >= 0.95 and r1.n_train == 40 and r1.n_test == 20
        assert by[("gender", label, 5)].features[0] == PLANTED
    scores = track_scores(results)
    assert scores[("gender", 1)].mean >= 0.95
    assert scores[("language", 1)].mean < scores[("gender", 1)].mean  # random labels: nothing planted


def test_raw_neurons_probe_too(planted):
    store, sae, labels, train, test = planted
    u = sae.W_dec[PLANTED].detach().numpy()
    results = probe(store, LAYER, None, labels, train, test, ks=[1])
    r = next(r for r in results if (r.track, r.label) == ("gender", "female"))
    assert r.features == [int(np.argmax(np.abs(u)))]  # the neuron u leans on most


def test_streamed_class_means_equal_the_plain_means():
    rng = np.random.default_rng(3)
    mu = rng.standard_normal((30, 5))
    labels = {f"c{i}": {"emotion": ["happy", "sad", "angry;sad"][i % 3]} for i in range(30)}
    pairs = clip_tasks(labels)
    ids = sorted(labels)
    tasks = sorted({t for c in ids for t in pairs[c]})
    cm = ClassMeans(tasks, 5)
    for i in range(0, 30, 7):
        cm.update(mu[i : i + 7], [pairs[c] for c in ids[i : i + 7]])
    for j, task in enumerate(tasks):
        on = np.array([task in pairs[c] for c in ids])
        pos, neg = cm.means(j)
        np.testing.assert_allclose(pos, mu[on].mean(0))
        np.testing.assert_allclose(neg, mu[~on].mean(0))


def test_top_difference_orders_by_absolute_difference_then_index():
    assert top_difference(np.array([0.0, 2.0, -1.0, 1.0]), np.zeros(4), 3) == [1, 2, 3]
    assert top_difference(np.array([1.0, -1.0]), np.zeros(2), 2) == [0, 1]

