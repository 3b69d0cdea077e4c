"""The feature page's figures skip plotly's validation to build fast (``plots._figure``):
each must still pass it, and carry the data it was given."""

from __future__ import annotations

import functools
import json

import numpy as np
import plotly.graph_objects as go
import pytest

from ard_core.ui import plots


@functools.cache
def _figures() -> dict[str, go.Figure]:
    rng = np.random.default_rng(0)
    spec = -80 * rng.uniform(size=(64, 120)).astype(np.float32)
    times = np.arange(50) * 0.04
    return {
        "empty": plots.empty_figure("nothing here"),
        "density": plots.density_histogram(10 ** rng.uniform(-6, -1, 500), 1e-3, "#3"),
        "density, no features": plots.density_histogram(np.array([np.nan]), None, "#1"),
        "activations": plots.activation_histogram(np.r_[np.zeros(10), rng.uniform(0, 3, 40)], 50, 4),
        "activations, silent": plots.activation_histogram(np.zeros(10), 10, 1),
        "clip": plots.clip_activation_figure(spec, 0.01, times, rng.uniform(0, 2, 50), 2.0, 3.0),
        "clip, no trace": plots.clip_activation_figure(spec, 0.01, np.zeros(0), np.zeros(0), 1.2, None, "no store"),
        "inspect": plots.inspect_figure(spec, 0.01, 2.0, times, rng.uniform(0, 2, (3, 50)),
                                        ['<a href="?feature=s/1">one</a>', "two", "three"], ["s/1", "s/2", "s/3"],
                                        [2.0, 1.0, 4.0]),
        "inspect, nothing fires": plots.inspect_figure(spec, 0.01, 2.0, times, np.zeros((0, 50)), [], [], []),
    }


@pytest.mark.parametrize("name", list(_figures()))
def test_unvalidated_figures_pass_plotly_validation(name: str) -> None:
    fig = _figures()[name]
    checked = go.Figure(fig.to_plotly_json())  # raises ValueError on any invalid property
    assert json.loads(checked.to_json()) == json.loads(fig.to_json())


def test_density_histogram_bins_every_feature_and_marks_this_one() -> None:
    d = np.r_[10 ** np.linspace(-6, -1, 999), np.nan, 0.0]  # NaN dropped; 0 floored at 1e-7
    fig = plots.density_histogram(d, 1e-3, "#7")
    bars = fig.data[0]
    assert int(np.sum(bars.y)) == 1000
    assert np.min(bars.x) - bars.width / 2 == pytest.approx(-7.0)
    assert fig.layout.shapes[0].x0 == pytest.approx(-3.0) and fig.layout.annotations[0].text == "#7"


def test_clip_figure_sends_whole_decibels_and_the_trace() -> None:
    spec = np.array([[0.0, -10.4, -79.6, -120.0]], np.float32)
    acts = np.array([0.0, 1.5, 0.25])
    fig = plots.clip_activation_figure(spec, 0.5, np.array([0.0, 0.5, 1.0]), acts, 2.0)
    heat, trace = fig.data
    assert heat.z.dtype == np.uint8 and heat.z.tolist() == [[80, 70, 0, 0]]
    np.testing.assert_array_equal(trace.y, acts)
    assert fig.layout.yaxis2.range[1] == pytest.approx(1.05 * 1.5)


def test_unvalidated_figures_use_only_the_trace_types_their_template_keeps() -> None:
    for name, fig in _figures().items():
        assert {t.type for t in fig.data} <= set(plots._FAST_TRACES), name
