"""The app as an MCP server (``python app.py --mcp``): an agent lists its tools and calls them with the
official MCP client (the ``mcp`` package's streamable-HTTP transport, at Gradio's documented path
``/gradio_api/mcp/``)."""

from __future__ import annotations

import asyncio
import json

import pytest

from ui_fixtures import KINDS, UiRun, run, start_app_process  # noqa: F401 (run is a fixture)

mcp = pytest.importorskip("mcp", reason="the mcp package is a test dependency")
from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamablehttp_client  # noqa: E402

TOOLS = {"search_features", "feature", "inspect", "steer", "clip_view", "annotate_start", "annotate_label",
         "annotate_rate", "annotate_submit"}
"""Every public endpoint, under its own name."""


async def _session(url: str, work):  # noqa: ANN001, ANN202
    async with streamablehttp_client(url) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)


@pytest.fixture(scope="module")
def mcp_app(run: UiRun, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("mcp")
    app = start_app_process(run.catalog, tmp / "a.duckdb", tmp / "app.log", "--mcp", "--device", "cpu")
    yield app
    app.stop()


def test_mcp_lists_every_endpoint_as_a_described_tool(mcp_app) -> None:
    tools = asyncio.run(_session(mcp_app.url + "gradio_api/mcp/", lambda s: s.list_tools())).tools
    by = {t.name: t for t in tools}
    assert set(by) == TOOLS
    for t in tools:  # every tool says what it does, and every parameter has a name and a description
        assert len(t.description) > 40, t.name
        props = t.inputSchema["properties"]
        assert props and all(not k.startswith("param_") for k in props), (t.name, list(props))
        assert all(p.get("description") for p in props.values()), (t.name, props)
    assert {"text", "sae", "sort", "page_size"} <= set(by["search_features"].inputSchema["properties"])
    assert set(by["steer"].inputSchema["properties"]) >= {"audio", "question", "refs", "v0", "mode"}


def test_an_agent_searches_then_opens_a_feature(mcp_app, run: UiRun) -> None:
    ref = run.ref("noise", 2)

    async def work(s: ClientSession):  # noqa: ANN202
        found = await s.call_tool("search_features", {"text": KINDS["noise"][1], "sae": "All", "layer": "All",
                                                       "min_monosemanticity": 0, "named_only": False,
                                                       "sort": "rank", "descending": False, "page_size": "25",
                                                       "steers": "All"})
        opened = await s.call_tool("feature", {"ref": ref})
        return found, opened

    found, opened = asyncio.run(_session(mcp_app.url + "gradio_api/mcp/", work))
    assert not found.isError and ref in json.dumps([c.model_dump() for c in found.content])
    assert not opened.isError
    text = "".join(getattr(c, "text", "") for c in opened.content)
    assert KINDS["noise"][1] in text
