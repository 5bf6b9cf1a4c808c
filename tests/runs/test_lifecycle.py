"""Run state transitions (ihub.runs.lifecycle), each guard proven by its effect on the row: a transition its
guard refuses leaves the row exactly as it was. Time is passed in (`now`), never waited for."""

from __future__ import annotations

import ast
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flowkit import jira_definition
from sqlalchemy import select

import ihub
from ihub.db.base import utcnow
from ihub.flows.models import Flow
from ihub.runs import lifecycle
from ihub.runs.lifecycle import Cancellation, Lease, Renewal
from ihub.runs.models import Run
from ihub.runs.service import create_run
from ihub.runs.status import FINAL_STEP_STATUSES, TERMINAL_RUN_STATUSES, RunStatus, StepStatus

pytestmark = pytest.mark.anyio

FLOW = {"key": "f", "trigger": "manual", "steps": [{"id": "out", "type": "respond", "body": "{{ trigger.body }}"}]}
LEASE_A = Lease("worker-a", 60.0)
LEASE_B = Lease("worker-b", 60.0)


@pytest.fixture
def settings(settings):  # noqa: ANN001, ANN201
    return settings.model_copy(update={"executor": "local"})


@pytest.fixture
async def app(settings):  # noqa: ANN001, ANN201
    from ihub.app import create_app

    # No executor: the tests make every transition themselves.
    application = create_app(settings, run_worker=False)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def queued(kit) -> int:  # noqa: ANN001
    """A queued run, due now."""
    project = await kit.project(jira_definition([FLOW], slot_type="http"))
    async with kit.app.state.context.sessions() as session:
        flow = await session.get(Flow, int(kit.flow_id(project, "f")))
        run = await create_run(session, flow=flow, trigger_type="manual", trigger={"body": {}})
        await session.commit()
        return run.id


