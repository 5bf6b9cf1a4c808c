"""One unit of work per request (common/context.py get_session, db/unit_of_work.py): committed before the
response when the handler succeeds, rolled back when it raises, an IntegrityError answered as 409 in one place,
and a commit that fails is an error response, never a 2xx for data that was not stored."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session as OrmSession

from ihub.common.context import Session
from ihub.common.errors import ApiError
from ihub.provisioning.deps import Caller
from ihub.tenancy import service as tenancy
from ihub.tenancy.models import Organization
from ihub.tenancy.schemas import OrgCreate

pytestmark = pytest.mark.anyio


async def org_names(app: Any) -> list[str]:
    context = app.state.context
    async with context.readers() as session:
        return list(await session.scalars(select(Organization.name).order_by(Organization.id)))


def mount_failing_route(app: Any) -> None:
    """A handler that writes through a service (which flushes) and then fails, as a later check would."""
    router = APIRouter()

    @router.post("/api/v1/test-only/org-then-fail")
    async def org_then_fail(caller: Caller, session: Session) -> dict[str, str]:
        org = await tenancy.create_org(session, caller, OrgCreate.model_validate({"name": "Flushed"}))
        assert org.id is not None  # flushed: the row is in the transaction, with its id
        raise ApiError(400, "refused after the write", "invalid_request")

    app.include_router(router)


async def test_handler_error_after_a_flush_leaves_nothing(app, client, auth):
    mount_failing_route(app)
    response = await client.post("/api/v1/test-only/org-then-fail", headers=auth)
    assert response.status_code == 400, response.text
    assert response.json()["metadata"]["message"] == "refused after the write"
    assert "Flushed" not in await org_names(app)
    # The session was rolled back and given back: the next write works.
    assert (await client.post("/api/v1/org", json={"name": "Later"}, headers=auth)).status_code == 200
    assert "Later" in await org_names(app)


async def test_real_endpoint_failing_mid_batch_leaves_nothing(app, client, auth, monkeypatch):
    # POST /user/org/{id} inserts a batch; with the pre-check skipped (a concurrent request took the email
    # between check and insert), the first row is written and the second hits the unique email: the whole
    # request is rolled back, the first row included.
    taken = {"name": "Taken", "email": "taken@example.com", "role": "Member"}
    assert (await client.post("/api/v1/user/org/1", json=[taken], headers=auth)).status_code == 200

    async def nothing_taken(*_args: Any, **_kwargs: Any) -> set[str]:
        return set()

    monkeypatch.setattr(tenancy, "_emails_taken", nothing_taken)
    fresh = {"name": "Fresh", "email": "fresh@example.com", "role": "Member"}
    response = await client.post("/api/v1/user/org/1", json=[fresh, taken], headers=auth)
    assert response.status_code == 409, response.text
    assert response.json()["metadata"] == {
        "status": 409,
        "code": "conflict",
        "message": "a user with one of these emails already exists",
    }
    emails = [u["email"] for u in (await client.get("/api/v1/user/org/1", headers=auth)).json()["users"]]
    assert "fresh@example.com" not in emails
    assert emails.count("taken@example.com") == 1


async def test_race_lost_at_the_constraint_is_the_documented_409(client, auth, monkeypatch):
    # Skip the friendly pre-check, as a concurrent twin between check and insert does: the unique constraint
    # decides, and the unit of work answers with the 409 the service declared.
    assert (await client.post("/api/v1/org", json={"name": "Twin"}, headers=auth)).status_code == 200

    async def never_taken(*_args: Any, **_kwargs: Any) -> bool:
        return False

    monkeypatch.setattr(tenancy, "_name_taken", never_taken)
    response = await client.post("/api/v1/org", json={"name": "Twin"}, headers=auth)
    assert response.status_code == 409, response.text
    assert response.json() == {
        "metadata": {
            "status": 409,
            "code": "conflict",
            "message": "organization 1 already has a sub-organization named 'Twin'",
        }
    }


async def test_template_name_race_keeps_its_code(client, auth, monkeypatch):
    from ihub.templates import service as templates
    from template_kit import definition

    body = {"name": "T", "definition": definition()}
    first = await client.post("/api/v1/template/org/1", json=body, headers=auth)
    assert first.status_code == 200, first.text

    async def never_taken(*_args: Any, **_kwargs: Any) -> bool:
        return False

    monkeypatch.setattr(templates, "_name_taken", never_taken)
    response = await client.post("/api/v1/template/org/1", json=body, headers=auth)
    assert response.status_code == 409, response.text
    metadata = response.json()["metadata"]
    assert metadata["code"] == "name_taken"
    assert metadata["message"] == "a template named 'T' already exists in this organization"


class Deadlock(Exception):
    """What PostgreSQL's driver raises when the server aborted the transaction to break a deadlock."""

    sqlstate = "40P01"


@pytest.fixture
def failing_commit() -> Iterator[list[Exception]]:
    """Every ORM commit raises the exception put in the list (inside the real commit, before COMMIT is sent)."""
    errors: list[Exception] = []

    def before_commit(_session: OrmSession) -> None:
        if errors:
            raise errors[0]

    event.listen(OrmSession, "before_commit", before_commit)
    try:
        yield errors
    finally:
        event.remove(OrmSession, "before_commit", before_commit)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (OperationalError("COMMIT", {}, Exception("database is locked")), 503),
        (OperationalError("COMMIT", {}, Deadlock("deadlock detected")), 503),
        (IntegrityError("COMMIT", {}, Exception("deferred constraint")), 409),
        (RuntimeError("disk on fire"), 500),
    ],
    ids=["lock-timeout", "deadlock", "constraint", "unexpected"],
)
async def test_failed_commit_is_not_2xx_and_stores_nothing(app, auth, failing_commit, error, status):
    # Starlette answers an unexpected error with the 500 envelope and re-raises it for the server's log; this
    # client takes the answer, as a real one does.
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        failing_commit.append(error)
        response = await client.post("/api/v1/org", json={"name": "Uncommitted"}, headers=auth)
        failing_commit.clear()
    assert response.status_code == status, response.text
    assert set(response.json()) == {"metadata"}
    assert "Traceback" not in response.text and "disk on fire" not in response.text
    assert "Uncommitted" not in await org_names(app)


async def test_reads_and_their_auth_do_not_take_the_write_connection(app, client, auth):
    """A GET authenticates on the request's read-only session: with the write connection held by another
    transaction (on SQLite the only one, holding the write lock), reads still answer."""
    context = app.state.context
    async with context.sessions() as writer:
        await writer.execute(select(func.count()).select_from(Organization))  # BEGIN (IMMEDIATE on SQLite)
        response = await client.get("/api/v1/org", headers=auth)
        assert response.status_code == 200, response.text
        await writer.rollback()
