"""A user opens the API docs, /docs (Swagger UI) and /redoc (ReDoc), in a real browser (Debian's
chromium, headless, via Playwright) on a machine without internet: the pages render every
operation, "Try it out" works, and every request they make goes to the service itself."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from support.server import Server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
REDOC_OPERATION = "[data-section-id^='operation/']"


@dataclass
class DocsPage:
    page: Page
    requested: list[str] = field(default_factory=list)

    def offsite(self, server: Server) -> list[str]:
        """The requests that went anywhere but the service. A blob: URL is made in the page (ReDoc
        starts a worker from one) and names the page's origin; a data: URL fetches nothing."""
        return [
            url
            for url in self.requested
            if not url.startswith("data:")
            and urlsplit(url.removeprefix("blob:"))[:2] != urlsplit(server.url)[:2]
        ]

    def paths(self) -> set[str]:
        return {urlsplit(url).path for url in self.requested}


@pytest.fixture(scope="module")
def document(server: Server) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(server.url + "/openapi.json").json()
    return document


@pytest.fixture
def open_docs(browser: Browser, server: Server) -> Iterator[Callable[[str], DocsPage]]:
    """open_docs("/docs") -> the page, recording every request made from it from the start."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})

    def open_page(path: str) -> DocsPage:
        opened = DocsPage(context.new_page())
        opened.page.on("request", lambda request: opened.requested.append(request.url))
        opened.page.goto(server.url + path)
        return opened

    yield open_page
    context.close()


def _operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted(
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    )


def test_the_docs_page_shows_every_operation(
    open_docs: Callable[[str], DocsPage], document: dict[str, Any], server: Server
) -> None:
    expected = _operations(document)
    docs = open_docs("/docs")
    docs.page.wait_for_function(f"document.querySelectorAll('.opblock').length >= {len(expected)}")
    shown = docs.page.locator(".opblock").evaluate_all(
        """blocks => blocks.map(block => [
            block.querySelector('.opblock-summary-method').textContent.toLowerCase(),
            block.querySelector('.opblock-summary-path').dataset.path,
        ])"""
    )
    assert sorted(map(tuple, shown)) == expected
    assert docs.offsite(server) == []


def _documented_example(document: dict[str, Any], path: str) -> Any:
    """The first example of the request body's schema: the one /docs fills in."""
    reference = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return document["components"]["schemas"][reference["$ref"].rsplit("/", 1)[1]]["examples"][0]


def test_trying_the_wine_example_in_the_docs_shows_the_bottles(
    open_docs: Callable[[str], DocsPage], document: dict[str, Any], server: Server
) -> None:
    example = _documented_example(document, "/predict/wine")
    docs = open_docs("/docs")
    page = docs.page
    block = page.locator(".opblock-post").filter(has=page.locator('[data-path="/predict/wine"]'))
    block.locator(".opblock-summary").click()
    block.get_by_role("button", name="Try it out").click()
    assert json.loads(block.locator("textarea.body-param__text").input_value()) == example
    block.get_by_role("button", name="Execute").click()
    response = block.locator(".live-responses-table tr.response")
    response.wait_for()
    assert response.locator(".response-col_status").inner_text().strip() == "200"
    shown = json.loads(response.locator(".response-col_description pre").first.inner_text())
    assert shown == httpx.post(server.url + "/predict/wine", json=example).json()
    assert isinstance(shown["bottles"], float)
    assert "/predict/wine" in docs.paths()
    assert docs.offsite(server) == []


@pytest.mark.parametrize(
    ("path", "rendered", "bundle"),
    [
        ("/docs", ".opblock", "/docs/swagger-ui-bundle.js"),
        ("/redoc", REDOC_OPERATION, "/redoc/redoc.standalone.js"),
    ],
    ids=["swagger-ui", "redoc"],
)
def test_the_docs_load_nothing_from_another_host(
    open_docs: Callable[[str], DocsPage], server: Server, path: str, rendered: str, bundle: str
) -> None:
    docs = open_docs(path)
    docs.page.wait_for_selector(rendered)
    docs.page.wait_for_load_state("networkidle")
    favicon = urljoin(server.url + path, docs.page.locator("link[rel~='icon']").get_attribute("href"))
    assert {bundle, "/openapi.json"} <= docs.paths()
    assert docs.offsite(server) == []
    assert urlsplit(favicon)[:2] == urlsplit(server.url)[:2]
    assert httpx.get(favicon).headers["content-type"] == "image/png"


def test_redoc_shows_every_operation(
    open_docs: Callable[[str], DocsPage], document: dict[str, Any], server: Server
) -> None:
    expected = sorted(
        operation["operationId"]
        for item in document["paths"].values()
        for method, operation in item.items()
        if method in HTTP_METHODS
    )
    docs = open_docs("/redoc")
    docs.page.wait_for_function(f'document.querySelectorAll("{REDOC_OPERATION}").length >= {len(expected)}')
    sections = docs.page.locator(REDOC_OPERATION).evaluate_all(
        "sections => sections.map(section => section.dataset.sectionId)"
    )
    assert sorted(sections) == [f"operation/{operation_id}" for operation_id in expected]
    assert docs.offsite(server) == []
