"""End to end in real headless Chromium: the launcher serves the page on 127.0.0.1 for a run
trained in the test; an uploaded image shows its class and probability, a non-image its message."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import CHROMIUM, CHROMIUM_FLAGS
from predict_runs import CLASSES

from medsweep.predictions import read_predictions

FLAGS = CHROMIUM_FLAGS
START_S = 120  # the server imports torch and Streamlit on a busy 2-core machine
RESULT_MS = 180_000
# at least n images of the page's results decoded (the upload and its Grad-CAM overlay)
IMAGES_SHOWN = """n => [...document.querySelectorAll('[data-testid="stImage"] img')]
    .filter(i => i.complete && i.naturalWidth > 0).length >= n"""
CHART_DRAWN = """() => !!document.querySelector(
    '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg')"""

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is absent (apt-get install -y chromium); the browser test is skipped",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(app_study, tmp_path):
    """``python -m medsweep.app <fold0>`` on a free local port; stopped after the test."""
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "medsweep.app", str(app_study["fold0"]), "--port", str(port)]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(
                    f"the app did not start: {(tmp_path / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def test_upload_in_a_real_browser(server, app_study, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    frame = read_predictions(app_study["fold0"] / "predictions.parquet")
    row = frame[frame["part"] == "test"].iloc[0]
    image, p = Path(row["id"]), float(row[f"prob/{CLASSES[1]}"])
    from medsweep.evaluation import load_thresholds

    t = load_thresholds(app_study["fold0"])["thresholds"][CLASSES[1]]
    expected = CLASSES[1] if p >= t else CLASSES[0]
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image")
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(server, wait_until="load")
            uploader = page.locator('input[type="file"]')
            uploader.wait_for(state="attached", timeout=RESULT_MS)
            uploader.set_input_files(str(image))
            verdict = page.get_by_text(f"Predicted: {expected}")
            verdict.wait_for(timeout=RESULT_MS)
            page.get_by_text(f"p({CLASSES[1]}) = {p:.3f}").first.wait_for(timeout=RESULT_MS)
            page.wait_for_function(IMAGES_SHOWN, arg=2, timeout=RESULT_MS)
            page.wait_for_function(CHART_DRAWN, timeout=RESULT_MS)
            captions = page.locator('[data-testid="stImageCaption"]').all_inner_texts()
            page.screenshot(path=str(tmp_path / "prediction.png"), full_page=True)

            page.locator('input[type="file"]').set_input_files(str(text_file))
            message = page.get_by_text("notes.txt is not an image this model can read")
            message.wait_for(timeout=RESULT_MS)
            page.screenshot(path=str(tmp_path / "not_an_image.png"), full_page=True)
            body = page.inner_text("body")

            page.get_by_role("tab", name="Model card").click()
            page.get_by_text("Model card: run fold0").wait_for(timeout=RESULT_MS)
            page.screenshot(path=str(tmp_path / "model_card.png"), full_page=True)
            card = page.inner_text("body")
        finally:
            browser.close()
    assert "Traceback" not in body
    assert captions == ["image", "Grad-CAM"]
    assert f"{expected} (p({CLASSES[1]}) = {p:.3f}" in body
    assert f"{t:.4g}" in card and "test 95% CI" in card
    for shot in ("prediction.png", "not_an_image.png", "model_card.png"):
        assert (tmp_path / shot).stat().st_size > 10_000
