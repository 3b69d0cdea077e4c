"""Take the README's screenshots of every tab of the running app.

    python scripts/app_screenshots.py --catalog runs/demo/catalog.duckdb --out docs/screenshots

Starts ``app.py`` on the catalog (with a throw-away annotations file), drives it with
Playwright in headless Debian chromium, and writes concepts.png, feature.png, lens.png,
steer.png, annotate.png, evaluation.png, quality.png and inspect.png.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's ard_core, not an installed one
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SLOW = 120_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(catalog: Path, port: int, tmp: Path) -> subprocess.Popen:
    log = (tmp / "app.log").open("w")
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--catalog", str(catalog), "--port", str(port),
                             "--annotations", str(tmp / "annotations.duckdb")],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"app.py exited:\n{(tmp / 'app.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    sys.exit("app.py did not start within 300 s")


def top_feature(catalog: Path) -> tuple[str, str]:
    """(ref, name) of the best-ranked named feature."""
    from ard_core.catalog import Catalog

    with Catalog.open(catalog, read_only=True) as cat:
        first = cat.ranked_features(1)  # named features come first
    if not first or not (first[0].name or "").strip():
        sys.exit("the catalog has no named features")
    return first[0].ref, first[0].name


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--catalog", type=Path, default=REPO / "runs/demo/catalog.duckdb")
    p.add_argument("--out", type=Path, default=REPO / "docs/screenshots")
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = p.parse_args()
    from playwright.sync_api import expect, sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    ref, name = top_feature(args.catalog)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as tmp:
        proc = start(args.catalog, port, Path(tmp))
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1050}, device_scale_factor=1)
                page.goto(url, wait_until="load")
                page.wait_for_selector("#concepts-table", timeout=SLOW)
                page.wait_for_timeout(800)
                page.screenshot(path=str(args.out / "concepts.png"))

                page.goto(f"{url}?feature={ref}", wait_until="load")
                expect(page.locator("#top-clip-0 .js-plotly-plot").first).to_be_visible(timeout=SLOW)
                page.wait_for_timeout(1500)
                page.screenshot(path=str(args.out / "feature.png"), full_page=True,
                                clip={"x": 0, "y": 0, "width": 1400, "height": 1700})

                page.goto(url, wait_until="load")
                page.wait_for_selector("#concepts-table", timeout=SLOW)
                page.get_by_role("tab", name="Lens").click()
                page.wait_for_timeout(1500)
                page.screenshot(path=str(args.out / "lens.png"), full_page=True)

                page.get_by_role("tab", name="Steer").click()
                if page.locator("#steer-run").is_enabled():
                    page.locator("#steer-clip input").click()
                    page.get_by_role("option").first.click()
                    page.locator("#steer-features input").click()
                    page.locator("#steer-features input").fill(name)
                    page.get_by_role("option").filter(has_text=ref).first.click()
                    page.keyboard.press("Escape")
                    page.locator("#steer-run").click()
                    expect(page.locator("#steer-summary")).to_contain_text("Steered", timeout=SLOW)
                    page.wait_for_timeout(1000)
                page.screenshot(path=str(args.out / "steer.png"), full_page=True)

                page.get_by_role("tab", name="Annotate").click()
                page.locator("#annot-name textarea, #annot-name input").first.fill("demo")
                page.locator("#annot-n input").first.fill("10")
                page.locator("#annot-start").click()
                expect(page.locator("#annot-status")).to_contain_text("rated", timeout=SLOW)
                page.locator("#annot-label textarea, #annot-label input").first.fill("my own label")
                page.locator("#annot-save-label").click()
                expect(page.locator("#annot-reveal")).to_contain_text("Automatic name", timeout=SLOW)
                page.wait_for_timeout(800)
                page.screenshot(path=str(args.out / "annotate.png"), full_page=True)

                page.get_by_role("tab", name="Evaluation").click()
                page.wait_for_timeout(1000)
                page.screenshot(path=str(args.out / "evaluation.png"), full_page=True)

                page.get_by_role("tab", name="SAE quality").click()
                page.wait_for_timeout(1500)
                page.screenshot(path=str(args.out / "quality.png"), full_page=True)

                page.get_by_role("tab", name="Inspect").click()
                if page.locator("#inspect-run").is_enabled():
                    page.locator("#inspect-clip input").click()
                    page.get_by_role("option").first.click()
                    page.keyboard.press("Escape")
                    page.locator("#inspect-run").click()
                    expect(page.locator("#inspect-heatmap .js-plotly-plot").first).to_be_visible(timeout=SLOW)
                    page.wait_for_timeout(1500)
                page.screenshot(path=str(args.out / "inspect.png"), full_page=True)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    for f in sorted(args.out.glob("*.png")):
        print(f"{f}  {f.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
