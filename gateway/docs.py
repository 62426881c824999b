"""/docs (Swagger UI) and /redoc, served entirely by the gateway: they work offline.

FastAPI's own pages load Swagger UI, ReDoc, a favicon and (ReDoc) Google Fonts from
public CDNs, so on a machine without internet /docs is blank. This is FastAPI's
documented self-hosting recipe ("Custom Docs UI Static Assets"): the same pages,
pointing at assets under `/docs/assets/`, which are the files the `fastapi-offline`
package ships (Swagger UI's bundle and CSS, ReDoc's standalone bundle, a favicon).
That package is used for its files only; its FastAPI subclass is not. Swagger UI's
validator badge, which calls out to a public validator, is switched off.
tests/integration/test_docs_offline.py checks that neither page names another host.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs/assets"
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
SWAGGER_UI_PARAMETERS = {
    "dom_id": "#swagger-ui",
    "layout": "BaseLayout",
    "deepLinking": True,
    "showExtensions": True,
    "showCommonExtensions": True,
    # Otherwise Swagger UI asks a public validator about the document (and shows a badge).
    "validatorUrl": None,
}


def install(app: FastAPI, *, openapi_url: str, title: str) -> None:
    """Serve /docs and /redoc with local assets (call with FastAPI's own docs turned off)."""
    if not (ASSETS_DIR / "swagger-ui-bundle.js").is_file():
        raise RuntimeError(f"the API docs' assets are missing from {ASSETS_DIR}; run make install")
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )
