"""The web demo in a real headless Chromium (Debian's `chromium`, driven by Playwright): upload a
transparent face, see the strip of expressions, move a slider and see a new (transparent) mix, download
a sprite sheet, make a morph GIF and a WebP, get a clear message for a file that is not an image, and
never reach outside the machine.

FEXGAN_TEST_MODEL=model.safetensors FEXGAN_TEST_SCREENSHOT=docs/web_demo.png runs the same test on
another model and keeps its screenshot (that is how docs/web_demo.png was made).
"""
from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import fexgan
from fexgan.data import toon
from fexgan.data.images import prepare_image
from fexgan.metrics.groundtruth import TOON_SEED

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
LOCAL = ("http://127.0.0.1:", "data:", "blob:")

pytestmark = pytest.mark.browser
if not CHROMIUM.exists():
    pytest.skip(f"the browser test needs Chromium at {CHROMIUM} (Debian: apt-get install chromium)",
                allow_module_level=True)
from playwright import sync_api

from fexgan.serve import enlarge


@pytest.fixture(scope="module")
def page_url(tiny_model: Path, start_server) -> str:
    return start_server(Path(os.environ.get("FEXGAN_TEST_MODEL", tiny_model)))


def image_src(page, selector: str) -> str | None:
    return page.evaluate(f"() => document.querySelector('{selector} img')?.src ?? null")


def wait_for_new_image(page, selector: str, old: str | None) -> str:
    page.wait_for_function(f"old => {{ const i = document.querySelector('{selector} img'); "
                           f"return i && i.complete && i.naturalWidth > 0 && i.src !== old; }}", arg=old, timeout=60_000)
    return image_src(page, selector)


def test_upload_slide_morph_and_screenshot(page_url: str, tmp_path: Path, tiny_model: Path) -> None:
    face = tmp_path / "fig.png"
    toon.render_face(toon.make_characters(5)[4], "neutral", size=160).save(face)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is text with an image suffix")
    shot = Path(os.environ.get("FEXGAN_TEST_SCREENSHOT", tmp_path / "web_demo.png"))
    outside: list[str] = []

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1180})
            page.on("request", lambda r: None if r.url.startswith(LOCAL) else outside.append(r.url))
            page.goto(page_url)
            strip = wait_for_new_image(page, "#strip", None)  # the first character is shown on load
            assert "FExGAN" in page.inner_text("h2")

            page.locator("#face input[type=file]").set_input_files(face)
            strip = wait_for_new_image(page, "#strip", strip)
            mix = wait_for_new_image(page, "#mix", None)

            page.locator("#slider-surprise input[type=range]").fill("0.7")
            mix = wait_for_new_image(page, "#mix", mix)
            page.locator("#slider-joy input[type=range]").fill("0.4")
            mix = wait_for_new_image(page, "#mix", mix)
            served_mix = page.request.get(mix).body() if not mix.startswith("data:") else \
                base64.b64decode(mix.split(",", 1)[1])
            page.mouse.move(0, 0)
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)

            page.locator("#make-sheet").click()
            page.locator("#sheet img").wait_for(timeout=60_000)
            sheet_src = page.locator("#sheet img").get_attribute("src")
            names = page.locator("#sheet a").evaluate_all("links => links.map(a => a.download)")

            page.get_by_role("tab", name="Morph").click()
            page.locator("#make-gif").click()
            page.locator("#gif img").wait_for(timeout=60_000)
            assert page.locator("#gif img").get_attribute("src").startswith("data:image/gif;base64,")

            page.locator("#face input[type=file]").set_input_files(not_an_image)
            page.get_by_text("not an image").first.wait_for(timeout=30_000)
        finally:
            browser.close()
    assert shot.stat().st_size > 20_000
    # the page's mix is the library's: the same face, its classifier reading, the sliders' affect
    model = fexgan.load(Path(os.environ.get("FEXGAN_TEST_MODEL", tiny_model)), "cpu")
    pixels = Image.fromarray(prepare_image(face.read_bytes(), model.config.image_size, model.config.background))
    reading = model.classify(pixels)
    weights = {c: 0.0 for c in model.classes} | {"joy": 0.4, "surprise": 0.7}
    expected = enlarge(model.mix(face.read_bytes(), weights, source=max(reading, key=reading.get)))
    shown = Image.open(io.BytesIO(served_mix))
    assert shown.mode == expected.mode == "RGBA" and shown.size == expected.size
    assert np.array_equal(np.asarray(shown), np.asarray(expected))
    # the sprite sheet download: every expression, transparent where the upload is
    sheet = Image.open(io.BytesIO(base64.b64decode(sheet_src.split(",", 1)[1])))
    size = model.config.image_size
    assert sheet.mode == "RGBA" and sheet.size == (7 * size, size) and sheet.getpixel((0, 0))[3] == 0
    assert names == ["expressions_sheet.png", "expressions_sheet.json"]
    assert outside == [], f"the page fetched from outside the machine: {outside}"


def test_the_page_says_when_a_face_is_far_from_what_the_model_knows(start_server, tmp_path: Path) -> None:
    """The default model (toon-any-64): a toon face it never saw is edited without a word; a smiley is
    not a face it can draw expressions on, and the page says so."""
    url = start_server(Path("toon-any-64"))
    unseen = tmp_path / "unseen.png"
    held_out = fexgan.load("toon-any-64", "cpu").summary["held_out"]
    character = next(c for c in toon.make_characters(toon.MAX_CHARACTERS, seed=TOON_SEED) if c.name == held_out[4])
    toon.render_face(character, "neutral", size=128).save(unseen)
    smiley = tmp_path / "smiley.png"
    image = Image.new("RGB", (256, 256), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((40, 40, 216, 216), fill=(255, 220, 0), outline="black", width=6)
    for left in (90, 146):
        draw.ellipse((left, 100, left + 20, 125), fill="black")
    draw.line((90, 170, 166, 170), fill="black", width=6)
    image.save(smiley)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1180})
            page.goto(url)
            strip = wait_for_new_image(page, "#strip", None)
            page.locator("#face input[type=file]").set_input_files(unseen)
            strip = wait_for_new_image(page, "#strip", strip)
            assert page.get_by_text("far from the characters").count() == 0
            page.locator("#face input[type=file]").set_input_files(smiley)
            wait_for_new_image(page, "#strip", strip)
            page.get_by_text("far from the characters").first.wait_for(timeout=30_000)
        finally:
            browser.close()