@pytest.fixture
def transition(kit) -> Callable[..., Awaitable[Any]]:  # noqa: ANN001
    """Run one lifecycle function in its own committed transaction, as the engine and the API do."""

    async def apply(function: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        async with kit.app.state.context.sessions() as session, session.begin():
            return await function(session, *args, **kwargs)

    return apply


@pytest.fixture
def row(kit) -> Callable[[int], Awaitable[dict[str, Any]]]:  # noqa: ANN001
    async def read(run_id: int) -> dict[str, Any]:
        async with kit.app.state.context.sessions() as session:
            found = (await session.execute(select(Run.__table__).where(Run.id == run_id))).mappings().one()
            return dict(found)

    return read


async def test_claim_takes_a_due_queued_run(queued, transition, row) -> None:  # noqa: ANN001
    now = utcnow()
    assert await transition(lifecycle.claim, queued, LEASE_A, now=now)
    claimed = await row(queued)
    assert claimed["status"] == RunStatus.RUNNING
    assert claimed["lease_owner"] == "worker-a"
    assert claimed["attempt"] == 1
    assert claimed["next_attempt_at"] is None
    assert claimed["lease_expires_at"] == now + timedelta(seconds=60)
    assert claimed["started_at"] == now


async def test_claim_of_a_run_not_yet_due_is_refused(queued, transition, row) -> None:  # noqa: ANN001
    assert await transition(lifecycle.claim, queued, LEASE_A)
    later = utcnow() + timedelta(minutes=5)
    assert await transition(lifecycle.release, queued, "worker-a", next_attempt_at=later)
    before = await row(queued)
    assert before["status"] == RunStatus.QUEUED
    assert not await transition(lifecycle.claim, queued, LEASE_B)
    assert await row(queued) == before
    # Once its time has come it is claimable again, and the attempt counts.
    assert await transition(lifecycle.claim, queued, LEASE_B, now=later + timedelta(seconds=1))
    assert (await row(queued))["attempt"] == 2


async def test_a_live_lease_cannot_be_claimed(queued, transition, row) -> None:  # noqa: ANN001
    assert await transition(lifecycle.claim, queued, LEASE_A)
    before = await row(queued)
    assert not await transition(lifecycle.claim, queued, LEASE_B)
    assert await row(queued) == before


async def test_an_expired_lease_is_reclaimed_and_the_stale_owner_changes_nothing(queued, transition, row) -> None:  # noqa: ANN001
    # worker-a claims with a one-minute lease and stops renewing it (it died or hangs); two minutes later:
    first = utcnow()
    assert await transition(lifecycle.claim, queued, LEASE_A, now=first)
    assert await transition(lifecycle.claim, queued, LEASE_B, now=first + timedelta(minutes=2))
    reclaimed = await row(queued)
    assert reclaimed["lease_owner"] == "worker-b"
    assert reclaimed["attempt"] == 2
    assert reclaimed["started_at"] == first  # the first claim's time stays

    # worker-a wakes up: it can neither renew, nor finish, nor release the run.
    assert await transition(lifecycle.renew, queued, LEASE_A) is Renewal.LEASE_LOST
    assert await transition(lifecycle.renew, queued, LEASE_A, refuse_if_cancel_requested=True) is Renewal.LEASE_LOST
    assert not await transition(lifecycle.finish, queued, "worker-a", RunStatus.SUCCEEDED, result={"x": 1})
    assert not await transition(lifecycle.release, queued, "worker-a", next_attempt_at=utcnow())
    assert await transition(lifecycle.release_all, "worker-a") == []
    assert await row(queued) == reclaimed

    # The owner can.
    later = utcnow() + timedelta(seconds=30)
    assert await transition(lifecycle.renew, queued, LEASE_B, now=later) is Renewal.RENEWED
    assert (await row(queued))["lease_expires_at"] == later + timedelta(seconds=60)
    assert await transition(lifecycle.finish, queued, "worker-b", RunStatus.SUCCEEDED, result={"x": 1})
    finished = await row(queued)
    assert finished["status"] == RunStatus.SUCCEEDED
    assert finished["result"] == {"x": 1}
    assert finished["lease_expires_at"] is None
    assert finished["finished_at"] is not None
    assert finished["lease_owner"] == "worker-b"  # shown as the run's worker


async def test_renewal_refused_once_cancel_was_requested(queued, transition, row) -> None:  # noqa: ANN001
    assert await transition(lifecycle.claim, queued, LEASE_A)
    assert await transition(lifecycle.cancel, queued) is Cancellation.REQUESTED
    before = await row(queued)
    assert before["status"] == RunStatus.RUNNING
    assert before["cancel_requested"] is True
    # About to start a step with side effects: refused, so the engine stops instead.
    assert await transition(lifecycle.renew, queued, LEASE_A, refuse_if_cancel_requested=True) is (
        Renewal.CANCEL_REQUESTED
    )
    assert await row(queued) == before
    # The heartbeat keeps the lease until the engine finishes the run as cancelled.
    assert await transition(lifecycle.renew, queued, LEASE_A) is Renewal.RENEWED
    assert await transition(lifecycle.finish, queued, "worker-a", RunStatus.CANCELLED, error="cancelled on request")
    assert (await row(queued))["status"] == RunStatus.CANCELLED


async def test_cancel_of_a_queued_run_is_immediate(queued, transition, row) -> None:  # noqa: ANN001
    assert await transition(lifecycle.cancel, queued) is Cancellation.CANCELLED
    cancelled = await row(queued)
    assert cancelled["status"] == RunStatus.CANCELLED
    assert cancelled["error"] == lifecycle.CANCELLED_ON_REQUEST
    assert cancelled["finished_at"] is not None
    assert not await transition(lifecycle.claim, queued, LEASE_A)
    assert await row(queued) == cancelled


async def test_release_all_hands_back_only_the_owners_runs(kit, queued, transition, row) -> None:  # noqa: ANN001
    assert await transition(lifecycle.claim, queued, LEASE_A)
    async with kit.app.state.context.sessions() as session:
        other = await create_run(
            session, flow=await session.get(Flow, (await row(queued))["flow_id"]), trigger_type="manual", trigger={}
        )
        await session.commit()
    assert await transition(lifecycle.claim, other.id, LEASE_B)
    now = utcnow()
    assert await transition(lifecycle.release_all, "worker-a", now=now) == [queued]
    released = await row(queued)
    assert released["status"] == RunStatus.QUEUED
    assert released["next_attempt_at"] == now
    assert released["lease_expires_at"] is None
    assert (await row(other.id))["status"] == RunStatus.RUNNING


async def _finished_as(status: RunStatus, run_id: int, transition: Any) -> None:
    if status is RunStatus.CANCELLED:
        assert await transition(lifecycle.cancel, run_id) is Cancellation.CANCELLED
        return
    assert await transition(lifecycle.claim, run_id, LEASE_A)
    assert await transition(lifecycle.finish, run_id, "worker-a", status, error="boom")


@pytest.mark.parametrize("status", sorted(TERMINAL_RUN_STATUSES))
async def test_terminal_states_cannot_be_left(status: RunStatus, queued, transition, row) -> None:  # noqa: ANN001
    await _finished_as(status, queued, transition)
    before = await row(queued)
    assert before["status"] == status
    far_future = utcnow() + timedelta(days=1)
    assert not await transition(lifecycle.finish, queued, "worker-a", RunStatus.SUCCEEDED, result={"late": True})
    assert not await transition(lifecycle.release, queued, "worker-a", next_attempt_at=utcnow())
    assert not await transition(lifecycle.claim, queued, LEASE_B, now=far_future)
    assert await transition(lifecycle.renew, queued, LEASE_A) is Renewal.LEASE_LOST
    assert await transition(lifecycle.cancel, queued) is Cancellation.TOO_LATE
    assert await transition(lifecycle.release_all, "worker-a") == []
    assert await row(queued) == before


@pytest.mark.parametrize("status", [RunStatus.QUEUED, RunStatus.RUNNING])
async def test_finish_takes_only_a_terminal_status(status: RunStatus, queued, transition, row) -> None:  # noqa: ANN001
    assert await transition(lifecycle.claim, queued, LEASE_A)
    before = await row(queued)
    with pytest.raises(ValueError, match="finishes as one of"):
        await transition(lifecycle.finish, queued, "worker-a", status)
    assert await row(queued) == before


def test_status_values_are_the_stored_strings() -> None:
    # Rows written before the enums existed, and API clients, see exactly these.
    assert [s.value for s in RunStatus] == [
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "waiting_for_connection",
    ]
    assert [s.value for s in StepStatus] == [
        "running",
        "succeeded",
        "failed",
        "retrying",
        "waiting",
        "interrupted",
        "parked",
    ]
    assert {s for s in RunStatus if s.terminal} == TERMINAL_RUN_STATUSES == {"succeeded", "failed", "cancelled"}
    assert {s for s in StepStatus if s.final} == FINAL_STEP_STATUSES == {"succeeded", "failed"}


# -- the rule stays true: a run's status is written in runs/lifecycle.py only ------------------------------------

PACKAGE = Path(ihub.__file__).parent
LIFECYCLE = PACKAGE / "runs" / "lifecycle.py"


def status_writes_to_runs(source: str) -> list[int]:
    """Lines of `update(Run)...values(...)` calls that set `status` (or pass values the scan cannot see)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "values"):
            continue
        if not _updates_run(node.func.value):
            continue
        keywords = {keyword.arg for keyword in node.keywords}
        dict_keys = {
            key.value
            for argument in node.args
            if isinstance(argument, ast.Dict)
            for key in argument.keys
            if isinstance(key, ast.Constant)
        }
        opaque = None in keywords or any(not isinstance(argument, ast.Dict) for argument in node.args)
        if "status" in keywords | dict_keys or opaque:
            lines.append(node.lineno)
    return lines


def _updates_run(node: ast.expr) -> bool:
    """Whether a method chain starts at `update(Run)` (`update(Run).where(...)` and so on)."""
    while isinstance(node, ast.Call | ast.Attribute):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "update":
            return any(isinstance(arg, ast.Name) and arg.id == "Run" for arg in node.args)
        node = node.func if isinstance(node, ast.Call) else node.value
    return False


def test_the_scan_sees_status_writes() -> None:
    assert status_writes_to_runs("update(Run).where(x).values(status='failed')") == [1]
    assert status_writes_to_runs("update(Run).values({'status': s})") == [1]
    assert status_writes_to_runs("update(Run).where(x).values(**values)") == [1]
    assert status_writes_to_runs("update(Run).where(x).values(lease_expires_at=None)") == []
    assert status_writes_to_runs("update(StepRecord).values(status='failed')") == []
    assert status_writes_to_runs(LIFECYCLE.read_text()) != []


def test_no_module_outside_the_lifecycle_writes_a_run_status() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != LIFECYCLE and (lines := status_writes_to_runs(path.read_text()))
    }
    assert offenders == {}, "a run's status changes in ihub.runs.lifecycle only"
    raw = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py") if path != LIFECYCLE and _raw_update(path)]
    assert raw == [], "no raw SQL UPDATE of runs either"


def _raw_update(path: Path) -> bool:
    """A string passed to a call (text("UPDATE runs ..."), exec_driver_sql) that updates runs; docstrings may
    mention one."""
    return any(
        isinstance(argument, ast.Constant)
        and isinstance(argument.value, str)
        and "update runs" in argument.value.lower()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        for argument in node.args
    )


# -- parked runs: waiting_for_connection -------------------------------------------------------------------------


async def _parked(run_id: int, transition: Any, until_hours: float = 72) -> None:
    assert await transition(lifecycle.claim, run_id, LEASE_A)
    until = utcnow() + timedelta(hours=until_hours)
    assert await transition(lifecycle.park, run_id, "worker-a", slot="jira", until=until)


async def test_park_is_the_lease_owners_and_holds_no_lease(queued, transition, row) -> None:  # noqa: ANN001
    assert await transition(lifecycle.claim, queued, LEASE_A)
    until = utcnow() + timedelta(hours=72)
    assert not await transition(lifecycle.park, queued, "worker-b", slot="jira", until=until)
    assert await transition(lifecycle.park, queued, "worker-a", slot="jira", until=until)
    parked = await row(queued)
    assert parked["status"] == RunStatus.WAITING_FOR_CONNECTION
    assert (parked["waiting_for_slot"], parked["lease_expires_at"], parked["next_attempt_at"]) == ("jira", None, None)
    # Not due, not renewable, not finishable or releasable by its former owner: it waits for the reconnect.
    assert not await transition(lifecycle.claim, queued, LEASE_B)
    assert await transition(lifecycle.renew, queued, LEASE_A) is Renewal.LEASE_LOST
    assert not await transition(lifecycle.finish, queued, "worker-a", RunStatus.FAILED, error="late")
    assert not await transition(lifecycle.release, queued, "worker-a", next_attempt_at=utcnow())
    assert await row(queued) == parked


async def test_resume_queues_only_the_runs_parked_on_that_slot(kit, queued, transition, row) -> None:  # noqa: ANN001
    await _parked(queued, transition)
    project_id = (await row(queued))["project_id"]
    assert await transition(lifecycle.resume, project_id, "other") == []
    assert await transition(lifecycle.resume, project_id + 1, "jira") == []
    assert (await row(queued))["status"] == RunStatus.WAITING_FOR_CONNECTION
    assert await transition(lifecycle.resume, project_id, "jira") == [queued]
    resumed = await row(queued)
    assert resumed["status"] == RunStatus.QUEUED
    assert (resumed["waiting_for_slot"], resumed["parked_until"]) == (None, None)
    assert await transition(lifecycle.claim, queued, LEASE_B)  # due now
    assert await transition(lifecycle.resume, project_id, "jira") == []  # running runs are not touched


async def test_an_expired_park_is_claimable_and_keeps_what_it_waited_for(queued, transition, row) -> None:  # noqa: ANN001
    await _parked(queued, transition)
    assert not await transition(lifecycle.claim, queued, LEASE_B, now=utcnow() + timedelta(hours=71))
    assert await transition(lifecycle.claim, queued, LEASE_B, now=utcnow() + timedelta(hours=73))
    claimed = await row(queued)
    assert claimed["status"] == RunStatus.RUNNING and claimed["lease_owner"] == "worker-b"
    # The engine tells an expired park from a resumed run by these.
    assert claimed["waiting_for_slot"] == "jira" and claimed["parked_until"] is not None


async def test_cancel_of_a_parked_run_is_immediate_and_a_resume_then_changes_nothing(queued, transition, row) -> None:  # noqa: ANN001
    await _parked(queued, transition)
    assert await transition(lifecycle.cancel, queued) is Cancellation.CANCELLED
    cancelled = await row(queued)
    assert cancelled["status"] == RunStatus.CANCELLED
    assert await transition(lifecycle.resume, cancelled["project_id"], "jira") == []
    assert await row(queued) == cancelled
