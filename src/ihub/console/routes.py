"""The web console at `/console/`: every page module's routes, wired explicitly, and its static files.

Routes here are thin: they read the form, call the same services `/api/v1` calls (with the signed-in person's
`Principal`, so the same permission rules apply) and render a page. No business logic lives in this package.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.staticfiles import StaticFiles

from ihub.console.pages import (
    account,
    audit,
    events,
    failures,
    orgs,
    projects,
    replays,
    runs,
    signin,
    system,
    templates,
    triggers,
    users,
)
from ihub.console.web import STATIC_DIR

router = APIRouter(prefix="/console", include_in_schema=False)
PAGES = (signin, orgs, users, account, templates, projects, triggers, runs, failures, replays, system, audit, events)
for page_module in PAGES:
    router.include_router(page_module.router)


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)
