"""The app's API driven with the real Gradio client (gradio_client) against a live server."""

from __future__ import annotations

import pytest

from ui_fixtures import KINDS, UiRun, run, serve_in_thread  # noqa: F401 (run is a fixture)

from ard_core.catalog import ConceptQuery
from ard_core.ui import concepts, feature
from ard_core.ui import steer as steer_tab
from ard_core.ui.context import AppContext

gradio_client = pytest.importorskip("gradio_client", reason="gradio_client is a test dependency")


@pytest.fixture(scope="module")
def served(run: UiRun, tmp_path_factory: pytest.TempPathFactory):
    """The app in this process (a thread), on a free port, with the tiny random model."""
    ctx = AppContext.open(run.catalog, annotations_path=tmp_path_factory.mktemp("api") / "a.duckdb", clap="",
                          device="cpu")
    with serve_in_thread(ctx) as url:
        client = gradio_client.Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("dl")),
                                      analytics_enabled=False)
        yield client, ctx
        client.close() if hasattr(client, "close") else None
    ctx.close()


def test_api_lists_the_endpoints(served) -> None:
    client, _ = served
    info = client.view_api(print_info=False, return_format="dict")
    names = set(info["named_endpoints"])
    assert {"/search_features", "/feature", "/steer", "/annotate_start", "/annotate_label", "/annotate_rate",
            "/annotate_submit"} <= names


def test_search_through_the_client_equals_the_handler(served) -> None:
    client, ctx = served
    table, summary, page, refs = client.predict("beep", "All", "All", 0, False, "monosemanticity", True, "25",
                                          api_name="/search_features")
    want = concepts.search_features(ctx, ConceptQuery("beep", sort="monosemanticity", descending=True))
    assert [row[0] for row in table["data"]] == want.refs == refs
    assert table["headers"] == concepts.COLUMNS
    assert summary == want.summary and page == 1


def test_feature_endpoint_returns_the_feature_as_json(served, run: UiRun) -> None:
    client, ctx = served
    ref = run.ref("noise", 2)
    got = client.predict(ref, api_name="/feature")
    want = feature.feature_json(ctx, ref)
    assert got["name"] == KINDS["noise"][1] == want["name"]
    assert [t["clip_id"] for t in got["top"]] == [t["clip_id"] for t in want["top"]]
    assert got["top"][0]["activation"] == pytest.approx(want["top"][0]["activation"])
    with pytest.raises(Exception, match="no SAE"):
        client.predict("no-such-l1-e2/1", api_name="/feature")


def test_steer_endpoint_matches_the_handler(served, run: UiRun) -> None:
    client, ctx = served
    clip = steer_tab.clip_audio_path(ctx, "noise_02")
    p = steer_tab.presets(ctx)["gender: question (P2)"]
    ref = run.ref("noise", 1)
    out = client.predict(gradio_client.handle_file(clip), p.question, p.prefix, "male, female", [ref],
                         30.0, 0, 0, 0, "set", ["audio", "prompt"], 4, api_name="/steer")
    summary, original, steered, probs = out[:4]
    want = steer_tab.run_steer(ctx, clip, p.question, p.prefix, "male, female", [ref], [30.0], "set",
                               ["audio", "prompt"], 4)
    assert (original, steered) == (want.original, want.steered)
    assert summary == want.summary
    assert [r[0] for r in probs["data"]] == ["male", "female"]
    assert [r[2] for r in probs["data"]] == pytest.approx(list(want.probs["steered"]))


def test_annotation_through_the_client_is_stored(served) -> None:
    client, ctx = served
    # the session state comes back as the first output and goes back in as the first input
    state = client.predict("api client", 2, 0, api_name="/annotate_start")[0]
    assert state["index"] == 0 and state["session_id"]
    state = client.predict(state, "from the api", api_name="/annotate_label")[0]
    state = client.predict(state, "3", api_name="/annotate_rate")[0]
    assert state["index"] == 1
    answers = ctx.annotations.answers(annotator="api client")
    assert [(a.label, a.rating) for a in answers] == [("from the api", 3)]
    session = ctx.annotations.start_or_resume("api client", 2, 0, ctx.catalog.named_features())
    assert answers[0].ref == session.features[0]


def _readme_api_table() -> dict[str, list[str]]:
    """The README's API table: endpoint -> its parameters, in order."""
    from pathlib import Path
    import re

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("**API.**", 1)[1].split("```python", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `(/\w+)` \| (.*?) \| ", line)
        if m:
            rows[m.group(1)] = re.findall(r"`(\w+)`", m.group(2))
    return rows


def test_the_readme_lists_every_endpoint_with_its_named_parameters(served) -> None:
    client, _ = served
    info = client.view_api(print_info=False, return_format="dict")
    assert info["unnamed_endpoints"] == {}
    live = {name: [p["parameter_name"] for p in ep["parameters"]] for name, ep in info["named_endpoints"].items()}
    assert _readme_api_table() == live
    assert not any(name.startswith("/lambda") for name in live)
    for name, params in live.items():  # named, never param_0 ...
        assert all(p and not p.startswith("param_") for p in params), (name, params)
