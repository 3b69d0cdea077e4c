"""Hostile input against a live server: bad uploads and values get a clear message and the
app keeps serving; files outside the catalog's clip folders are never served.

The app runs in this process (a thread) with the tiny random model and a 4 MB upload
limit; requests go through gradio_client, or raw HTTP where the client itself refuses
to send them (NaN/inf in JSON, a file name with ``../``, a forged server path).
"""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
import pytest
import soundfile as sf

from ui_fixtures import REPO, UiRun, run, serve_in_thread  # noqa: F401 (run is a fixture)

from ard_core.audio import AudioLimits
from ard_core.ui.context import AppContext

gradio_client = pytest.importorskip("gradio_client", reason="gradio_client is a test dependency")

LIMIT_MB = 4
SR = 16_000


@pytest.fixture(scope="module")
def server(run: UiRun, tmp_path_factory: pytest.TempPathFactory):
    ctx = AppContext.open(run.catalog, annotations_path=tmp_path_factory.mktemp("hostile") / "a.duckdb", clap="",
                          device="cpu", audio_limits=AudioLimits(max_bytes=LIMIT_MB * 2**20, max_seconds=30))
    with serve_in_thread(ctx) as url:
        client = gradio_client.Client(url, verbose=False, download_files=False, analytics_enabled=False)
        yield url, client, ctx
    ctx.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uploads")


