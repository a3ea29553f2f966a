"""A person opens the demo page in a real browser (Debian's chromium, headless, via Playwright)."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page

from support.server import Server, StartServer


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.goto(server.url + "/")
    opened.wait_for_selector('input[name="guest"]')
    yield opened
    context.close()


def _bottles(page: Page) -> float:
    return float(page.locator("#wine-bottles").inner_text())


def test_ticking_guests_updates_the_bottles(page: Page) -> None:
    page.wait_for_function("document.querySelector('#wine-bottles').textContent === '1.0'")
    page.get_by_label("Dahlia").check()
    page.get_by_label("Stiffy").check()
    page.wait_for_function("document.querySelector('#wine-bottles').textContent.startsWith('4.')")
    assert _bottles(page) == pytest.approx(4.3, abs=0.2)
    page.get_by_label("Agatha").check()
    page.wait_for_function("document.querySelector('#wine-bottles').textContent === '0.0'")
    assert _bottles(page) == 0.0


def test_the_roster_comes_from_the_api(page: Page, server: Server) -> None:
    model = httpx.get(server.url + "/models/wine").json()
    roster = model["versions"][-1]["preprocessing"]["roster"]
    shown = page.locator('input[name="guest"]').evaluate_all("ticks => ticks.map(t => t.value)")
    assert shown == roster


@pytest.mark.parametrize(("example", "verdict"), [("spam", "Spam"), ("ham", "Ham")])
def test_the_spam_examples_get_their_verdicts(page: Page, example: str, verdict: str) -> None:
    page.click(f"#spam-example-{example}")
    page.wait_for_function(
        f"document.querySelector('#spam-verdict').textContent === '{verdict}'", timeout=10_000
    )
    assert "spam probability" in page.locator("#spam-probability").inner_text()


def _draw(page: Page, points: Sequence[tuple[float, float]]) -> None:
    box = page.locator("#digit-canvas").bounding_box()
    assert box is not None, "the canvas is not on the page"
    page.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x, box["y"] + y, steps=2)
    page.mouse.up()


@pytest.mark.parametrize("digit", [1, 0])
def test_a_drawn_digit_is_recognised(page: Page, digit: int) -> None:
    if digit == 1:
        stroke = [(140, 50 + 4 * i) for i in range(46)]
    else:
        stroke = [(140 + 60 * np.sin(t), 140 - 90 * np.cos(t)) for t in np.linspace(0, 2 * np.pi, 60)]
    _draw(page, stroke)
    page.wait_for_function(
        f"document.querySelector('#digit-answer').textContent === '{digit}'", timeout=10_000
    )
    assert page.locator("#digit-bars .bar").count() == 10
    page.click("#digit-clear")
    assert page.locator("#digit-answer").inner_text() == "?"


def test_predict_on_an_empty_canvas_asks_for_a_digit(page: Page) -> None:
    """A blank image is a valid input the network still names a digit for (a 1, at 74%): the page
    asks for a drawing instead of sending one."""
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.click("#digit-predict")
    page.wait_for_function("document.querySelector('#digit-runner-up').textContent === 'Draw a digit first.'")
    assert page.locator("#digit-answer").inner_text() == "?"
    assert not [url for url in asked if "/predict/digit" in url]


def test_an_api_error_is_shown_in_words(browser: Browser, start_server: StartServer) -> None:
    strict = start_server(NNSERVE_MAX_EMAIL_CHARS="50")
    context = browser.new_context()
    page = context.new_page()
    page.goto(strict.url + "/")
    page.fill("#spam-text", "a perfectly ordinary email that is longer than fifty characters")
    page.click("#spam-check")
    page.wait_for_function("document.querySelector('#spam-error').textContent.length > 0")
    message = page.locator("#spam-error").inner_text()
    context.close()
    assert message.startswith("422") and "limit is 50" in message


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)], ids=["laptop", "phone"])
def test_a_full_page_screenshot_is_not_blank(
    browser: Browser, server: Server, tmp_path: Path, width: int, height: int
) -> None:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.goto(server.url + "/")
    page.wait_for_selector('input[name="guest"]')
    page.click("#spam-example-spam")
    page.wait_for_function("document.querySelector('#spam-verdict').textContent !== '-'")
    path = tmp_path / f"page-{width}x{height}.png"
    page.screenshot(path=str(path), full_page=True)
    overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
    context.close()
    image = np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("L"))
    assert image.shape[1] == width and image.shape[0] >= height
    assert image.std() > 10 and len(np.unique(image)) > 50
    assert not overflow, "the page scrolls sideways"
