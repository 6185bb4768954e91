"""``/docs``: Swagger UI served from files shipped in the package (swagger-ui-dist 5, Apache
2.0, see swagger/LICENSE), so the page works on a machine without internet access."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(__file__).parent / "swagger"
PREFIX = "/docs/assets"


def install_docs(app: FastAPI, openapi_url: str) -> None:
    app.mount(PREFIX, StaticFiles(directory=ASSETS), name="swagger-assets")

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title="jobq API",
            swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{PREFIX}/favicon-32x32.png",
        )

    app.add_api_route("/docs", docs, include_in_schema=False, response_class=HTMLResponse)
