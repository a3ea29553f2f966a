"""A person opens the demo page in a real browser (Debian's chromium, headless, via Playwright)
and asks each panel "Why?".

The screenshots of each "Why?" view go to the test's temporary folder; with
NNSERVE_EXPLAIN_SCREENSHOTS=<folder> the laptop-size ones are also written there (the README's
come from `NNSERVE_EXPLAIN_SCREENSHOTS=service/web/screenshots pytest tests/test_explain_page.py`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from support.server import Server

VIEWPORTS = {"laptop": (1280, 800), "phone": (390, 844)}
SPAM_EXAMPLE_LOADED = "document.querySelector('#spam-verdict').textContent !== '-'"


@pytest.fixture(params=list(VIEWPORTS))
def viewport(request: pytest.FixtureRequest) -> str:
    size: str = request.param
    return size


@pytest.fixture
def page(browser: Any, server: Server, viewport: str) -> Iterator[Any]:
    width, height = VIEWPORTS[viewport]
    context = browser.new_context(viewport={"width": width, "height": height})
    opened = context.new_page()
    opened.goto(server.url + "/")
    opened.wait_for_selector('input[name="guest"]')
    yield opened
    context.close()


def _screenshot(panel: Any, tmp_path: Path, name: str, viewport: str, readme: bool = True) -> np.ndarray:
    """The panel's screenshot as grayscale pixels, checked not blank; the README's kept where asked."""
    path = tmp_path / f"why-{name}-{viewport}.png"
    panel.screenshot(path=str(path))
    keep = os.environ.get("NNSERVE_EXPLAIN_SCREENSHOTS")
    if keep and readme and viewport == "laptop":  # 256 colours: a third of the bytes, no visible change
        Path(keep).mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("RGB").quantize(256).save(Path(keep) / f"why-{name}.png", optimize=True)
    image = np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("L"))
    assert image.std() > 10 and len(np.unique(image)) > 30
    return image


def _tick(page: Any, guests: list[str]) -> None:
    for guest in guests:
        page.get_by_label(guest, exact=True).check()


def _effects(page: Any) -> dict[str, float]:
    rows = page.locator("#wine-effects li[data-guest]")
    rows.first.wait_for()
    shown: list[list[str]] = rows.evaluate_all("rows => rows.map(r => [r.dataset.guest, r.dataset.effect])")
    return {guest: float(effect) for guest, effect in shown}


def test_why_agatha_wipes_out_the_party(page: Any, tmp_path: Path, viewport: str) -> None:
    _tick(page, ["Agatha", "Dahlia", "Stiffy"])
    page.wait_for_function("document.querySelector('#wine-bottles').textContent === '0.0'")
    page.click("#wine-why")
    page.wait_for_function("document.querySelectorAll('#wine-effects li[data-guest]').length === 3")
    effects = _effects(page)
    assert effects["Agatha"] < -4 and abs(effects["Dahlia"]) < 0.05 and abs(effects["Stiffy"]) < 0.05
    assert "\u22124.3" in page.locator('#wine-effects li[data-guest="Agatha"] .effect').inner_text()
    assert page.locator("#wine-network .guest.present").count() == 3
    labels = page.locator("#wine-network .unit-label").all_text_contents()
    assert any(label.startswith("on when Agatha comes") for label in labels), labels
    _screenshot(page.locator("#wine"), tmp_path, "wine-agatha", viewport)


def test_why_dahlia_has_the_largest_positive_effect(page: Any, tmp_path: Path, viewport: str) -> None:
    page.click("#wine-why")
    _tick(page, ["Dahlia", "Stiffy", "Bertie", "Tuppy"])
    page.wait_for_function("document.querySelectorAll('#wine-effects li[data-guest]').length === 4")
    effects = _effects(page)
    assert max(effects, key=effects.__getitem__) == "Dahlia" and min(effects.values()) > 0
    lit = page.locator("#wine-network .unit.active").count()
    assert page.locator("#wine-units li").count() == min(8, lit) > 0
    assert page.locator("#wine-network .unit-label").count() == min(5, lit)
    assert page.locator("#wine-network line.adds").count() > 0
    _screenshot(page.locator("#wine"), tmp_path, "wine-dahlia", viewport, readme=False)


def test_why_the_spam_example_is_spam(page: Any, server: Server, tmp_path: Path, viewport: str) -> None:
    page.click("#spam-example-spam")
    page.wait_for_function(SPAM_EXAMPLE_LOADED, timeout=10_000)
    page.click("#spam-why")
    page.locator("#spam-read mark").first.wait_for()
    text = page.locator("#spam-text").input_value()
    answer = httpx.post(server.url + "/explain/spam", json={"text": text}).json()
    marked_spam = set(
        page.locator("#spam-read mark.to-spam").evaluate_all("ms => ms.map(m => m.dataset.word)")
    )
    marked_ham = set(page.locator("#spam-read mark.to-ham").evaluate_all("ms => ms.map(m => m.dataset.word)"))
    words = {t["token"] for t in answer["tokens"]}  # not "<headers>": the header block has no place
    assert {w["word"] for w in answer["spam_ward"]} & words <= marked_spam
    assert {w["word"] for w in answer["ham_ward"]} & words <= marked_ham
    top = next(w["word"] for w in answer["spam_ward"] if w["word"] in words)
    strengths = page.locator("#spam-read mark.to-spam").evaluate_all(
        "ms => ms.map(m => [m.dataset.word, parseFloat(m.style.getPropertyValue('--strength'))])"
    )
    assert max(strengths, key=lambda mark: mark[1])[0] == top  # the deepest red
    shown = page.locator("#spam-ward li").evaluate_all("items => items.map(i => i.dataset.word)")
    assert shown == [w["word"] for w in answer["spam_ward"]]
    first = answer["spam_ward"][0]
    assert f"+{first['log_odds_effect']:.2f} log-odds" in page.locator("#spam-ward li").first.inner_text()
    assert page.locator("#spam-read").inner_text() == answer["text"]
    _screenshot(page.locator("#spam"), tmp_path, "spam", viewport)


def _draw_three(page: Any) -> None:
    """Two bowls open to the left, meeting in the middle, on the 280x280 canvas."""
    page.locator("#digit-canvas").evaluate("canvas => canvas.scrollIntoView({block: 'center'})")
    box = page.locator("#digit-canvas").bounding_box()
    scale = box["width"] / 280
    top = [(140 + 55 * np.sin(t), 90 - 45 * np.cos(t)) for t in np.linspace(-1.2, np.pi, 25)]
    bottom = [(140 + 60 * np.sin(t), 185 - 50 * np.cos(t)) for t in np.linspace(0, 4.3, 30)]
    for stroke in (top, bottom):
        page.mouse.move(box["x"] + stroke[0][0] * scale, box["y"] + stroke[0][1] * scale)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=2)
        page.mouse.up()


def test_why_a_drawn_digit_gets_a_heat_map(page: Any, tmp_path: Path, viewport: str) -> None:
    _draw_three(page)
    page.wait_for_load_state("networkidle")  # both strokes predicted: the drawing is final
    page.click("#digit-why")
    page.wait_for_function(
        "document.querySelector('#digit-runner-up').textContent.includes('runner-up')", timeout=10_000
    )
    answer = page.locator("#digit-answer").inner_text()
    assert page.locator("#digit-runner-up").inner_text().startswith(f"{answer} (")
    reds = page.evaluate("""() => {
        const heat = document.querySelector('#digit-heat');
        const data = heat.getContext('2d').getImageData(0, 0, heat.width, heat.height).data;
        let red = 0;
        for (let i = 0; i < data.length; i += 4) if (data[i] > data[i + 1] + 80) red++;
        return red;
    }""")
    assert reds > 1000  # patches of 40x40 canvas pixels tinted red
    image = _screenshot(page.locator("#digit"), tmp_path, "digit", viewport)
    assert image.shape[1] <= VIEWPORTS[viewport][0]
    page.click("#digit-clear")
    assert page.locator("#digit-runner-up").inner_text() == ""


def test_the_why_views_never_scroll_the_page_sideways(page: Any, viewport: str) -> None:
    for panel in ("wine", "spam", "digit"):
        page.click(f"#{panel}-why")
    page.click("#spam-example-spam")
    page.locator("#spam-read mark").first.wait_for()
    assert page.locator("#wine-why").get_attribute("aria-expanded") == "true"
    assert not page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
    page.click("#wine-why")
    assert page.locator("#wine-why-view").is_hidden()
