"""The run and sweep reports in a real headless Chromium (skipped where it or playwright is
missing; CI installs it with .ci/install-browser)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from tests.support.report_pages import Page

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# -- ----------------------------------------------------------------------------
IMAGES_JS = """() => Array.from(document.images).map(img => ({
    alt: img.alt, complete: img.complete, natural: img.naturalWidth,
    shown: img.getBoundingClientRect().width, hidden: img.closest('details:not([open])') !== null}))"""


def test_the_reports_show_their_figures_in_a_real_browser(run_page: Page, sweep_page: Page, tmp_path: Path) -> None:
    """Both pages in headless Chromium: every image decoded (complete, naturalWidth > 0) and laid
    out at a readable width (those in closed <details> once opened), nothing requested but the
    file itself; a full-page screenshot of each, every <details> open, to look at
    (into $BBVI_KIT_SCREENSHOTS when set)."""
    sync_api = pytest.importorskip("playwright.sync_api", exc_type=ImportError)
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is not installed (CI: .ci/install-browser)")
    shots = Path(os.environ.get("BBVI_KIT_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            for which, report in (("run", run_page), ("sweep", sweep_page)):
                path = tmp_path / f"{which}.html"
                path.write_text(report.text, encoding="utf-8")
                requests: list[str] = []
                page = browser.new_page(viewport={"width": 1300, "height": 900})
                page.on("request", lambda request: requests.append(request.url))
                page.goto(path.as_uri(), wait_until="load")
                images = page.evaluate(IMAGES_JS)
                page.evaluate("() => document.querySelectorAll('details').forEach(d => d.open = true)")
                page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
                opened = page.evaluate("() => Array.from(document.images).map(i => i.getBoundingClientRect().width)")
                screenshot = shots / f"report_{which}.png"
                page.screenshot(path=str(screenshot), full_page=True)
                page.close()

                assert requests == [path.as_uri()]
                assert len(images) == len(report.images) == report.text.count("<img ")
                assert any(image["hidden"] for image in images) == (which == "sweep")  # each run's plots, folded
                for image, width in zip(images, opened):
                    assert image["complete"] and image["natural"] > 200, image
                    assert width > 200, image
                    if not image["hidden"]:
                        assert image["shown"] > 200, image
                with Image.open(screenshot) as shot:
                    assert shot.size[0] == 1300 and shot.size[1] > 2000
        finally:
            browser.close()
