"""`prediff app` in a real browser: the command starts the page as a subprocess on a free port, headless Chromium
(driven by Playwright) picks a storm, runs the forecast for n = 0 and n = 4 and reads the page.

Playwright's own browser download is not needed: the test uses a Chromium installed on the system (Debian's
``chromium``; ``PREDIFF_CHROMIUM`` names another executable) and skips, saying why, only where none is found.
It saves a screenshot of the page in its output folder, and where ``PREDIFF_APP_SCREENSHOT`` names a file, a small
copy there (how the README's picture is made: ``PREDIFF_APP_SCREENSHOT=docs/prediff-app.png``).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("gradio")
playwright = pytest.importorskip("playwright.sync_api")

#: Flags of a headless Chromium that calls nothing outside this machine.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STARTUP_TIMEOUT_S = 120
RUN_TIMEOUT_MS = 180_000


def chromium() -> str | None:
    """The Chromium executable: ``PREDIFF_CHROMIUM``, else the first of the usual names on ``PATH``."""
    if os.environ.get("PREDIFF_CHROMIUM"):
        return os.environ["PREDIFF_CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """`python -m prediff app --port N` in a subprocess, until the page answers; stopped after the tests."""
    port = free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "prediff", "app", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"prediff app exited with status {process.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"prediff app did not answer within {STARTUP_TIMEOUT_S} s:\n{log.read_text()}")
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_forecast(page, n_sigma: float, label: str) -> tuple[str, bytes]:
    """Set n on the slider, run, and return the summary and the bytes of the forecast panel once the summary
    names the target `label` (``μ + 4σ``) and the panel is a new picture."""
    before = page.locator("#panel img").get_attribute("src") if page.locator("#panel img").count() else None
    page.locator("#n-sigma input[type=range]").fill(f"{n_sigma:g}")
    page.click("#run")
    page.wait_for_function(
        """([label, before]) => {
            const summary = document.querySelector('#summary'), panel = document.querySelector('#panel img');
            return summary && summary.innerText.includes('(' + label + '), achieved')
                && !summary.innerText.includes('processing') && panel && panel.src && panel.src !== before;
        }""",
        arg=[label, before],
        timeout=RUN_TIMEOUT_MS,
    )
    source = page.locator("#panel img").get_attribute("src")
    return page.locator("#summary").inner_text(), page.request.get(source).body()


def intensities(summary: str) -> tuple[float, float]:
    """(anticipated, achieved) of the page's summary line."""
    found = re.search(r"Anticipated ([-+.\deE]+).*achieved ([-+.\deE]+)", summary)
    assert found, summary
    return float(found.group(1)), float(found.group(2))


def test_the_slider_steers_the_forecast_in_the_browser(app_url, tmp_path):
    executable = chromium()
    if executable is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set PREDIFF_CHROMIUM)")
    start = time.perf_counter()
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(app_url)
            page.wait_for_selector("#run")
            assert page.locator("#source input[value='synthetic storm']").is_checked()
            page.locator("#members input[type=range]").fill("2")
            page.locator("#steps input[type=range]").fill("6")
            mean_summary, mean_panel = run_forecast(page, 0, "μ")
            high_summary, high_panel = run_forecast(page, 4, "μ + 4σ")
            page.screenshot(path=tmp_path / "prediff-app.png", full_page=True)
        finally:
            browser.close()
    assert mean_panel[:8] == high_panel[:8] == b"\x89PNG\r\n\x1a\n" and mean_panel != high_panel
    for summary in (mean_summary, high_summary):
        anticipated, achieved = intensities(summary)
        assert achieved == pytest.approx(anticipated, rel=0.1), summary
    assert intensities(high_summary)[1] > 2 * intensities(mean_summary)[1]
    print(f"browser test: {time.perf_counter() - start:.1f} s after the page answered")
    copy = os.environ.get("PREDIFF_APP_SCREENSHOT")
    if copy:
        save_small_png(tmp_path / "prediff-app.png", Path(copy))


def save_small_png(source: Path, target: Path, width: int = 1000) -> None:
    """`source` scaled to `width` pixels and reduced to 64 colours: a picture for the README of a few 100 kB."""
    from PIL import Image

    with Image.open(source) as image:
        image = image.convert("RGB")
        image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
        image.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
