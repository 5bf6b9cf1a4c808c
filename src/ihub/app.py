"""create_app(): routers, middleware, error handlers, start-up and shut-down."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Scope

from ihub import __version__
from ihub.api_docs import install_docs
from ihub.audit.routes import router as audit_router
from ihub.common.body import add_body_schemas
from ihub.common.context import AppContext
from ihub.common.crypto import SecretBox
from ihub.common.errors import ApiError, envelope, status_slug
from ihub.common.limits import BodySizeLimit
from ihub.config import Settings, get_settings
from ihub.console.auth import SignInRequired
from ihub.console.errors import error_page, is_console_path, sign_in_redirect
from ihub.console.routes import router as console_router
from ihub.console.routes import static_files
from ihub.db.engine import create_engine, create_read_engine, create_sessionmaker, is_lock_timeout
from ihub.events.delivery import install as install_event_delivery
from ihub.events.routes import router as events_router
from ihub.executors.lifecycle import install as install_executor
from ihub.incoming.routes import router as incoming_router
from ihub.oauth.routes import router as oauth_router
from ihub.observability import metrics, tracing
from ihub.observability.routes import router as observability_router
from ihub.projects.routes import router as projects_router
from ihub.provisioning.routes import router as provisioning_router
from ihub.replays.routes import router as replays_router
from ihub.replays.worker import install as install_replay_worker
from ihub.runs.routes import router as runs_router
from ihub.templates.routes import router as templates_router
from ihub.tenancy.routes import router as tenancy_router
from ihub.wiring import connect_domains

log = logging.getLogger("ihub")

# Every router, wired explicitly (Netflix Dispatch style): auth is declared per router, in its module.
ROUTERS = [
    provisioning_router,
    tenancy_router,
    templates_router,
    projects_router,
    runs_router,
    replays_router,
    incoming_router,
    oauth_router,
    audit_router,
    events_router,
    console_router,
    observability_router,
]


def is_oauth_path(path: str) -> bool:
    """`/incoming/...` and `/{env}/incoming/...` speak RFC 6749/6750 errors, not the /api/v1 envelope."""
    parts = path.strip("/").split("/")
    return "incoming" in parts[:2]


def error_response(
    request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    if is_console_path(request.url.path):
        return error_page(request, status, code, message, headers)
    if is_oauth_path(request.url.path):
        body: dict[str, Any] = {"error": code, "error_description": message}
        headers = {"Cache-Control": "no-store", **(headers or {})}
    else:
        body = envelope(status, code, message)
    return JSONResponse(body, status_code=status, headers=headers)


def render_error(scope: Scope, error: ApiError) -> ASGIApp:
    """An ApiError rendered outside the routes (BodySizeLimit answers before the app runs)."""
    return error_response(Request(scope), error.status, error.code, error.message, error.headers)


# Where the web console is mounted (built in ihub/console); `GET /` sends people there.
CONSOLE_PATH = "/console/"

# Seconds a client should wait before retrying after a 503 for a busy database: a lock held past the
# timeout is usually a burst or a stuck transaction that clears within a second or two.
DB_BUSY_RETRY_AFTER = 2


def database_busy(request: Request) -> Response:
    return error_response(
        request,
        503,
        "temporarily_unavailable",
        "the database is busy; retry after a moment",
        {"Retry-After": str(DB_BUSY_RETRY_AFTER)},
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, error: SignInRequired) -> Response:
        return sign_in_redirect(request, error)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> Response:
        response = error_response(request, error.status, error.code, error.message, error.headers)
        if error.fields and not is_oauth_path(request.url.path) and not is_console_path(request.url.path):
            body = envelope(error.status, error.code, error.message)
            body["metadata"]["errors"] = error.fields
            response = JSONResponse(body, status_code=error.status, headers=error.headers)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
        messages = {
            404: f"no route {request.method} {request.url.path}",
            405: f"method {request.method} not allowed here",
        }
        message = messages.get(error.status_code, str(error.detail))
        return error_response(
            request, error.status_code, status_slug(error.status_code), message, dict(error.headers or {})
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> Response:
        fields = []
        for item in error.errors():
            loc = [str(p) for p in item.get("loc", ())]
            fields.append({"field": ".".join(loc[1:] or loc), "message": item.get("msg", "invalid")})
        text = "; ".join(f"{f['field']}: {f['message']}" for f in fields) or "invalid request"
        api_error = ApiError(400, text, "validation_error")
        api_error.fields = fields
        return await _api_error(request, api_error)

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, error: RecursionError) -> Response:
        # Input nested deeper than Python recurses (JSON in a form field, a payload ...): the client's
        # doing, wherever it was parsed, so a 400 rather than a 500.
        log.warning("recursion limit reached on %s %s", request.method, request.url.path)
        return error_response(request, 400, "invalid_request", "the request is nested too deeply to process")

    @app.exception_handler(PoolTimeout)
    async def _pool_exhausted(request: Request, error: PoolTimeout) -> Response:
        # Every connection stayed busy for db_lock_timeout_seconds: ask the client to come back, don't 500.
        log.warning("database connection wait timed out on %s %s", request.method, request.url.path)
        return database_busy(request)

    @app.exception_handler(OperationalError)
    async def _database_error(request: Request, error: OperationalError) -> Response:
        if is_lock_timeout(error):
            log.warning("database lock wait timed out on %s %s", request.method, request.url.path)
            return database_busy(request)
        return await _unexpected(request, error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:
        # Logged in full for the operator; the client learns nothing about the internals.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal_error", "internal error; the server log has the details")


def build_context(settings: Settings) -> AppContext:
    connect_domains()
    # Every process that may execute runs comes through here: traces if OTEL_* asks and the SDK is installed.
    tracing.configure_from_environment()
    master = settings.resolved_secret_key()
    url, lock_timeout = settings.resolved_database_url, settings.db_lock_timeout_seconds
    engine = create_engine(url, lock_timeout=lock_timeout)
    read_engine = create_read_engine(url, engine, lock_timeout=lock_timeout)
    return AppContext(
        settings=settings,
        engine=engine,
        sessions=create_sessionmaker(engine),
        box=SecretBox(master),
        master_key=master,
        read_sessions=create_sessionmaker(read_engine),
        read_engine=read_engine,
    )


def create_app(settings: Settings | None = None, *, run_worker: bool = True) -> FastAPI:
    settings = settings or get_settings()
    context = build_context(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hooks = app.state.lifecycle
        for start, _ in hooks:
            await start(app)
        try:
            yield
        finally:
            for _, stop in reversed(hooks):
                await stop(app)
            await context.engine.dispose()  # and the read engine with it (db/engine.py)

    app = FastAPI(
        title="ihub",
        version=__version__,
        description="Integration hub: provisioning API (/api/v1) and signed-JWT flow triggers (/{env}/incoming).",
        lifespan=lifespan,
        # FastAPI's pages load their scripts from a CDN; install_docs serves the same pages from local files.
        docs_url=None,
        redoc_url=None,
    )
    app.state.context = context
    app.state.run_worker = run_worker
    # (start, stop) coroutines taking the app; domains (executors) append to it.
    app.state.lifecycle = []
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/console/static", static_files(), name="console-static")
    # Background work (the executor and its workers) starts and stops with the app.
    install_executor(app)
    # Bulk replays (ihub.replays.worker) go on in every process that runs workers, shared by lease.
    install_replay_worker(app)
    # Event webhooks: the outbox's deliverer (ihub.events.delivery).
    install_event_delivery(app)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        read_timeout=settings.body_read_timeout_seconds,
        render=render_error,
    )
    # Outermost: the latency of every request, 413s and 500s included, under its route template.
    metrics.set_enabled(settings.metrics_enabled)
    app.add_middleware(metrics.HttpMetrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            add_body_schemas(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    install_docs(app)

    # HEAD too: load balancers and uptime checkers often probe with HEAD.
    @app.api_route("/healthz", methods=["GET", "HEAD"], include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # A person who opens the hub's address lands on the console; 307 keeps HEAD a HEAD.
    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def home(request: Request) -> RedirectResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return RedirectResponse(root + CONSOLE_PATH, status_code=307)

    return app
