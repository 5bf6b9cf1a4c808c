"""`/docs` (Swagger UI) and `/redoc` served with their scripts and styles from this installation.

FastAPI's default pages load swagger-ui and redoc from a CDN: offline, or behind a proxy that blocks it,
they show a blank page. The `fastapi-offline` package ships those dist files (swagger-ui-bundle.js,
swagger-ui.css, redoc.standalone.js and a favicon); only its static files are used here, mounted at
ASSETS_PATH, with FastAPI's own page builders pointed at them.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, swagger_ui_default_parameters
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs-assets"
ASSETS_PACKAGE = ("fastapi_offline", "static")

# Swagger UI sends the document to validator.swagger.io for a badge unless told not to: nothing leaves the
# browser for a page that has to work offline.
SWAGGER_UI_PARAMETERS = {**swagger_ui_default_parameters, "validatorUrl": None}


def install_docs(app: FastAPI, openapi_url: str = "/openapi.json") -> None:
    """Mount the assets and serve `/docs` and `/redoc` (create_app turns FastAPI's CDN pages off)."""
    app.mount(ASSETS_PATH, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")

    def prefix(request: Request) -> str:
        # Behind a proxy that mounts the hub under a path (uvicorn --root-path), links must carry it.
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = prefix(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - API reference",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = prefix(request)
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - API reference",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            # The default pulls fonts from Google; redoc falls back to the browser's own.
            with_google_fonts=False,
        )
