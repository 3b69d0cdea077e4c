"""End to end: ``python app.py`` on the fixture catalog, driven by Playwright in headless Debian chromium.

Covers: Concepts search -> open a feature (audio players, plots), the ``?feature=`` deep
link, an annotation that survives a page reload, a live steering request on the tiny random
model, and a feature page's steer button that opens the Steer tab pre-filled and steers.
Screenshots of each step go to the test's tmp dir.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from ui_fixtures import KINDS, UiRun, run, start_app_process  # noqa: F401 (run is a fixture)

from ard_core.catalog import Catalog

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SLOW = 60_000  # ms: generous for 2 busy CPU cores; no assertion depends on speed

if CHROMIUM is None:
    pytest.skip("Debian chromium not found (install with `apt-get install -y chromium`; .ci/run does)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency (pip install -e '.[test]')")
expect = sync_api.expect


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def server(run: UiRun, tmp_path_factory: pytest.TempPathFactory):
    """The real CLI in a subprocess, on a free port, with its own annotations file."""
    tmp = tmp_path_factory.mktemp("e2e-app")
    try:
        app = start_app_process(run.catalog, tmp / "annotations.duckdb", tmp / "app.log", "--device", "cpu")
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield app.url
    app.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    audio: list[tuple[str, int]] = []  # (url, status) of every audio file the page fetched
    pg.on("response", lambda r: audio.append((r.url, r.status)) if re.search(r"file=.*\.wav", r.url) else None)
    pg.audio_fetches = audio
    yield pg
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def _open(page, url: str) -> None:
    page.goto(url, wait_until="load")
    page.wait_for_selector("#concepts-table", timeout=SLOW)


def _wait_audio(page, n: int) -> set[str]:
    """Wait until the page has fetched ``n`` distinct audio files, all answered 200 (players load them lazily)."""
    deadline = time.time() + SLOW / 1000
    while True:
        ok = {u.split("file=")[1].rsplit("/", 1)[-1] for u, status in page.audio_fetches if status == 200}
        if len(ok) >= n or time.time() > deadline:
            assert all(status == 200 for _, status in page.audio_fetches), page.audio_fetches
            return ok
        page.wait_for_timeout(200)


def _visible_count(locator) -> int:
    return sum(locator.nth(i).is_visible() for i in range(locator.count()))


def test_search_then_open_a_feature(page, server: str, run: UiRun, shots: Path) -> None:
    _open(page, server)
    expect(page.locator("#concepts-info")).to_contain_text("256 features")
    box = page.locator("#concepts-search textarea, #concepts-search input").first
    box.fill("beep")
    box.press("Enter")
    expect(page.locator("#concepts-info")).to_contain_text("2 features", timeout=SLOW)
    table = page.locator("#concepts-table")
    expect(table).not_to_contain_text("low hum")
    page.screenshot(path=str(shots / "1-concepts-search.png"), full_page=True)

    table.get_by_text(KINDS["beep"][1]).filter(visible=True).first.click()
    header = page.locator("#feature-header")
    expect(header).to_contain_text(KINDS["beep"][1], timeout=SLOW)
    expect(page.locator("#tab-feature")).to_be_visible()
    # three top and three bottom clips, each with an audio player and an activation plot
    cards = page.locator("#tab-feature .ard-card")
    expect(cards.first).to_be_visible(timeout=SLOW)
    assert _visible_count(cards) == 6
    for i in range(3):
        card = page.locator(f"#top-clip-{i}")
        expect(card.locator("audio").first).to_be_attached()
        expect(card.locator(".js-plotly-plot").first).to_be_visible(timeout=SLOW)
        expect(card).to_contain_text("beep_")  # the planted feature's top clips are the beeps
    expect(page.locator("#feature-density .js-plotly-plot")).to_be_visible()
    expect(page.locator("#feature-hist .js-plotly-plot")).to_be_visible()
    # the players fetched their clips from the server: the 3 beeps and 3 bottom clips
    fetched = _wait_audio(page, 6)
    ref = page.locator("#feature-ref textarea, #feature-ref input").first.input_value()
    with Catalog.open(run.catalog, read_only=True) as cat:
        clips = [e.clip_id for e in cat.feature_page(ref).examples]  # its 'ard' top and bottom clips
    assert fetched == {f"{c}.wav" for c in clips}
    page.screenshot(path=str(shots / "2-feature.png"), full_page=True)

    # next feature: the SAE's following index
    ref_box = page.locator("#feature-ref textarea, #feature-ref input").first
    sae_id, k = ref_box.input_value().split("/")
    page.locator("#feature-next").click()
    expect(page.locator("#feature-header")).to_contain_text(f"{sae_id}/{int(k) + 1}", timeout=SLOW)
    expect(ref_box).to_have_value(f"{sae_id}/{int(k) + 1}")


def test_deep_link_opens_the_feature_page(page, server: str, run: UiRun, shots: Path) -> None:
    ref = run.ref("clicks", layer=2)
    page.goto(f"{server}?feature={ref}", wait_until="load")
    expect(page.locator("#feature-header")).to_contain_text(KINDS["clicks"][1], timeout=SLOW)
    expect(page.locator("#feature-header")).to_contain_text(ref)
    assert page.locator("#feature-ref textarea, #feature-ref input").first.input_value() == ref
    expect(page.locator("#top-clip-0 .js-plotly-plot").first).to_be_visible(timeout=SLOW)
    page.screenshot(path=str(shots / "3-deep-link.png"), full_page=True)
    # a bad link says why, without a traceback
    page.goto(f"{server}?feature=no-such-sae-l1-e2/3", wait_until="load")
    expect(page.get_by_text("no SAE 'no-such-sae-l1-e2'").first).to_be_visible(timeout=SLOW)
    expect(page.get_by_text("Traceback")).to_have_count(0)


def test_annotation_persists_after_reload(page, server: str, shots: Path) -> None:
    _open(page, server)
    page.get_by_role("tab", name="Annotate").click()
    page.locator("#annot-name textarea, #annot-name input").first.fill("e2e tester")
    page.locator("#annot-n input").first.fill("3")
    page.locator("#annot-start").click()
    status = page.locator("#annot-status")
    expect(status).to_contain_text("0 of 3 rated", timeout=SLOW)
    expect(page.locator("#annot-reveal")).to_be_hidden()  # blind: no automatic name yet
    assert len(_wait_audio(page, 1)) >= 1
    page.locator("#annot-label textarea, #annot-label input").first.fill("buzzing tone")
    page.locator("#annot-save-label").click()
    expect(page.locator("#annot-reveal")).to_contain_text("Automatic name", timeout=SLOW)
    page.locator("#annot-rating").get_by_text("4", exact=True).click()
    page.locator("#annot-save-rating").click()
    expect(status).to_contain_text("1 of 3 rated", timeout=SLOW)
    page.screenshot(path=str(shots / "4-annotate.png"), full_page=True)

    page.reload(wait_until="load")
    page.wait_for_selector("#concepts-table", timeout=SLOW)
    page.get_by_role("tab", name="Annotate").click()
    name = page.locator("#annot-name textarea, #annot-name input").first
    expect(name).to_have_value("e2e tester", timeout=SLOW)  # remembered by the browser
    page.locator("#annot-n input").first.fill("3")
    page.locator("#annot-start").click()
    expect(status).to_contain_text("1 of 3 rated", timeout=SLOW)
    answers = page.locator("#annot-answers")
    expect(answers).to_contain_text("buzzing tone")
    expect(answers).to_contain_text("4")
    page.screenshot(path=str(shots / "5-annotate-after-reload.png"), full_page=True)


def test_steering_request_on_the_tiny_model(page, server: str, run: UiRun, shots: Path) -> None:
    _open(page, server)
    page.get_by_role("tab", name="Steer").click()
    clip = page.locator("#steer-clip input")
    clip.click()
    page.get_by_role("option").filter(has_text="beep_01").first.click()
    expect(page.locator("#steer-audio audio").first).to_be_attached(timeout=SLOW)
    feats = page.locator("#steer-features input")
    feats.click()
    feats.fill(KINDS["beep"][1])
    page.get_by_role("option").filter(has_text=run.ref("beep", 1)).first.click()
    page.keyboard.press("Escape")
    expect(page.locator("#steer-value-0")).to_be_visible(timeout=SLOW)
    page.locator("#steer-run").click()
    expect(page.locator("#steer-summary")).to_contain_text(f"Steered {run.ref('beep', 1)}", timeout=SLOW)
    expect(page.locator("#steer-probs .js-plotly-plot")).to_be_visible()
    expect(page.locator("#steer-lens .js-plotly-plot")).to_be_visible()
    # both runs' lens lines are drawn (2 labels x original/steered)
    expect(page.locator("#steer-lens .js-plotly-plot .scatterlayer .trace")).to_have_count(4)
    page.screenshot(path=str(shots / "6-steer.png"), full_page=True)


def test_the_feature_pages_steer_button_opens_the_steer_tab_and_steers(page, server: str, run: UiRun, shots: Path,
                                                                        tmp_path: Path) -> None:
    from ard_core.ui import steer as steer_tab
    from ard_core.ui.context import AppContext

    ref = run.ref("hum")  # steers gender -> male on 3 of 4 probe clips at value 30 (ui_fixtures)
    page.goto(f"{server}?feature={ref}", wait_until="load")
    expect(page.locator("#feature-steers")).to_contain_text("Steers gender -> male on 3 of 4 probe clips at value 30",
                                                            timeout=SLOW)
    page.screenshot(path=str(shots / "8-feature-steers.png"), full_page=True)
    page.locator("#feature-steer").click()
    page.wait_for_url(re.compile(r"tab=steer&feature=.*&value=30"), timeout=SLOW)
    # pre-filled: the probe clip it flipped, the gender question, the feature at its value
    expect(page.locator("#steer-audio audio").first).to_be_attached(timeout=SLOW)
    expect(page.locator("#steer-labels textarea, #steer-labels input").first).to_have_value("male, female",
                                                                                            timeout=SLOW)
    expect(page.locator("#steer-value-0 input[type=number]")).to_have_value("30", timeout=SLOW)
    expect(page.locator("#steer-features")).to_contain_text(ref)
    page.locator("#steer-run").click()
    expect(page.locator("#steer-summary")).to_contain_text(f"Steered {ref} = 30", timeout=SLOW)
    steered = page.locator("#steer-steered textarea").first
    expect(steered).not_to_have_value("", timeout=SLOW)
    page.screenshot(path=str(shots / "9-steer-from-feature.png"), full_page=True)
    # the answer shown is the one the tab's handler gives for that clip, preset, feature and value
    ctx = AppContext.open(run.catalog, annotations_path=tmp_path / "a.duckdb", clap="", device="cpu")
    try:
        p = steer_tab.presets(ctx)["gender: multiple choice (P3)"]
        want = steer_tab.run_steer(ctx, steer_tab.clip_audio_path(ctx, "hum_00"), p.question, p.prefix, "male, female",
                                   [ref], [30.0])
    finally:
        ctx.close()
    assert steered.input_value() == want.steered
    assert page.locator("#steer-original textarea").first.input_value() == want.original


def test_every_tab_renders(page, server: str, shots: Path) -> None:
    _open(page, server)
    for tab, probe in (("Lens", "#lens-curves .js-plotly-plot"), ("Evaluation", "#eval-table1"),
                       ("Concepts", "#concepts-table")):
        page.get_by_role("tab", name=tab).click()
        expect(page.locator(probe).first).to_be_visible(timeout=SLOW)
        page.screenshot(path=str(shots / f"7-{tab.lower()}.png"), full_page=True)
        if tab == "Evaluation":  # a table's CSV downloads, with its figures as numbers
            with page.expect_download(timeout=SLOW) as download:
                page.locator("#eval-table1-csv").click()
            rows = download.value.path().read_text().splitlines()
            assert rows[0].startswith("Method,MS,") and "F1 std" in rows[0] and rows[-1].startswith("AR&D,8.0,")


def test_inspect_an_own_clip_then_open_a_feature_and_steer_it(page, server: str, run: UiRun, shots: Path,
                                                             tmp_path: Path) -> None:
    """A recording that is not in the corpus: upload it, inspect it, open the first feature of the heat map
    (its rows are the ranked list's, in order), come back and steer the same clip with it."""
    import numpy as np
    import soundfile as sf

    sr = 16_000
    t = np.arange(int(1.6 * sr)) / sr
    rng = np.random.default_rng(7)
    own = 0.3 * np.sin(2 * np.pi * 660 * t) * (t > 0.5) + 0.05 * rng.standard_normal(t.size)  # noise, then a tone
    path = tmp_path / "my-recording.wav"
    sf.write(path, own.astype(np.float32), sr)

    _open(page, server)
    page.get_by_role("tab", name="Inspect").click()
    page.locator("#inspect-audio input[type=file]").set_input_files(str(path))
    expect(page.locator("#inspect-audio audio").first).to_be_attached(timeout=SLOW)
    page.locator("#inspect-named-only input").uncheck()
    page.locator("#inspect-run").click()
    expect(page.locator("#inspect-summary")).to_contain_text("my-recording", timeout=SLOW)
    expect(page.locator("#inspect-heatmap .js-plotly-plot")).to_be_visible(timeout=SLOW)
    page.screenshot(path=str(shots / "10-inspect.png"), full_page=True)
    chosen = page.locator("#inspect-chosen input")  # the first feature of the list and of the heat map
    expect(chosen).not_to_have_value("", timeout=SLOW)
    ref = chosen.input_value()
    assert re.fullmatch(r"tiny-random-l\d-e\d+/\d+", ref), ref
    # the heat map's row labels link to the feature pages (opened in a new tab)
    link = page.locator("#inspect-heatmap a").filter(has_text=ref).first
    link.scroll_into_view_if_needed()
    box = link.bounding_box()
    # a mouse click where the label is drawn (Playwright's own hit test misreads SVG links under plotly's layers;
    # the browser's elementFromPoint there is the link)
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    assert page.evaluate("([x, y]) => !!document.elementFromPoint(x, y).closest('a')", [x, y])
    with page.context.expect_page() as opened:
        page.mouse.click(x, y)
    feature_page = opened.value
    feature_page.wait_for_load_state("load")
    expect(feature_page.locator("#feature-header")).to_contain_text(ref.split("/")[1], timeout=SLOW)
    feature_page.screenshot(path=str(shots / "10b-feature-from-heatmap.png"), full_page=True)
    feature_page.close()
    # the "Open its page" button does the same in this tab
    page.locator("#inspect-open").click()
    expect(page.locator("#feature-header")).to_contain_text(ref.split("/")[1], timeout=SLOW)

    page.get_by_role("tab", name="Inspect").click()
    page.locator("#inspect-steer").click()
    expect(page.locator("#steer-features")).to_contain_text(ref, timeout=SLOW)
    expect(page.locator("#steer-audio audio").first).to_be_attached(timeout=SLOW)
    page.locator("#steer-run").click()
    expect(page.locator("#steer-summary")).to_contain_text(f"Steered {ref}", timeout=SLOW)
    expect(page.locator("#steer-steered textarea").first).not_to_have_value("", timeout=SLOW)
    page.screenshot(path=str(shots / "11-steer-from-inspect.png"), full_page=True)
