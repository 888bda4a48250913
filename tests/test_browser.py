"""The Space in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by Playwright
uploads a painting, goes through every tab and reads the answers off the page, then uploads a text
file renamed .jpg and sees the error message.

Screenshots go to pytest's tmp dir; with ARTLENS_SAVE_SCREENSHOT=1 the Explain tab is also saved as
docs/images/space.png (on the embedded default models when they are built)."""
from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import pytest
from PIL import Image

from artlens.files import write_bytes
from scripts.benchmarks.space_helpers import ROOT, label_sets, start_space, stop_space

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SCREENSHOT = ROOT / "docs" / "images" / "space.png"


def _wait_text(page, selector: str, pattern: str, timeout: float = 120.0) -> str:
    """Poll an element's text until it matches (the answers arrive through the queue)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        loc = page.locator(selector)
        text = loc.first.inner_text() if loc.count() else ""
        if re.search(pattern, text):
            return text
        page.wait_for_timeout(250)
    raise AssertionError(f"{selector} never showed /{pattern}/; last text: {text[:300]!r}")


def _save_small_png(png: bytes, path: Path, limit: int = 400_000) -> None:
    img = Image.open(io.BytesIO(png)).convert("RGB")
    for colours in (None, 256, 128, 64):
        out = img if colours is None else img.quantize(colours, method=Image.Quantize.MEDIANCUT)
        buf = io.BytesIO()
        out.save(buf, "PNG", optimize=True)
        if buf.tell() < limit:
            break
    write_bytes(path, buf.getvalue())


def run_browser_session(url: str, painting: Path, bad_file: Path, shots: Path, labels: dict, save_to: Path | None):
    from playwright.sync_api import sync_playwright

    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            outside = []  # the Space must work offline: nothing but the app itself is requested
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((url.rstrip("/"), "data:", "blob:"))
                    else None)
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_role("heading", name="artlens").wait_for(timeout=60_000)
            page.locator("#upload input[type=file]").set_input_files(str(painting))

            # Style & artist: both labels show classes from the right sets
            style = _wait_text(page, "#style", "|".join(map(re.escape, labels["style"])))
            artist = _wait_text(page, "#artist", "|".join(map(re.escape, labels["artist"])))
            assert "%" in style and "%" in artist
            page.locator("#preview img").wait_for(timeout=60_000)
            page.screenshot(path=str(shots / "1_style_artist.png"), full_page=True)

            page.get_by_role("tab", name="Human or AI?").click()
            verdict = _wait_text(page, "#verdict", r"Verdict: (AI-generated|human-made)")
            assert "Probability of AI generation" in verdict
            assert re.search(r"human|ai", page.locator("#origin").inner_text())
            page.screenshot(path=str(shots / "2_human_or_ai.png"), full_page=True)

            page.get_by_role("tab", name="Explain").click()
            page.locator("#explain-button").click()
            info = _wait_text(page, "#explain-info", r"Grad-CAM\*?\*? for")
            page.locator("#overlay img").wait_for(timeout=60_000)
            box = page.locator("#overlay img").bounding_box()
            assert box and box["width"] > 50 and box["height"] > 50, "the overlay is not visible"
            assert "style model" in info
            page.screenshot(path=str(shots / "3_explain.png"), full_page=True)
            if save_to is not None:
                _save_small_png(page.screenshot(full_page=True), save_to)

            page.get_by_role("tab", name="About").click()
            about = _wait_text(page, "#about", r"The origin model")
            assert "The style model" in about and "The artist model" in about
            page.screenshot(path=str(shots / "4_about.png"), full_page=True)

            # A text file renamed .jpg: a readable message, and the page stays usable
            page.get_by_role("tab", name="Style & artist").click()
            page.locator("#upload button[aria-label='Clear']").first.click()
            page.locator("#upload input[type=file]").set_input_files(str(bad_file))
            toast = page.get_by_test_id("toast-text").filter(has_text=re.compile("not an image file PIL can read"))
            toast.first.wait_for(state="visible", timeout=60_000)
            assert bad_file.name in toast.first.inner_text()
            assert page.locator("#style").inner_text().count("%") == 0  # the previous answers were cleared
            page.screenshot(path=str(shots / "5_bad_upload.png"))  # viewport: full-page drops the fixed toast
            # ... and the next painting (an example, clicked) is answered again
            page.get_by_role("button", name=re.compile(r"Alfred_Sisley")).first.click()
            _wait_text(page, "#style", "|".join(map(re.escape, labels["style"])))
            _wait_text(page, "#verdict", r"Verdict: ")
            assert not errors, f"JavaScript errors on the page: {errors[:3]}"
            assert not outside, f"the page requested other hosts: {outside[:5]}"
        finally:
            browser.close()


@pytest.mark.browser
@pytest.mark.slow
def test_browser_walkthrough(space_url, data_dir, tmp_path):
    assert Path(CHROMIUM).exists(), "Chromium is missing: make chromium (make test does it) or apt-get install -y chromium"
    painting = sorted((data_dir / "paintings_styles10" / "Post-Impressionism").glob("*.jpg"))[0]
    bad = tmp_path / "shopping_list.jpg"
    bad.write_text("eggs, milk, bread\n")
    save = os.environ.get("ARTLENS_SAVE_SCREENSHOT") == "1"
    defaults_built = all((ROOT / "artlens" / "defaults" / t / "config.json").exists() for t in ("style", "artist", "origin"))
    url, proc = space_url, None
    if save and defaults_built:  # the README picture shows the real models
        examples = tmp_path / "examples"
        examples.mkdir()
        for f in sorted((data_dir / "paintings_styles10" / "Impressionism").glob("Alfred_Sisley*.jpg"))[:2]:
            (examples / f.name).write_bytes(f.read_bytes())
        proc, url, _ = start_space(None, examples=examples)
    try:
        run_browser_session(url, painting, bad, tmp_path / "shots", label_sets(data_dir) if proc is None else
                            _default_labels(), SCREENSHOT if save else None)
    finally:
        if proc is not None:
            stop_space(proc)
    assert (tmp_path / "shots" / "3_explain.png").stat().st_size > 10_000
    if save:
        assert SCREENSHOT.stat().st_size < 400_000


def _default_labels() -> dict:
    from artlens.models import label_names, load_model

    return {t: label_names(load_model(t)) for t in ("style", "artist")}
