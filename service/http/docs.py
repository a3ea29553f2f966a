"""The API docs, /docs (Swagger UI) and /redoc (ReDoc), with every file served by the service.

FastAPI's own pages load their JavaScript and CSS from a public CDN and the favicon from
FastAPI's website: on a machine without internet /docs is blank. This is FastAPI's recipe for
self-hosting the docs' assets ("Custom Docs UI Static Assets (Self-Hosting)"), with the files
taken from the pinned `fastapi-standalone-docs` package rather than copied in by hand: it ships
the Swagger UI and ReDoc distributions with their licences (Swagger UI: Apache-2.0; ReDoc and
FastAPI's favicon: MIT), served here beside the files, at /docs/LICENSE,
/redoc/redoc.standalone.js.LICENSE.txt and /docs/fastapi/LICENSE. Only its files are used: its
StandaloneDocs class replaces FastAPI's module-level page functions for every app in the process.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(str(files("fastapi_standalone_docs") / "static"))
DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
FAVICON_PATH = f"{DOCS_PATH}/fastapi/favicon.png"


def install_docs(app: FastAPI) -> None:
    """Adds /docs and /redoc and the files they load. The app must be created with
    docs_url=None and redoc_url=None: otherwise FastAPI's own CDN pages answer those paths first."""
    openapi_url = app.openapi_url
    if app.docs_url or app.redoc_url or openapi_url is None:
        raise ValueError("install_docs needs an app made with docs_url=None, redoc_url=None, an openapi_url")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_PATH}/swagger-ui.css",
            swagger_favicon_url=root + FAVICON_PATH,
            # Swagger UI's badge would send the document to an online validator.
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{REDOC_PATH}/redoc.standalone.js",
            redoc_favicon_url=root + FAVICON_PATH,
            with_google_fonts=False,
        )

    # Each page's files under its own path: the package's ReDoc bundle loads its logo from
    # the page's path (/redoc/logo-mini.svg). The favicon mount comes first, being the longer path.
    app.mount(f"{DOCS_PATH}/fastapi", StaticFiles(directory=ASSETS / "fastapi"), name="docs-fastapi")
    app.mount(DOCS_PATH, StaticFiles(directory=ASSETS / "swagger"), name="docs-swagger")
    app.mount(REDOC_PATH, StaticFiles(directory=ASSETS / "redoc"), name="docs-redoc")
