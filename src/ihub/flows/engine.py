"""The flow engine: claims a run, executes its steps, checkpoints every step, releases or finishes the run.

Durability rules (the database is the truth):
- A run is claimed atomically: `UPDATE runs SET status='running', lease_owner=me ... WHERE status='queued' AND due`
  (or a `running` run whose lease expired because its worker died). Only the lease owner may write step records
  or finish the run; every write re-checks the lease in the same statement, so a duplicate delivery or a stale
  worker cannot run or record a step twice. These guarded UPDATEs are `ihub.runs.lifecycle`'s (its docstring has
  the whole transition table); the engine calls them inside its own short transactions.
- Every step's result is stored (`run_steps`) when it finishes. A resumed run walks the flow again, restores
  finished steps from their records (never repeating them) and continues at the first unfinished one.
- At-least-once: an `http` step whose worker died after sending the request but before recording the answer is
  sent again when the run resumes. Targets get `Idempotency-Key: <run uid>-<step path>` to deduplicate; the
  run's uid is a UUID made when the run is inserted, so keys never repeat across hubs or database resets.
- Claims, finishes and releases of different runs that happen at the same time share one transaction (group
  commit); each keeps its own guarded UPDATE, so sharing a transaction changes nothing about who may write.
  A run's reads after its claim use a read-only connection: no write lock is held while a flow loads.
- A retry or a long `delay` never holds a worker: the run goes back to `queued` with `next_attempt_at` and the
  executor picks it up when it is due.
- A step whose connection needs a person to reconnect it (ConnectionError_ kind `needs_reconnect`: refresh
  refused, grant revoked) neither fails the run nor spends a retry, since no retry can succeed before the person
  acts and failing would lose the run: the attempt is recorded as `parked`, the run is parked
  (`waiting_for_connection`, until now + connection_max_wait_hours) and the connection marked needs_reconnect, in
  one transaction. The reconnect queues the run again and it resumes like any other (finished steps restored);
  a run still parked when its wait runs out is claimed only to be failed with a clear error.

- A run's final failed/succeeded status and its park emit their event (`run.failed`, `run.succeeded`,
  `run.parked`: ihub.events.outbox) inside the transaction of the guarded UPDATE, and only when that UPDATE changed
  the run: the event exists exactly when the transition does, and a stale worker's refused finish emits nothing.
  When no endpoint listens this costs one indexed SELECT (the facts come from what the execution loaded).

This module owns the walk, the checkpoints, restore and the lease; it names no step type. What a step does is
its handler's (ihub.flows.steps), reached through a `StepRun` context; when its record is written, whether it
is walked again on resume and what a finished one restores are traits of its `StepType`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.common.errors import ApiError
from ihub.common.group_commit import GroupCommit
from ihub.db.base import utcnow
from ihub.db.write_gate import until_no_write_held_here
from ihub.egress import egress_client, policy_from_settings
from ihub.events import outbox
from ihub.events.outbox import EventType
from ihub.flows.connections import ConnectionError_, TokenCache, redact_text, redact_value, secret_values
from ihub.flows.expressions import ExpressionError, evaluate, render
from ihub.flows.service import LoadedFlow, load_flow
from ihub.flows.steps.base import RetryLater, StepError, StepModel, StepType
from ihub.flows.steps.registry import step_type
from ihub.flows.steps.values import SUMMARY_CAP, dumps, json_safe, summarize
from ihub.flows.storage import cannot_store, unstorable
from ihub.oauth.refresh import AuthorizationCodeTokens
from ihub.observability import metrics, tracing
from ihub.projects import health
from ihub.projects.models import Connection
from ihub.projects.runtime import RUNTIMES
from ihub.projects.service import connection_runtime
from ihub.projects.status import ConnectionStatus
from ihub.runs import failures, lifecycle
from ihub.runs.lifecycle import CANCELLED_ON_REQUEST, Lease, Renewal
from ihub.runs.models import Run, StepRecord
from ihub.runs.status import FINAL_STEP_STATUSES, TERMINAL_RUN_STATUSES, RunStatus, StepStatus

__all__ = ["SUMMARY_CAP", "Engine", "Outcome", "RetryLater", "RunExecution", "StepError", "summarize"]

log = logging.getLogger("ihub.engine")

LEASE_SECONDS = 60.0
STATE_BODY_CAP = 256 * 1024
MAX_CLAIMS = 100
# Steps one execution of a run may walk (nested foreach multiplies): their records are kept until written.
MAX_STEPS_PER_EXECUTION = 20_000
# Records of pure steps are written together, at most this many per transaction, so a long run of pure steps
# never holds SQLite's only write lock for long while other processes' writes (the API's) wait in SQLite's busy
# handler. bench/isolation.py cpu-foreach, token p99: 20 000 rows in one transaction > 5 s (503s); 500 per
# transaction 1.4 s; 100: 362 ms; 25: 186 ms (quiet: 14 ms). With the writer gate (db/write_gate.py) the
# waits are short either way (25: 24-33 ms, 100: 27-42 ms; quiet 17-20). The cost is one lease UPDATE per batch.
PENDING_WRITE_BATCH = 25
DEFAULT_RUN_TIME_BUDGET = 300.0
DEFAULT_CONNECTION_MAX_WAIT_HOURS = 72.0
# The event a run's final status emits (ihub.events), in the transaction that sets it.
RUN_EVENTS = {RunStatus.FAILED: EventType.RUN_FAILED, RunStatus.SUCCEEDED: EventType.RUN_SUCCEEDED}


class StepFailed(Exception):
    """A step failed for good (on_error: fail): the run fails with this message."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"step {path}: {message}")
        self.path = path


