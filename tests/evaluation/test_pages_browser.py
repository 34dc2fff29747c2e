"""The evaluation, error-analysis and sweep-report pages in real headless Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import CHROMIUM, CHROMIUM_FLAGS

FLAGS = CHROMIUM_FLAGS

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is absent (apt-get install -y chromium); browser checks skipped",
)


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        yield chromium
        chromium.close()


def check_page(browser, page_path: Path, shot: Path) -> dict:
    """Open a page; return console errors, image sizes and overflow; save a full-page screenshot."""
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.goto(page_path.resolve().as_uri(), wait_until="load")
    images = page.evaluate(
        "() => Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
    )
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    page.screenshot(path=str(shot), full_page=True)
    page.close()
    return {"errors": errors, "failed": failed, "images": images, "overflow": overflow}


@pytest.mark.parametrize("task", ["binary", "multilabel"])
@pytest.mark.parametrize("name", ["index", "errors"])
def test_evaluation_pages_render(browser, evaluated, task, name, tmp_path):
    page = evaluated[task].out_dir / f"{name}.html"
    shot = tmp_path / f"{task}_{name}.png"
    result = check_page(browser, page, shot)
    assert result["errors"] == [] and result["failed"] == []
    assert len(result["images"]) >= 3
    assert all(complete and width > 0 for _, complete, width in result["images"]), result["images"]
    assert result["overflow"] <= 0
    assert shot.stat().st_size > 10_000


def test_sweep_report_renders(browser, multirun, tmp_path):
    from medsweep.report import build_report

    report = build_report(
        multirun, baseline="optimizer.lr=0.001", wandb=False, out=tmp_path / "report"
    )
    shot = tmp_path / "report.png"
    result = check_page(browser, report.files["html"], shot)
    assert result["errors"] == [] and result["failed"] == []
    assert result["images"] and all(c and w > 0 for _, c, w in result["images"])
    assert result["overflow"] <= 0  # wide tables scroll inside their box, never the page
    assert shot.stat().st_size > 10_000
