"""Concurrent annotators against ``app.py`` in a subprocess: nothing lost, nothing doubled,
and everything still there after the server is SIGKILLed and started again.

20 annotators (threads, each with its own gradio_client.Client, so its own Gradio
session and state) answer 50 concepts each at the same time: 1,000 answers. Each
does its first concepts as the tab does (label, then rate: two requests, the concept
held in the page's state) and the rest through ``annotate_submit``, which names the
concept; every tenth request is sent twice, as a client retry would.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from pathlib import Path

import pytest

from ui_fixtures import UiRun, start_app_process, ui_run_dir

from ard_core.catalog import AnnotationStore, Catalog, FeatureRow

gradio_client = pytest.importorskip("gradio_client", reason="gradio_client is a test dependency")

N_ANNOTATORS = 20
N_EACH = 50
N_TAB = 5
"""Concepts each annotator answers through the tab's label/rate events; the rest go to annotate_submit."""
SEED = 7


def _name(i: int) -> str:
    return f"annotator {i:02d}"


def _label(i: int, j: int) -> str:
    return f"{_name(i)} label {j}"


def _rating(i: int, j: int) -> int:
    return (i + j) % 6


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the fixture catalog with every live feature named, so that a session can hold 50 concepts."""
    run: UiRun = ui_run_dir(tmp_path_factory.getbasetemp())
    path = tmp_path_factory.mktemp("annotators") / "catalog.duckdb"
    shutil.copy(run.catalog, path)
    with Catalog.open(path) as cat:
        live = cat.rows(FeatureRow, "density > 0")
        cat.upsert([dataclasses.replace(r, name=r.name or f"texture {r.feature}") for r in live])
    assert len(live) >= N_EACH
    return path


def _client(url: str):
    # ssl_verify=False: plain http to localhost; with it on, httpx builds a CA store for every request
    # (~90 ms of CPU each), which would make this test measure gradio_client rather than the app
    return gradio_client.Client(url, verbose=False, download_files=False, analytics_enabled=False, ssl_verify=False)


def _session_features(catalog: Path) -> tuple[str, ...]:
    """The concepts a session (any name, N_EACH, SEED) draws: the app's own sampling, on a scratch store."""
    from ard_core.ui import annotate
    from ard_core.ui.context import AppContext

    scratch = catalog.with_name("scratch.annotations.duckdb")
    ctx = AppContext.open(catalog, load_model=False, annotations_path=scratch, clap="")
    try:
        return annotate.start(ctx, "scratch", N_EACH, SEED).session.features
    finally:
        ctx.close()


def _status(outputs: tuple) -> str:
    """The session line of the Annotate tab's outputs (plain Markdown, or a callout when complete)."""
    return next(o for o in outputs if isinstance(o, str) and "Session" in o and "rated" in o)


def _annotate(url: str, i: int, features: tuple[str, ...], ready: threading.Barrier,
              errors: list[BaseException]) -> None:
    """Annotator ``i``: ``features`` are the session's concepts in order (the same seed for everybody)."""
    try:
        client = _client(url)
        out = client.predict(_name(i), N_EACH, SEED, api_name="/annotate_start")
        assert "0 of 50 rated" in _status(out)
        state = out[0]  # the session state: the first output, passed back as the first input
        ready.wait(timeout=300)  # everybody submits at once
        for j in range(N_TAB):
            state = client.predict(state, _label(i, j), api_name="/annotate_label")[0]
            if j == 0:
                client.predict(state, _label(i, j), api_name="/annotate_label")  # a retried submission
            out = client.predict(state, str(_rating(i, j)), api_name="/annotate_rate")
            state = out[0]
            assert f"{j + 1} of {N_EACH} rated" in _status(out)
        for j in range(N_TAB, N_EACH):
            args = (_name(i), N_EACH, SEED, features[j], _label(i, j), _rating(i, j))
            for _ in range(2 if j % 10 == 0 else 1):  # every tenth one retried
                got = client.predict(*args, api_name="/annotate_submit")
            assert (got["ref"], got["label"], got["rating"], got["n_rated"]) == (features[j], _label(i, j),
                                                                                 _rating(i, j), j + 1)
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)
        ready.abort()


def _check_store(path: Path) -> None:
    """All 1,000 answers, once each, with the label and rating each annotator sent for each concept."""
    with AnnotationStore(path) as store:
        answers = store.answers()
        assert len(answers) == N_ANNOTATORS * N_EACH
        keys = [(a.session_id, a.ref) for a in answers]
        assert len(set(keys)) == len(keys)
        sessions = {s.annotator: s for s in store.sessions()}
        assert sorted(sessions) == [_name(i) for i in range(N_ANNOTATORS)]
        for i in range(N_ANNOTATORS):
            s = sessions[_name(i)]
            mine = {a.ref: (a.label, a.rating) for a in answers if a.annotator == _name(i)}
            assert mine == {s.features[j]: (_label(i, j), _rating(i, j)) for j in range(N_EACH)}


def test_twenty_annotators_at_once_then_sigkill_and_restart(catalog: Path, tmp_path: Path) -> None:
    annotations = tmp_path / "catalog.annotations.duckdb"
    log = tmp_path / "app.log"
    app = start_app_process(catalog, annotations, log, "--no-model", "--device", "cpu")
    try:
        errors: list[BaseException] = []
        ready = threading.Barrier(N_ANNOTATORS + 1)
        features = _session_features(catalog)
        threads = [threading.Thread(target=_annotate, args=(app.url, i, features, ready, errors))
                   for i in range(N_ANNOTATORS)]
        for t in threads:
            t.start()
        ready.wait(timeout=300)
        t0 = time.perf_counter()
        for t in threads:
            t.join(timeout=600)
        seconds = time.perf_counter() - t0
        assert errors == [], f"{errors[:3]}\n{app.log_tail()}"
        n_calls = N_ANNOTATORS * (2 * N_TAB + 1 + (N_EACH - N_TAB) + len(range(N_TAB, N_EACH, 10)))
        print(f"\n{N_ANNOTATORS * N_EACH} annotations ({n_calls} calls) from {N_ANNOTATORS} annotators in "
              f"{seconds:.1f} s ({n_calls / seconds:.0f} calls/s)")
        app.kill()  # SIGKILL: no shutdown, no checkpoint
        assert app.proc.returncode == -9

        # what is on disk right after the kill (a copy, so that the restart below replays the same files)
        snapshot = tmp_path / "snapshot"
        snapshot.mkdir()
        for f in tmp_path.glob("catalog.annotations.duckdb*"):
            shutil.copy(f, snapshot / f.name)
        _check_store(snapshot / annotations.name)

        app = start_app_process(catalog, annotations, log, "--no-model", "--device", "cpu")
        client = _client(app.url)
        for i in range(N_ANNOTATORS):
            status = _status(client.predict(_name(i), N_EACH, SEED, api_name="/annotate_start"))
            assert f"<b>{N_EACH} of {N_EACH} rated</b>" in status and "Session complete" in status
    finally:
        app.stop()
    _check_store(annotations)