class Cancelled(Exception):
    pass


class Parked(Exception):
    """A step's connection needs a reconnect: the run waits for it (waiting_for_connection), nothing failed."""

    def __init__(self, slot: str, message: str, attempt_started: datetime) -> None:
        super().__init__(f"connection {slot}: {message}")
        self.slot = slot
        self.message = message
        self.attempt_started = attempt_started


class LeaseLost(Exception):
    pass


class OverBudget(Exception):
    """The run used up its time budget (or step count): it fails, whatever its steps' on_error says."""


@dataclass
class Outcome:
    """What happened to a run in one execution: a final status, or `queued` again with `next_attempt_at`."""

    status: RunStatus
    next_attempt_at: datetime | None = None


@dataclass
class Scope:
    steps: dict[str, Any]
    vars: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def child(self, **extra: Any) -> Scope:
        return Scope(dict(self.steps), dict(self.vars), {**self.extra, **extra})


class Engine:
    """Executes runs. One per worker process; shares an HTTP connection pool and an OAuth2 token cache."""

    def __init__(self, context: Any, owner: str | None = None, *, lease_seconds: float = LEASE_SECONDS) -> None:
        self.context = context
        self.sessions = context.sessions
        self.owner = owner or f"local-{uuid.uuid4().hex[:12]}"
        self.lease_seconds = lease_seconds
        # Every outgoing call of a flow passes the egress policy on the address it connects to.
        self.http = egress_client(policy_from_settings(context.settings), timeout=30.0)
        self.max_response_bytes: int = context.settings.http_max_response_bytes
        # Tokens of connections a person authorized are refreshed in the database (ihub.oauth.refresh).
        self.tokens = TokenCache(AuthorizationCodeTokens(context))
        # Group commit (common/group_commit.py): runs claimed, finished or released at the same time share a
        # transaction, so a burst of short runs costs a few write locks instead of two per run. Each batch locks
        # its runs in id order, as deleting a project does (projects.service.delete_project): on PostgreSQL two
        # transactions that lock the same runs in one order wait for each other instead of deadlocking.
        self._claims: GroupCommit[int, bool] = GroupCommit(self._claim_together)
        self._hand_overs: GroupCommit[HandOver, bool] = GroupCommit(self._hand_over_together)

    @property
    def lease(self) -> Lease:
        """The lease this engine claims and renews runs with (its owner name and length)."""
        return Lease(self.owner, self.lease_seconds)

    async def close(self) -> None:
        await self.http.aclose()

    async def release_all(self) -> list[int]:
        """On shutdown: hand this worker's unfinished runs back (queued, due now) so nobody waits for a lease."""
        async with self.sessions() as session, session.begin():
            return await lifecycle.release_all(session, self.owner)

    async def claim(self, run_id: int) -> bool:
        """Claim a run atomically (queued and due, or running with an expired lease)."""
        async with self.sessions() as session, session.begin():
            return await lifecycle.claim(session, run_id, self.lease)

    async def execute(self, run_id: int) -> Outcome | None:
        """Claim and execute a run; None if it was not claimable (done, not due, or another worker has it)."""
        if not await self._claims.write(run_id):
            return None
        execution = RunExecution(self, run_id)
        try:
            # The run is ours: what it needs is read on a read-only connection, so no write lock is held while
            # the flow and its records load (the claim's transaction is shared with other runs' claims).
            async with self.context.readers() as session:
                await execution.load(session)
        except Exception:
            # Loading failed: release with a backoff; the attempt counts, so a run that can never load ends as
            # failed after MAX_CLAIMS.
            log.exception("run %s: could not load", run_id)
            return await execution.release_after_error()
        return await execution.execute()

    async def _claim_together(self, run_ids: Sequence[int]) -> list[bool]:
        """Claims that arrive together share one transaction (group commit): one write lock for a batch."""
        now = utcnow()
        claimed: dict[int, bool] = {}
        async with self.sessions() as session, session.begin():
            for run_id in sorted(set(run_ids)):
                claimed[run_id] = await lifecycle.claim(session, run_id, self.lease, now=now)
        # The same run twice in one batch (two callers): the claim goes to the first, as in separate transactions.
        answers = []
        for run_id in run_ids:
            answers.append(claimed.pop(run_id, False))
        return answers

    async def hand_over(
        self, run_id: int, transition: Callable[[AsyncSession], Awaitable[bool]], closed: list[StepRecord]
    ) -> bool:
        """Apply `transition` (finish or release) and store `closed` records in the same transaction, shared with
        other runs finishing at the same time. False if the lease was lost (nothing of this run is written)."""
        return await self._hand_overs.write(HandOver(run_id, transition, closed))

    async def _hand_over_together(self, batch: Sequence[HandOver]) -> list[bool]:
        done: dict[int, bool] = {}
        async with self.sessions() as session, session.begin():
            for index in sorted(range(len(batch)), key=lambda i: batch[i].run_id):
                item = batch[index]
                done[index] = await item.transition(session)
                if done[index]:
                    await _store(session, item.closed, [])
        return [done[index] for index in range(len(batch))]


