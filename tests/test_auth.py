"""Logins (``python app.py --auth FILE``): the users file, the logged-in annotator, the organiser's fixed
concept list and export, and that without --auth nothing changes."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from ui_fixtures import REPO, UiRun, run, start_app_process  # noqa: F401 (run is a fixture)

from ard_core.auth import AuthError, Users, add_user, hash_password, parse_line, verify_password

gradio_client = pytest.importorskip("gradio_client", reason="gradio_client is a test dependency")


def test_hash_round_trip_and_wrong_passwords() -> None:
    h = hash_password("s3cret", salt=b"0123456789abcdef", iterations=1000)
    assert h.startswith("pbkdf2_sha256$1000$30313233") and verify_password("s3cret", h)
    assert not verify_password("s3cret ", h) and not verify_password("", h)
    assert not verify_password("s3cret", "pbkdf2_sha256$1000$zz$00") and not verify_password("s3cret", "plain")
    assert hash_password("s3cret") != hash_password("s3cret")  # salted


@pytest.mark.parametrize("line, message", [
    ("alice", "expected user:password-hash"),
    ("alice:hunter2", "not a pbkdf2_sha256 hash"),
    (f"alice:{hash_password('x', iterations=10)}:admin", "role 'admin'"),
    (f"al ice:{hash_password('x', iterations=10)}", "user name"),
])
def test_bad_user_lines_say_what_is_wrong(line: str, message: str) -> None:
    with pytest.raises(AuthError, match=message):
        parse_line(line)


def test_users_file_from_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    for user, extra in (("ann", []), ("olga", ["--organiser"])):
        out = subprocess.run([sys.executable, "-m", "ard_core.auth", "add", str(path), user, "--password-stdin",
                              *extra], input=f"pw-{user}\n", capture_output=True, text=True, cwd=REPO, check=True)
        assert user in out.stdout
    users = Users.load(path)
    assert users.check("ann", "pw-ann") and not users.check("ann", "pw-olga") and not users.check("bob", "pw-ann")
    assert users.is_organiser("olga") and not users.is_organiser("ann") and not users.is_organiser(None)
    assert path.stat().st_mode & 0o077 == 0  # the hashes are not world-readable
    add_user(path, "ann", "new")  # replaced, not duplicated
    assert Users.load(path).check("ann", "new") and len(Users.load(path).users) == 2
    path.write_text(path.read_text() + path.read_text().splitlines()[-1] + "\n")
    with pytest.raises(AuthError, match="listed twice"):
        Users.load(path)


@pytest.fixture(scope="module")
def app_with_logins(run: UiRun, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("auth")
    users = tmp / "users.txt"
    add_user(users, "ann", "pw-ann")
    add_user(users, "ben", "pw-ben")
    add_user(users, "olga", "pw-olga", "organiser")
    app = start_app_process(run.catalog, tmp / "a.duckdb", tmp / "app.log", "--auth", str(users), "--no-model")
    yield app
    app.stop()


def _client(app, user: str):  # noqa: ANN001, ANN202
    return gradio_client.Client(app.url, auth=(user, f"pw-{user}"), verbose=False, download_files=False,
                                analytics_enabled=False, ssl_verify=False)


def test_without_a_login_the_api_is_closed(app_with_logins) -> None:
    with pytest.raises(Exception):
        gradio_client.Client(app_with_logins.url, verbose=False, download_files=False)
    with pytest.raises(Exception):
        gradio_client.Client(app_with_logins.url, auth=("ann", "wrong"), verbose=False, download_files=False)


def test_the_annotator_is_the_logged_in_user(app_with_logins) -> None:
    ann, ben = _client(app_with_logins, "ann"), _client(app_with_logins, "ben")
    out = ann.predict("somebody else", 2, 0, api_name="/annotate_start")  # the typed name is ignored
    state = out[0]
    assert "ann" in out[1] and "somebody" not in out[1]
    state = ann.predict(state, "a label", api_name="/annotate_label")[0]
    ann.predict(state, "4", api_name="/annotate_rate")
    # ben cannot answer in ann's session, even with her session id
    with pytest.raises(Exception, match="another annotator"):
        ben.predict(state, "not mine", api_name="/annotate_label")


@pytest.fixture
def ctx(run: UiRun, tmp_path: Path):
    from ard_core.ui.context import AppContext

    path = tmp_path / "users.txt"
    add_user(path, "ann", "a")
    add_user(path, "ben", "b")
    add_user(path, "olga", "o", "organiser")
    c = AppContext.open(run.catalog, load_model=False, annotations_path=tmp_path / "a.duckdb", clap="",
                        users=Users.load(path))
    yield c
    c.close()


def test_an_organiser_fixes_the_concept_list_for_everybody(ctx) -> None:
    from ard_core.ui import sessions
    from ard_core.ui.context import UserError

    assert sessions.session_plan(ctx, 5, 1) == (5, 1)  # nothing fixed: the annotator's own choice
    with pytest.raises(UserError, match="only an organiser"):
        sessions.fix_plan(ctx, "ann", 3, 7)
    assert "**3** concepts (seed 7), fixed by olga" in sessions.fix_plan(ctx, "olga", 3, 7)
    assert sessions.session_plan(ctx, 5, 1) == (3, 7)
    a = sessions.start(ctx, "ann", *sessions.session_plan(ctx, 20, 0)).session
    b = sessions.start(ctx, "ben", *sessions.session_plan(ctx, 1, 99)).session
    assert a.features == b.features and len(a.features) == 3  # the same concepts, in the same order
    assert "No concept list is fixed" in sessions.fix_plan(ctx, "olga", None, None)
    assert sessions.session_plan(ctx, 5, 1) == (5, 1)


def test_organisers_export_everything_annotators_their_own(ctx) -> None:
    from ard_core.ui import sessions

    for user in ("ann", "ben"):
        s = sessions.start(ctx, user, 2, 0).session
        sessions.submit_label(ctx, s.session_id, 0, f"label of {user}")
    rows = {u: list(csv.DictReader(sessions.export_for(ctx, u).open())) for u in ("ann", "olga")}
    assert [r["annotator"] for r in rows["ann"]] == ["ann"]
    assert sorted(r["annotator"] for r in rows["olga"]) == ["ann", "ben"]


def test_without_auth_nothing_changes(run: UiRun, tmp_path: Path) -> None:
    from ard_core.ui import sessions
    from ard_core.ui.context import AppContext

    c = AppContext.open(run.catalog, load_model=False, annotations_path=tmp_path / "a.duckdb", clap="")
    try:
        assert sessions.annotator_for(c, "typed name", None) == "typed name"
        c.annotations.fix_plan(3, 7, "left over from a run with --auth")
        assert sessions.session_plan(c, 5, 1) == (5, 1)  # a plan only binds under --auth
        assert len(list(csv.DictReader(sessions.export_for(c, None).open()))) == 0
    finally:
        c.close()


@pytest.mark.browser
def test_sign_in_in_the_browser_then_annotate_as_that_user(app_with_logins, tmp_path: Path) -> None:
    """The login page, then the Annotate tab: the name is the signed-in user's and cannot be edited; only the
    organiser sees the organiser's panel."""
    import shutil

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Debian chromium not found (.ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium,
                                    args=["--headless", "--no-sandbox", "--disable-gpu",
                                          "--disable-background-networking"])
        try:
            for user, organiser in (("ann", False), ("olga", True)):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(app_with_logins.url, wait_until="load")
                page.get_by_label("username").fill(user)
                page.get_by_label("password").fill(f"pw-{user}")
                page.get_by_role("button", name="Login").click()
                page.get_by_role("tab", name="Annotate").click()
                name = page.locator("#annot-name textarea, #annot-name input").first
                expect(name).to_have_value(user, timeout=60_000)
                expect(name).to_be_disabled()
                panel = page.locator("#annot-organiser")
                expect(panel).to_be_visible(timeout=60_000) if organiser else expect(panel).to_be_hidden()
                page.screenshot(path=str(tmp_path / f"annotate-{user}.png"), full_page=True)
                page.close()
        finally:
            browser.close()