def _tone(seconds: float, sr: int = SR, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _steer(client, audio: Any, ref: str, value: float = 20.0) -> tuple:
    """The /steer endpoint: 1 feature, labels male/female, 2 new tokens."""
    return client.predict(audio, "What is the gender of the speaker?", "The speaker's gender is", "male, female",
                          [ref], value, 0, 0, 0, "set", ["audio", "prompt"], 2, api_name="/steer")


def _assert_still_serving(client, run: UiRun) -> None:
    """The next normal request succeeds: a catalog clip steered as usual."""
    clip = str(run.clips_dir / "hum_00.wav")
    summary, original, steered, probs = _steer(client, gradio_client.handle_file(clip), run.ref("hum"))[:4]
    assert summary.startswith(f"Steered {run.ref('hum')} = 20")
    assert original and steered
    assert [r[0] for r in probs["data"]] == ["male", "female"]


# -- uploads that are refused ------------------------------------------------------------------------
def _text(p: Path) -> None:
    p.write_text("Dear diary, this is not a recording.\n" * 50)


def _truncated_header(p: Path) -> None:
    sf.write(p, _tone(1.0), SR)
    p.write_bytes(p.read_bytes()[:30])  # cut inside the fmt chunk


def _header_claims_more(p: Path) -> None:
    """31 ms of audio under a header that claims a whole second (a recording cut off mid-write)."""
    sf.write(p, _tone(0.031), SR, subtype="PCM_16")
    data = bytearray(p.read_bytes())
    at = data.find(b"data")
    data[at + 4:at + 8] = (2 * SR).to_bytes(4, "little")
    data[4:8] = (2 * SR + 36).to_bytes(4, "little")
    p.write_bytes(bytes(data))


def _zero_length(p: Path) -> None:
    p.write_bytes(b"")


def _all_nan(p: Path) -> None:
    sf.write(p, np.full(SR, np.nan, dtype=np.float32), SR, subtype="FLOAT")


REFUSED: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "text renamed .wav": ("notes.wav", _text, "'notes.wav' is not an audio file this app reads"),
    "truncated WAV header": ("cut.wav", _truncated_header, "'cut.wav' starts like a WAV file but its header cannot "
                                                           "be read"),
    "header claims more than it holds (31 ms)": ("short.wav", _header_claims_more,
                                                 "'short.wav' is too short: 31 ms of audio (496 samples); the model "
                                                 "needs at least 61 ms (961 samples at 16000 Hz)"),
    "zero-length file": ("empty.wav", _zero_length, "'empty.wav' is empty (0 bytes)"),
    "all-NaN samples": ("nan.wav", _all_nan, "'nan.wav' contains NaN or infinite samples"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_upload_is_refused_with_a_message_and_the_app_keeps_serving(server, run: UiRun, files: Path,
                                                                        case: str) -> None:
    _, client, _ = server
    name, make, message = REFUSED[case]
    path = files / name
    make(path)
    with pytest.raises(Exception) as info:
        _steer(client, gradio_client.handle_file(str(path)), run.ref("hum"))
    assert message in str(info.value)
    assert str(files) not in str(info.value)  # no server or client folders in the message
    _assert_still_serving(client, run)


def test_file_over_the_size_limit_is_refused_before_it_is_stored(server, run: UiRun, files: Path) -> None:
    url, client, _ = server
    path = files / "huge.wav"
    sf.write(path, _tone(LIMIT_MB * 2**20 / 2 / SR + 2.0), SR)  # 16-bit: 2 bytes a sample, ~2 s over
    assert path.stat().st_size > LIMIT_MB * 2**20
    # gradio_client reads the limit from the app's config and refuses to send the file ...
    with pytest.raises(Exception, match="exceeds the maximum file size"):
        _steer(client, gradio_client.handle_file(str(path)), run.ref("hum"))
    # ... and the server refuses it too when a client sends it anyway
    with path.open("rb") as fh:
        r = httpx.post(url + "gradio_api/upload", files={"files": ("huge.wav", fh, "audio/wav")}, timeout=60)
    assert r.status_code == 413 and f"maximum allowed size of {LIMIT_MB * 2**20} bytes" in r.text
    _assert_still_serving(client, run)


# -- uploads that are normalised -------------------------------------------------------------------------
def test_ten_minute_clip_is_cut_to_the_cap_with_a_notice(server, run: UiRun, files: Path) -> None:
    _, client, _ = server
    path = files / "lecture.flac"
    sf.write(path, _tone(600.0, sr=8000, freq=110.0), 8000)  # FLAC keeps 10 minutes of a tone under the limit
    assert path.stat().st_size < LIMIT_MB * 2**20
    summary = _steer(client, gradio_client.handle_file(str(path)), run.ref("hum"))[0]
    assert summary.startswith(f"Steered {run.ref('hum')} = 20")
    assert "'lecture.flac' is 600.0 s long; only its first 30 s are used." in summary
    _assert_still_serving(client, run)


def test_eight_channels_are_mixed_to_mono(server, run: UiRun, files: Path) -> None:
    """Reference: the same request on the mono mix-down written as a plain file."""
    _, client, _ = server
    x = np.random.default_rng(1).uniform(-0.3, 0.3, (2 * SR, 8)).astype(np.float32)
    sf.write(files / "octo.wav", x, SR, subtype="FLOAT")
    sf.write(files / "octo-mono.wav", x.mean(axis=1), SR, subtype="FLOAT")
    got = _steer(client, gradio_client.handle_file(str(files / "octo.wav")), run.ref("noise"))
    want = _steer(client, gradio_client.handle_file(str(files / "octo-mono.wav")), run.ref("noise"))
    assert got[1:3] == want[1:3]  # original and steered answers
    assert got[3]["data"] == want[3]["data"]  # label probabilities


def test_192_khz_and_mp3_are_read_at_the_models_rate(server, run: UiRun, files: Path) -> None:
    _, client, _ = server
    sf.write(files / "hires.wav", _tone(2.0, sr=192_000), 192_000)
    sf.write(files / "tone.mp3", _tone(2.0), SR, format="MP3")  # libsndfile >= 1.1 writes MP3
    assert (files / "tone.mp3").read_bytes()[:2] in (b"ID", b"\xff\xf3", b"\xff\xfb", b"\xff\xf2")
    for name in ("hires.wav", "tone.mp3"):
        summary, original, steered, probs = _steer(client, gradio_client.handle_file(str(files / name)),
                                                   run.ref("hum"))[:4]
        assert summary.startswith(f"Steered {run.ref('hum')} = 20") and "only its first" not in summary
        assert original and steered and len(probs["data"]) == 2


# -- names and paths -----------------------------------------------------------------------------
def test_upload_name_with_dot_dot_stays_in_the_upload_folder(server, run: UiRun, files: Path) -> None:
    url, client, _ = server
    target = files / "escaped.wav"
    evil = "../" * 12 + str(target).lstrip("/")  # what a traversal would write to
    stored = Path(_upload(url, run.clips_dir / "beep_01.wav", name=evil)["path"])
    assert stored.name == "escaped.wav" and ".." not in stored.parts
    assert not target.exists()
    assert stored.read_bytes() == (run.clips_dir / "beep_01.wav").read_bytes()
    # the stored upload is usable as an ordinary clip
    summary = _steer(client, {"path": str(stored), "meta": {"_type": "gradio.FileData"}}, run.ref("beep"))[0]
    assert summary.startswith(f"Steered {run.ref('beep')} = 20")


def _call_raw(url: str, api: str, body: str) -> tuple[str, Any]:
    """POST ``body`` (JSON text, NaN allowed) to /call/<api>; the final (event, data) of its stream."""
    r = httpx.post(f"{url}gradio_api/call/{api}", content=body, headers={"content-type": "application/json"},
                   timeout=30)
    assert r.status_code == 200, r.text
    stream = httpx.get(f"{url}gradio_api/call/{api}/{r.json()['event_id']}", timeout=120).text
    events = [ln.split(": ", 1)[1] for ln in stream.splitlines() if ln.startswith("event: ")]
    datas = [ln.split(": ", 1)[1] for ln in stream.splitlines() if ln.startswith("data: ")]
    return events[-1], json.loads(datas[-1])


def _upload(url: str, path: Path, name: str | None = None) -> dict:
    """POST ``path`` to /upload (as ``name``); the FileData of the stored copy."""
    with path.open("rb") as fh:
        r = httpx.post(url + "gradio_api/upload", files={"files": (name or path.name, fh, "audio/wav")}, timeout=30)
    assert r.status_code == 200, r.text
    return {"path": r.json()[0], "meta": {"_type": "gradio.FileData"}}


def _steer_body(audio: Any, ref: str, value: str, max_new: str = "2", question: str = "q?") -> str:
    return (f'{{"data": [{json.dumps(audio)}, {json.dumps(question)}, "", "male, female", ["{ref}"], {value}, 0, 0, 0, '
            f'"set", ["audio"], {max_new}]}}')


def test_forged_server_paths_are_refused(server, run: UiRun) -> None:
    url, client, _ = server
    for path in ("/etc/passwd", str(REPO / "pyproject.toml"), "../../../../../etc/passwd", str(run.catalog)):
        event, data = _call_raw(url, "steer", _steer_body({"path": path, "meta": {"_type": "gradio.FileData"}},
                                                          run.ref("hum"), "20"))
        assert event == "error", (path, data)
        assert "root:" not in json.dumps(data)
    _assert_still_serving(client, run)


# -- values and references -----------------------------------------------------------------------
@pytest.mark.parametrize("value, message", [
    ("NaN", "is nan; use a finite number from -10000 to 10000"),
    ("Infinity", "greater than maximum value"),
    ("-Infinity", "less than minimum value"),
    ("1e6", "greater than maximum value"),
])
def test_steering_value_nan_inf_or_out_of_range(server, run: UiRun, value: str, message: str) -> None:
    url, client, _ = server
    clip = _upload(url, run.clips_dir / "hum_00.wav")
    event, data = _call_raw(url, "steer", _steer_body(clip, run.ref("hum"), value))
    assert event == "error" and message in data["error"]
    _assert_still_serving(client, run)


def test_other_steer_inputs_out_of_range(server, run: UiRun) -> None:
    url, client, _ = server
    clip = _upload(url, run.clips_dir / "hum_00.wav")
    event, data = _call_raw(url, "steer", _steer_body(clip, run.ref("hum"), "1", max_new="NaN"))
    assert event == "error" and "max new tokens is nan" in data["error"]
    event, data = _call_raw(url, "steer", _steer_body(clip, run.ref("hum"), "1", question="why? " * 1000))
    assert event == "error" and "the question is 5000 characters long" in data["error"]
    _assert_still_serving(client, run)


@pytest.mark.parametrize("ref, message", [
    ("tiny-random-l1-e4/99999", "feature tiny-random-l1-e4/99999 is not in the catalog"),
    ("tiny-random-l9-e4/5", "no SAE 'tiny-random-l9-e4' in this catalog"),
    ("../../etc/passwd", "must be SAE_ID/K"),
])
def test_feature_that_does_not_exist(server, run: UiRun, ref: str, message: str) -> None:
    _, client, _ = server
    with pytest.raises(Exception, match=message.replace("(", r"\(")):
        _steer(client, gradio_client.handle_file(str(run.clips_dir / "hum_00.wav")), ref)
    with pytest.raises(Exception, match="SAE"):
        client.predict(ref, api_name="/feature")
    _assert_still_serving(client, run)


# -- what the server serves ------------------------------------------------------------------------
def _get(url: str, path: str) -> httpx.Response:
    """GET ``path`` verbatim (no client-side normalisation of ``..``)."""
    with httpx.Client(timeout=30) as c:
        return c.send(c.build_request("GET", httpx.URL(url).copy_with(raw_path=path.encode())))


def test_only_files_under_the_clip_folders_are_served(server, run: UiRun, tmp_path: Path) -> None:
    url, _, ctx = server
    clips = str(run.clips_dir)
    clip = run.clips_dir / "hum_00.wav"
    assert ctx.catalog.clip_folders() == [str(run.clips_dir.resolve())]
    # served: a clip, also when the path takes a detour that stays inside the clip folder (so the refusals
    # below are the server's path check, not the router rejecting '..')
    for path in (str(clip), f"{clips}/../clips/hum_00.wav", f"{clips}/%2e%2e/clips/hum_00.wav",
                 f"{clips}/..%2fclips%2fhum_00.wav"):
        ok = _get(url, f"/gradio_api/file={path}")
        assert ok.status_code == 200 and ok.content == clip.read_bytes(), path

    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    link = run.clips_dir / "link-to-secret.wav"  # a symlink inside the clip folder pointing out of it
    os.symlink(secret, link)
    try:
        refused = [
            "/etc/passwd", str(REPO / "pyproject.toml"), "pyproject.toml", str(run.catalog),
            str(ctx.annotations.path), str(run.catalog.parent / "activations" / "meta.json"), str(secret), str(link),
            f"{clips}/../../run/catalog.duckdb", f"{clips}/../../../../../../etc/passwd",
            urllib.parse.quote(f"{clips}/../../run/catalog.duckdb", safe=""),
            f"{clips}/%2e%2e/%2e%2e/run/catalog.duckdb", f"{clips}/..%2f..%2frun%2fcatalog.duckdb",
            "~/.bashrc", "file:///etc/passwd",
        ]
        for path in refused:
            r = _get(url, f"/gradio_api/file={path}")
            assert r.status_code == 403, (path, r.status_code)
            assert b"root:" not in r.content and b"top secret" not in r.content and b"DUCK" not in r.content
        assert _get(url, "/file=/etc/passwd").status_code == 404  # no route outside /gradio_api serves files
    finally:
        link.unlink()


def test_catalog_files_are_blocked_even_inside_a_clip_folder(server, run: UiRun) -> None:
    """If clips sat beside the catalog, its run folder would be an allowed path: the blocklist still holds."""
    from gradio.utils import is_allowed_file

    _, _, ctx = server
    blocked = ctx.catalog.private_paths(ctx.annotations.path)
    run_dir = str(run.catalog.parent.resolve())
    for path in (run.catalog, ctx.annotations.path, run.catalog.parent / "activations" / "meta.json"):
        assert is_allowed_file(Path(path).resolve(), blocked, [run_dir], []) == (False, "in_blocklist")
    clip = run.catalog.parent / "saes"
    assert is_allowed_file(clip.resolve(), blocked, [run_dir], [])[0]  # other files of the folder stay allowed