@dataclass(frozen=True)
class HandOver:
    """A run's last write of an execution: its status transition and the records not written yet."""

    run_id: int
    transition: Callable[[AsyncSession], Awaitable[bool]]
    closed: list[StepRecord]


class RunExecution:
    def __init__(self, engine: Engine, run_id: int) -> None:
        self.engine = engine
        self.run_id = run_id
        self.records: dict[str, list[StepRecord]] = {}
        self.result: Any = None
        self.secrets: list[str] = []
        self._secret_set: frozenset[str] = frozenset()
        self._secrets_seen = 0
        self.connections: dict[str, dict[str, Any]] = {}
        self.context: dict[str, Any] = {}
        self.loaded: LoadedFlow | None = None
        self.lease_lost = False
        # Records of steps without side effects (map, if, respond, ...): written with the next write. If the
        # worker dies first they are simply computed again, which gives the same result.
        self.pending: list[StepRecord] = []
        self.run: Run | None = None
        self.connection_errors: dict[str, str] = {}
        self.settings: dict[str, Any] = {}
        # The run time budget counts this execution's wall-clock time minus the time it waited for HTTP
        # answers and delays (those have their own limits): computation, database writes, and the event loop
        # time other runs of the same worker took meanwhile.
        settings = getattr(engine.context, "settings", None)
        self.budget = float(getattr(settings, "run_time_budget_seconds", DEFAULT_RUN_TIME_BUDGET))
        self.started = time.monotonic()
        self.waited = 0.0
        self.waiting = 0
        self.waiting_since = 0.0
        self.steps_walked = 0
        self.run_uid = ""

    # -- database -------------------------------------------------------------------------------------------

    async def _write(self, *rows: StepRecord, check_cancel: bool = False) -> None:
        """Persist records in one transaction that also renews the lease (and fails if it is not ours)."""
        now = utcnow()
        # Redaction is CPU work: done before the transaction, so the write lock is held for the writes alone.
        closed = [self._scrubbed(row) for row in self.pending]
        tracked = [self._scrubbed(row) for row in rows]
        async with self.engine.sessions() as session, session.begin():
            renewal = await lifecycle.renew(
                session, self.run_id, self.engine.lease, refuse_if_cancel_requested=check_cancel, now=now
            )
            if renewal is Renewal.CANCEL_REQUESTED:
                raise Cancelled()
            if renewal is Renewal.LEASE_LOST:
                raise LeaseLost()
            await _store(session, closed, tracked)
            self.pending = []

    async def _heartbeat(self) -> None:
        interval = max(0.5, self.engine.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.engine.sessions() as session, session.begin():
                    if await lifecycle.renew(session, self.run_id, self.engine.lease) is Renewal.LEASE_LOST:
                        self.lease_lost = True
                        return
            except Exception:  # noqa: BLE001 - a missed heartbeat is retried; the lease is long enough
                log.warning("heartbeat for run %s failed", self.run_id, exc_info=True)

    async def _finish(self, status: RunStatus, *, error: str | None = None, step: str = "") -> bool:
        """Finish the run as `status` (terminal), with the pending records, if the lease is still ours. A failed
        run is counted in its failure group (ihub.runs.failures) in the same transaction; `step` is the path of
        the step that failed it (empty when the run failed outside a step)."""
        redacted_error = self._redact(error) if error else None
        result = self._redacted(self.result) if status == RunStatus.SUCCEEDED else None
        failure = self._failure(step, redacted_error) if status == RunStatus.FAILED else None

        async def transition(session: AsyncSession) -> bool:
            if not await lifecycle.finish(
                session,
                self.run_id,
                self.engine.owner,
                status,
                result=result,
                error=redacted_error,
                failed_step=failure.step if failure else None,
                failure_key=failure.key if failure else None,
            ):
                return False
            # In the finish's own transaction, only when it changed the run: the failure's count and its event
            # exist iff the failure does.
            if failure is not None:
                await failures.count(session, failure, utcnow())
            event_type = RUN_EVENTS.get(status)
            if event_type is not None:
                await outbox.emit_run_event(session, event_type, self._facts(status, redacted_error))
            return True

        return await self._hand_over(transition)

    def _failure(self, step: str, error: str | None) -> failures.Failure | None:
        """The failure group of this run's failure; None when the flow could not be loaded (no template to
        group it under: the run still fails, with its error)."""
        if self.loaded is None:
            return None
        return failures.describe(
            org_id=self.loaded.org_id,
            template_id=self.loaded.template_id,
            flow_key=self.loaded.flow.key,
            path=step,
            error=error or "failed",
        )

    def _facts(self, status: RunStatus, error: str | None) -> outbox.RunFacts | int:
        """What a run event says, from what this execution loaded (no read in the finishing transaction); only
        the run id when the flow could not be loaded (the event then reads the rest)."""
        loaded, run = self.loaded, self.run
        if loaded is None or run is None:
            return self.run_id
        flow = loaded.flow
        return outbox.RunFacts(
            self.run_id,
            status.value,
            loaded.org_id,
            loaded.org_path,
            loaded.project_id,
            flow.id,
            flow.key,
            run.attempt,
            error,
        )

    async def _release(self, next_attempt_at: datetime) -> bool:
        """Queue the run again for `next_attempt_at`, with the pending records, if the lease is still ours."""
        return await self._hand_over(
            lambda session: lifecycle.release(session, self.run_id, self.engine.owner, next_attempt_at=next_attempt_at)
        )

    async def _hand_over(self, transition: Callable[[AsyncSession], Awaitable[bool]]) -> bool:
        """Apply a transition that ends this execution and store the pending records in the same transaction
        (both or neither: the records of a run a stale worker lost are not written)."""
        closed = [self._scrubbed(row) for row in self.pending]
        if not await self.engine.hand_over(self.run_id, transition, closed):
            return False
        self.pending = []
        return True

    # -- the run ----------------------------------------------------------------------------------------------

    async def load(self, session: Any) -> None:
        """Read the run, its flow (its own version), finished steps, settings and connections (after the claim)."""
        run = await session.get(Run, self.run_id)
        self.run = run
        self.run_uid = run.uid
        # The version the run started on, not the project's current one: retries and resumes must replay the
        # definition its step records were written under.
        self.loaded = await load_flow(session, run.flow_id, run.flow_version)
        records = (
            await session.scalars(select(StepRecord).where(StepRecord.run_id == self.run_id).order_by(StepRecord.id))
        ).all()
        for record in records:
            self.records.setdefault(record.path, []).append(record)
        slots = self.loaded.spec.connections() if self.loaded is not None and self.loaded.spec is not None else ()
        # Settings and decrypted connections from the per-process cache, checked against the project's change
        # stamp (projects/runtime.py): one small read instead of three per slot and the decryption.
        project = await RUNTIMES.get(session, self.engine.context.box, run.project_id, slots)
        self.settings = project.settings
        self.connection_errors = dict(project.errors)
        for slot, runtime in project.connections.items():
            self.connections[slot] = runtime
            self.secrets.extend(secret_values(runtime))

    async def execute(self) -> Outcome | None:
        """One execution of the claimed run; its start (first claim) and final status are counted per flow key."""
        run = self.run
        if run is None:
            return None
        flow_key = self.loaded.flow.key if self.loaded is not None else "_unknown"
        if run.attempt == 1:
            metrics.run_started(flow_key)
        with tracing.run_span(self.run_id, self.run_uid, flow_key, run.attempt, run.trigger) as span:
            outcome = await self._execute(run)
            tracing.finish(span, outcome.status.value if outcome is not None else "stopped")
        if outcome is not None and outcome.status in TERMINAL_RUN_STATUSES:
            metrics.run_finished(flow_key, outcome.status.value)
        return outcome

    async def _execute(self, run: Run) -> Outcome | None:
        cancel_requested, claims, trigger = run.cancel_requested, run.attempt, run.trigger or {}
        if cancel_requested:
            await self._finish(RunStatus.CANCELLED, error=CANCELLED_ON_REQUEST)
            return Outcome(RunStatus.CANCELLED)
        if run.parked_until is not None:
            # Claimed because its wait for a reconnect ran out (only that claim keeps parked_until set).
            hours = f"{self._max_wait_hours():g}"
            error = (
                f"connection {run.waiting_for_slot} needed a reconnect for {hours} h; reconnect it and replay this run"
            )
            await self._finish(RunStatus.FAILED, error=error)
            return Outcome(RunStatus.FAILED)
        if self.loaded is None or self.loaded.spec is None:
            await self._finish(RunStatus.FAILED, error="the flow is no longer defined by the project's template")
            return Outcome(RunStatus.FAILED)
        if claims > MAX_CLAIMS:
            await self._finish(RunStatus.FAILED, error=f"gave up after {MAX_CLAIMS} executions of this run")
            return Outcome(RunStatus.FAILED)
        self.context = {
            "trigger": trigger,
            "config": self.settings,
            "run": {"id": str(self.run_id)},
            "flow": {"id": str(self.loaded.flow.id), "key": self.loaded.flow.key},
        }
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            await self.run_steps(self.loaded.spec.steps, Scope({}, {}), "")
        except RetryLater as wait:
            if await self._release(wait.at):
                return Outcome(RunStatus.QUEUED, wait.at)
            return None
        except Parked as parked:
            return await self._park(parked)
        except StepFailed as failure:
            await self._finish(RunStatus.FAILED, error=str(failure), step=failure.path)
            return Outcome(RunStatus.FAILED)
        except Cancelled:
            await self._finish(RunStatus.CANCELLED, error=CANCELLED_ON_REQUEST)
            return Outcome(RunStatus.CANCELLED)
        except LeaseLost:
            log.warning("run %s: lease lost to another worker; stopping here", self.run_id)
            return None
        except OverBudget as over:
            await self._finish(RunStatus.FAILED, error=str(over))
            return Outcome(RunStatus.FAILED)
        except Exception as error:
            if cannot_store(error):
                return await self._fail_unstorable(error)
            # A bug or an outage (database, disk): release the run for a later attempt instead of holding it until
            # its lease expires; MAX_CLAIMS bounds how often that can happen.
            log.exception("run %s: unexpected error; retrying later", self.run_id)
            return await self.release_after_error(claims)
        finally:
            heartbeat.cancel()
        if not await self._finish(RunStatus.SUCCEEDED):
            return None
        return Outcome(RunStatus.SUCCEEDED)

    def _max_wait_hours(self) -> float:
        settings = getattr(self.engine.context, "settings", None)
        return float(getattr(settings, "connection_max_wait_hours", DEFAULT_CONNECTION_MAX_WAIT_HOURS))

    async def _park(self, parked: Parked) -> Outcome | None:
        """Park the run on the connection, mark the connection needs_reconnect: one transaction, lease owner only.

        If the connection was refreshed or reconnected after the parked attempt began, its reconnect may have
        come before this park (and found nothing to resume): the run is queued again at once instead."""
        assert self.loaded is not None
        project_id = self.loaded.project_id
        until = utcnow() + timedelta(hours=self._max_wait_hours())
        outcome = Outcome(RunStatus.WAITING_FOR_CONNECTION)

        async def transition(session: AsyncSession) -> bool:
            nonlocal outcome
            row = (
                await session.execute(
                    select(Connection.id, Connection.last_refreshed_at).where(
                        Connection.project_id == project_id, Connection.slot_id == parked.slot
                    )
                )
            ).first()
            if row is not None and row.last_refreshed_at is not None and row.last_refreshed_at > parked.attempt_started:
                now = utcnow()
                outcome = Outcome(RunStatus.QUEUED, now)
                return await lifecycle.release(session, self.run_id, self.engine.owner, next_attempt_at=now)
            if not await lifecycle.park(session, self.run_id, self.engine.owner, slot=parked.slot, until=until):
                return False
            if row is not None:
                await health.record_status(session, row.id, ConnectionStatus.NEEDS_RECONNECT, parked.message)
            extra = {
                "connection": parked.slot,
                "parkedUntil": until.isoformat(),
                "reason": self._redact(parked.message),
            }
            facts = self._facts(RunStatus.WAITING_FOR_CONNECTION, None)
            await outbox.emit_run_event(session, EventType.RUN_PARKED, facts, extra)
            return True

        if not await self._hand_over(transition):
            return None
        if outcome.status == RunStatus.WAITING_FOR_CONNECTION:
            log.info("run %s: parked until connection %r is reconnected", self.run_id, parked.slot)
        return outcome

    async def _record_used(self, slots: Sequence[str]) -> None:
        """`last_used_at` of the connections a step used, at most once a minute each (ihub.projects.health)."""
        if self.loaded is None:
            return
        project_id = self.loaded.project_id
        database = str(getattr(getattr(self.engine.context, "settings", None), "database_url", ""))
        due = [slot for slot in dict.fromkeys(slots) if health.USES.due(database, project_id, slot)]
        if not due:
            return
        try:
            async with self.engine.sessions() as session, session.begin():
                for slot in due:
                    await health.record_used(session, project_id, slot)
        except Exception:  # noqa: BLE001 - "last used" is for people; a run never fails over it
            log.warning("run %s: could not record connection use", self.run_id, exc_info=True)

    async def _fail_unstorable(self, error: BaseException) -> Outcome | None:
        """Data the database refuses is refused again on every retry: fail the run now, with a clear error,
        instead of retrying it for hours. The records that could not be written are dropped."""
        log.warning("run %s: its state cannot be stored (%s); failing it", self.run_id, type(error).__name__)
        self.pending = []
        self.result = None
        reason = str(getattr(error, "orig", None) or error).splitlines()[0][:200]
        try:
            if await self._finish(RunStatus.FAILED, error=f"the run's state cannot be stored: {reason}"):
                return Outcome(RunStatus.FAILED)
        except Exception:  # noqa: BLE001 - the lease will expire and the reconciler takes over
            log.warning("run %s: could not record the failure", self.run_id, exc_info=True)
        return None

    async def release_after_error(self, claims: int | None = None) -> Outcome | None:
        if claims is None:
            async with self.engine.sessions() as session:
                claims = await session.scalar(select(Run.attempt).where(Run.id == self.run_id)) or 1
        try:
            if claims > MAX_CLAIMS:
                await self._finish(RunStatus.FAILED, error=f"gave up after {MAX_CLAIMS} executions of this run")
                return Outcome(RunStatus.FAILED)
            later = utcnow() + timedelta(seconds=min(300, 2**claims))
            if await self._release(later):
                return Outcome(RunStatus.QUEUED, later)
        except Exception:  # noqa: BLE001 - the lease will expire and the reconciler takes over
            log.warning("run %s: could not release after an error", self.run_id, exc_info=True)
        return None

    # -- redaction: everything stored about a run passes through connections.redact_value ---------------------

    def _known_secrets(self) -> frozenset[str]:
        if len(self.secrets) != self._secrets_seen:
            self._secret_set, self._secrets_seen = frozenset(self.secrets), len(self.secrets)
        return self._secret_set

    def _redact(self, text: str) -> str:
        return redact_text(text, self._known_secrets())

    def _redacted(self, value: Any) -> Any:
        """`value` with every known secret (connection secrets, fetched tokens) replaced, in every encoding a
        target may echo it in. Applied before any truncation, so a cut never leaves a secret's prefix behind."""
        return redact_value(value, self._known_secrets())

    def _scrubbed(self, record: StepRecord) -> StepRecord:
        """A record as it may be stored: the last line of defence, whatever filled it in."""
        record.request = self._redacted(record.request)
        record.response = self._redacted(record.response)
        record.state = self._redacted(record.state)
        record.error = self._redacted(record.error)
        return record

    def _ctx(self, scope: Scope) -> dict[str, Any]:
        return {**self.context, "steps": scope.steps, "vars": scope.vars, **scope.extra}

    async def run_steps(self, steps: Sequence[StepModel], scope: Scope, prefix: str) -> None:
        for step in steps:
            if self.lease_lost:
                raise LeaseLost()
            self._check_budget()
            # Pure steps never wait: yield so that the heartbeat and the worker's other runs keep going, and
            # let a write transaction this process has open finish before computing (db/write_gate.py).
            await until_no_write_held_here()
            await self.run_step(step, scope, prefix)

    async def run_each(
        self, steps: Sequence[StepModel], scope: Scope, runs: Sequence[tuple[str, dict[str, Any]]], concurrency: int
    ) -> list[dict[str, Any]]:
        """Run `steps` once per (path prefix, extra names), each in a child scope, at most `concurrency` at once."""
        semaphore = asyncio.Semaphore(concurrency)
        results: list[dict[str, Any]] = [{} for _ in runs]

        async def one(index: int, prefix: str, extra: dict[str, Any]) -> None:
            async with semaphore:
                inner = scope.child(**extra)
                await self.run_steps(steps, inner, prefix)
                results[index] = inner.steps

        outcomes = await asyncio.gather(
            *(one(index, prefix, extra) for index, (prefix, extra) in enumerate(runs)), return_exceptions=True
        )
        # What stops the run outranks a failed step, which outranks waiting for a reconnect, then for a retry.
        for kind in (LeaseLost, Cancelled, OverBudget, StepFailed, Parked):
            for outcome in outcomes:
                if isinstance(outcome, kind):
                    raise outcome
        waits = [o.at for o in outcomes if isinstance(o, RetryLater)]
        if waits:
            raise RetryLater(min(waits))
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return results

    def _check_budget(self) -> None:
        self.steps_walked += 1
        if self.steps_walked > MAX_STEPS_PER_EXECUTION:
            raise OverBudget(f"run executed more than {MAX_STEPS_PER_EXECUTION} steps at once")
        waited = self.waited + (time.monotonic() - self.waiting_since if self.waiting else 0.0)
        if time.monotonic() - self.started - waited > self.budget:
            raise OverBudget(f"run exceeded its time budget of {self.budget:g} s")

    @asynccontextmanager
    async def waiting_outside(self) -> AsyncIterator[None]:
        """Time spent in here (HTTP calls, delays; overlapping ones once) is not charged to the run budget."""
        if self.waiting == 0:
            self.waiting_since = time.monotonic()
        self.waiting += 1
        try:
            yield
        finally:
            self.waiting -= 1
            if self.waiting == 0:
                self.waited += time.monotonic() - self.waiting_since

    async def run_step(self, step: StepModel, scope: Scope, prefix: str) -> None:
        kind = step_type(step.type)
        path = prefix + step.id
        prior = self.records.get(path, [])
        final = next((r for r in reversed(prior) if r.status in FINAL_STEP_STATUSES), None)
        # A finished composite that succeeded is walked again to restore its children's results.
        if final is not None and (not kind.composite or final.status == StepStatus.FAILED):
            self._restore(kind, step, final, scope)
            if final.status == StepStatus.FAILED and step.on_error != "continue":
                raise StepFailed(path, final.error or "failed")
            return
        clock = time.perf_counter()
        recorded = len(prior)
        with tracing.step_span(step.id, path, step.type) as span:
            # Without a new record: a succeeded composite walked again returns, a lost lease or a cancel raises.
            unrecorded = "stopped"
            try:
                await self._execute_step(kind, step, scope, path, prior, final)
                unrecorded = StepStatus.SUCCEEDED.value
            finally:
                metrics.step_finished(step.type, time.perf_counter() - clock)
                if span is not None:
                    tracing.finish(span, self._status_since(path, recorded, unrecorded))

    def _status_since(self, path: str, recorded: int, unrecorded: str) -> str:
        """How the step's execution that began with `recorded` records ended (for its trace span)."""
        records = self.records.get(path, [])
        return str(records[-1].status) if len(records) > recorded else unrecorded

    async def _execute_step(
        self,
        kind: StepType,
        step: StepModel,
        scope: Scope,
        path: str,
        prior: list[StepRecord],
        final: StepRecord | None,
    ) -> None:
        """A step that is not restored from its record: executed now (and recorded)."""
        failures = sum(1 for r in prior if r.status in (StepStatus.RETRYING, StepStatus.FAILED))
        started = utcnow()
        waiting = next((r for r in prior if r.status == StepStatus.WAITING), None) if kind.resumable_wait else None
        record = waiting or StepRecord(
            run_id=self.run_id,
            step_id=step.id,
            path=path,
            type=step.type,
            attempt=len([r for r in prior if r.status != StepStatus.WAITING]) + 1,
            status=StepStatus.RUNNING,
            started_at=started,
        )
        if kind.side_effects:
            # Recorded before the call so an interrupted attempt is visible (and counted) after a crash.
            for stale in prior:
                if stale.status == StepStatus.RUNNING:
                    stale.status, stale.finished_at, stale.error = StepStatus.INTERRUPTED, started, "worker stopped"
            await self._write(*[r for r in prior if r.status == StepStatus.INTERRUPTED], record, check_cancel=True)
        elif kind.resumable_wait and waiting is None:
            await self._write(check_cancel=True)
        context = StepRun(self, scope, path, record)
        try:
            state = await self._dispatch(kind, step, context)
            reason = unstorable(state)
            if reason is not None:
                if isinstance(record.response, dict) and unstorable(record.response) is not None:
                    record.response = {"status": record.response.get("status"), "body": f"[not stored: {reason}]"}
                raise StepError("state", f"the step's result cannot be stored: it holds {reason}")
        except StepError as error:
            slot = context.used[-1] if context.used else None
            if error.kind == health.NEEDS_RECONNECT and slot is not None:
                # Not a failure and no retry spent (the engine docstring says why): the attempt is recorded as
                # parked and the run waits for the connection.
                message = self._redact(error.message)
                record.status = StepStatus.PARKED
                parked = {"status": StepStatus.PARKED.value, "response": None, "output": None, "error": message}
                await self._close(kind, record, parked, error.message)
                raise Parked(slot, message, started) from None
            if context.used:
                await self._record_used(context.used)
            state = error.state or {"status": StepStatus.FAILED.value, "response": None, "output": None}
            state.update(status=StepStatus.FAILED.value, error=self._redact(error.message), attempts=failures + 1)
            if step.retry.retries(error) and failures + 1 < step.retry.max_attempts:
                delay = step.retry.backoff(failures + 1)
                record.status = StepStatus.RETRYING
                await self._close(kind, record, state, error.message)
                raise RetryLater(utcnow() + timedelta(seconds=delay)) from None
            record.status = StepStatus.FAILED
            await self._close(kind, record, state, error.message)
            scope.steps[step.id] = state
            if step.on_error == "continue":
                return
            raise StepFailed(path, self._redact(error.message)) from None
        except StepFailed as failure:
            # A step inside an `if`/`foreach` failed; the composite's own on_error decides what happens next.
            if step.on_error != "continue":
                raise
            state = {"status": StepStatus.FAILED.value, "response": None, "output": None, "error": str(failure)}
            record.status = StepStatus.FAILED
            await self._close(kind, record, state, str(failure))
            scope.steps[step.id] = state
            return
        if context.used:
            await self._record_used(context.used)
        state.setdefault("status", StepStatus.SUCCEEDED.value)
        state.setdefault("attempts", failures + 1)
        record.status = StepStatus.SUCCEEDED
        if final is None:
            await self._close(kind, record, state, None)
        scope.steps[step.id] = state
        kind.on_success(state, context)

    def _restore(self, kind: StepType, step: StepModel, record: StepRecord, scope: Scope) -> None:
        state = dict(record.state or {})
        scope.steps[step.id] = state
        if record.status == StepStatus.SUCCEEDED:
            kind.on_success(state, StepRun(self, scope, record.path, record))

    async def _close(self, kind: StepType, record: StepRecord, state: dict[str, Any], error: str | None) -> None:
        record.finished_at = utcnow()
        record.error = self._redact(error) if error else None
        record.state = _cap_state(self._redacted(state))
        # A step that sets no response of its own (an http step always does once it has an answer) shows its
        # output there.
        if record.response is None and state.get("output") is not None:
            record.response = {"output": summarize(self._redacted(json_safe(state["output"])))}
        self.records.setdefault(record.path, []).append(record)
        if kind.written_alone or record.status != StepStatus.SUCCEEDED:
            await self._write(record)
        else:
            self.pending.append(record)
            if len(self.pending) >= PENDING_WRITE_BATCH:
                await self._write()

    async def _dispatch(self, kind: StepType, step: StepModel, context: StepRun) -> dict[str, Any]:
        try:
            if kind.waits:
                async with self.waiting_outside():
                    return await kind.handler(step, context)
            return await kind.handler(step, context)
        except ExpressionError as error:
            raise StepError("expression", f"expression error: {error}") from None
        except ConnectionError_ as error:
            # Raised past a handler's own handling (a connection's auth prepared outside the step's request):
            # the same failure, of the same kind, as if the handler had turned it into a StepError.
            raise StepError(error.kind, self._redact(str(error))) from None

    async def connection(self, slot: str) -> dict[str, Any]:
        if slot in self.connections:
            return self.connections[slot]
        if slot in self.connection_errors:
            raise StepError("config", self.connection_errors[slot])
        assert self.loaded is not None
        async with self.engine.sessions() as session:
            try:
                runtime = await connection_runtime(session, self.engine.context.box, self.loaded.project_id, slot)
            except ApiError as error:
                raise StepError("config", error.message) from None
        self.connections[slot] = runtime
        self.secrets.extend(secret_values(runtime))
        return runtime


class StepRun:
    """The StepContext a handler gets: one step of one run, in its scope (ihub.flows.steps.base)."""

    def __init__(self, execution: RunExecution, scope: Scope, path: str, record: StepRecord) -> None:
        self._execution = execution
        self._scope = scope
        self._path = path
        self._record = record
        # Connection slots this step asked for, in order: which one to park on, which ones were used.
        self.used: list[str] = []

    @property
    def path(self) -> str:
        return self._path

    @property
    def record(self) -> StepRecord:
        return self._record

    @property
    def run_uid(self) -> str:
        return self._execution.run_uid

    def render(self, value: Any) -> Any:
        return render(value, self._execution._ctx(self._scope))

    def evaluate(self, expression: str) -> Any:
        return evaluate(expression, self._execution._ctx(self._scope))

    async def run_steps(self, steps: Sequence[StepModel], suffix: str) -> None:
        await self._execution.run_steps(steps, self._scope, self._path + suffix)

    async def run_each(
        self, steps: Sequence[StepModel], iterations: Sequence[tuple[str, dict[str, Any]]], concurrency: int
    ) -> list[dict[str, Any]]:
        runs = [(self._path + suffix, extra) for suffix, extra in iterations]
        return await self._execution.run_each(steps, self._scope, runs, concurrency)

    async def write_record(self) -> None:
        await self._execution._write(self._record)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def yield_to_writers(self) -> None:
        await until_no_write_held_here()

    async def connection(self, slot: str) -> dict[str, Any]:
        self.used.append(slot)
        return await self._execution.connection(slot)

    @property
    def http(self) -> httpx.AsyncClient:
        return self._execution.engine.http

    @property
    def tokens(self) -> TokenCache:
        return self._execution.engine.tokens

    @property
    def max_response_bytes(self) -> int:
        return self._execution.engine.max_response_bytes

    def add_secrets(self, secrets: Sequence[str]) -> None:
        self._execution.secrets.extend(secrets)

    def redact(self, text: str) -> str:
        return self._execution._redact(text)

    def redacted(self, value: Any) -> Any:
        return self._execution._redacted(value)

    def waiting(self) -> AbstractAsyncContextManager[None]:
        return self._execution.waiting_outside()

    # RunEffects: what a succeeded step changes beyond its own state.

    @property
    def vars(self) -> dict[str, Any]:
        return self._scope.vars

    def set_result(self, value: Any) -> None:
        self._execution.result = value


_RECORD_COLUMNS = [column.key for column in StepRecord.__table__.columns if column.key != "id"]


async def _store(session: Any, closed: list[StepRecord], tracked: list[StepRecord]) -> None:
    """Write step records: `tracked` ones through the ORM (they may change and be written again), `closed`
    ones (pure steps, recorded once when they finish, never changed after) in one multi-row INSERT.

    The ORM inserted closed records one statement at a time: 500 took 150-270 ms inside the write transaction,
    holding SQLite's only write lock while other tenants' API calls waited (bench/isolation.py cpu-foreach,
    token p99 ~2 s). One executemany of plain rows takes a few milliseconds.
    """
    # Records stored earlier (a step written when it started) are re-attached; their changes become UPDATEs.
    session.add_all([*tracked, *(record for record in closed if record.id is not None)])
    rows = [_row(record) for record in closed if record.id is None]
    if rows:
        await session.execute(insert(StepRecord), rows)
    await session.flush()


def _row(record: StepRecord) -> dict[str, Any]:
    row = {key: getattr(record, key) for key in _RECORD_COLUMNS}
    row["attempt"] = row["attempt"] or 1
    return row


def _cap_state(state: dict[str, Any]) -> dict[str, Any]:
    """Keep a step's state storable: a huge response body is cut (later steps see the cut text)."""
    text = dumps(state)
    # json.loads is typed Any; the text is a dict's JSON, so it gives a dict back.
    if len(text) <= STATE_BODY_CAP:
        same: dict[str, Any] = json.loads(text)
        return same
    capped = dict(state)
    for key in ("output",):
        capped[key] = summarize(json_safe(state.get(key)), STATE_BODY_CAP // 2)
    if isinstance(capped.get("response"), dict):
        capped["response"] = {**capped["response"], "body": summarize(capped["response"].get("body"), 1024)}
    cut: dict[str, Any] = json.loads(dumps(capped))
    return cut
