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
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
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
from ihub.egress import (
    DeadlineExceeded,
    EgressRefused,
    FetchedResponse,
    FetchLimits,
    ResponseTooLarge,
    egress_client,
    fetch,
    policy_from_settings,
)
from ihub.flows.connections import (
    ROUTING_HEADERS,
    ConnectionError_,
    TokenCache,
    build_url,
    fields_of,
    prepare_auth,
    redact_headers,
    redact_text,
    redact_value,
    secret_values,
)
from ihub.flows.definition import MAX_DELAY_SECONDS
from ihub.flows.expressions import ExpressionError, evaluate, render
from ihub.flows.reply import InvalidReply, check_reply
from ihub.flows.service import LoadedFlow, load_flow
from ihub.flows.storage import cannot_store, unstorable
from ihub.projects.service import connection_runtime, project_settings
from ihub.runs import lifecycle
from ihub.runs.lifecycle import CANCELLED_ON_REQUEST, Lease, Renewal
from ihub.runs.models import Run, StepRecord
from ihub.runs.status import FINAL_STEP_STATUSES, RunStatus, StepStatus

log = logging.getLogger("ihub.engine")

LEASE_SECONDS = 60.0
SUMMARY_CAP = 4096
STATE_BODY_CAP = 256 * 1024
INLINE_DELAY_MAX = 1.0
MAX_CLAIMS = 100
# Every iteration's steps are recorded; a larger list belongs in several runs (or a batch API call).
MAX_FOREACH_ITEMS = 1000
# Steps one execution of a run may walk (nested foreach multiplies): their records are kept until written.
MAX_STEPS_PER_EXECUTION = 20_000
# Records of pure steps are written together, at most this many per transaction, so a long run of pure steps
# never holds SQLite's only write lock for long while other processes' writes (the API's) wait in SQLite's busy
# handler. bench/isolation.py cpu-foreach, token p99: 20 000 rows in one transaction > 5 s (503s); 500 per
# transaction 1.4 s; 100: 362 ms; 25: 186 ms (quiet: 14 ms). With the writer gate (db/write_gate.py) the
# waits are short either way (25: 24-33 ms, 100: 27-42 ms; quiet 17-20). The cost is one lease UPDATE per batch.
PENDING_WRITE_BATCH = 25
DEFAULT_RUN_TIME_BUDGET = 300.0


class StepError(Exception):
    def __init__(self, kind: str, message: str, status: int | None = None, state: dict[str, Any] | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.state = state


class StepFailed(Exception):
    """A step failed for good (on_error: fail): the run fails with this message."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"step {path}: {message}")
        self.path = path


class RetryLater(Exception):
    def __init__(self, at: datetime) -> None:
        super().__init__(at.isoformat())
        self.at = at


class Cancelled(Exception):
    pass


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


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def summarize(value: Any, cap: int = SUMMARY_CAP) -> Any:
    """A value for a record: itself if small, else its JSON text cut at `cap` with a marker."""
    if value is None:
        return None
    text = value if isinstance(value, str) else _dumps(value)
    if len(text) <= cap:
        return value
    return text[:cap] + f"...[truncated {len(text) - cap} chars]"


def backoff(retry: dict[str, Any], failures: int) -> float:
    delay = float(retry["initial_delay"]) * float(retry["multiplier"]) ** max(0, failures - 1)
    return min(delay, float(retry["max_delay"]))


def retryable(retry: dict[str, Any], error: StepError) -> bool:
    on = retry["retry_on"]
    if error.kind == "status":
        return error.status in on.get("statuses", []) or "status" in on.get("errors", [])
    return error.kind in on.get("errors", [])


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
        self.tokens = TokenCache()
        # Group commit (common/group_commit.py): runs claimed, finished or released at the same time share a
        # transaction, so a burst of short runs costs a few write locks instead of two per run.
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
        async with self.sessions() as session, session.begin():
            return [await lifecycle.claim(session, run_id, self.lease, now=now) for run_id in run_ids]

    async def hand_over(self, transition: Callable[[AsyncSession], Awaitable[bool]], closed: list[StepRecord]) -> bool:
        """Apply `transition` (finish or release) and store `closed` records in the same transaction, shared with
        other runs finishing at the same time. False if the lease was lost (nothing of this run is written)."""
        return await self._hand_overs.write(HandOver(transition, closed))

    async def _hand_over_together(self, batch: Sequence[HandOver]) -> list[bool]:
        async with self.sessions() as session, session.begin():
            answers = []
            for item in batch:
                done = await item.transition(session)
                if done:
                    await _store(session, item.closed, [])
                answers.append(done)
            return answers


@dataclass(frozen=True)
class HandOver:
    """A run's last write of an execution: its status transition and the records not written yet."""

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

    async def _finish(self, status: RunStatus, *, error: str | None = None) -> bool:
        """Finish the run as `status` (terminal), with the pending records, if the lease is still ours."""
        redacted_error = self._redact(error) if error else None
        result = self._redacted(self.result) if status == RunStatus.SUCCEEDED else None
        return await self._hand_over(
            lambda session: lifecycle.finish(
                session, self.run_id, self.engine.owner, status, result=result, error=redacted_error
            )
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
        if not await self.engine.hand_over(transition, closed):
            return False
        self.pending = []
        return True

    # -- the run ----------------------------------------------------------------------------------------------

    async def load(self, session: Any) -> None:
        """Read the run, its flow, finished steps, settings and connections (inside the claim's transaction)."""
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
        self.settings = await project_settings(session, run.project_id)
        if self.loaded is not None and self.loaded.spec:
            for slot in sorted(_slots_used(self.loaded.spec["steps"])):
                try:
                    runtime = await connection_runtime(session, self.engine.context.box, run.project_id, slot)
                except ApiError as error:
                    self.connection_errors[slot] = error.message
                    continue
                self.connections[slot] = runtime
                self.secrets.extend(secret_values(runtime))

    async def execute(self) -> Outcome | None:
        run = self.run
        if run is None:
            return None
        cancel_requested, claims, trigger = run.cancel_requested, run.attempt, run.trigger or {}
        if cancel_requested:
            await self._finish(RunStatus.CANCELLED, error=CANCELLED_ON_REQUEST)
            return Outcome(RunStatus.CANCELLED)
        if self.loaded is None or not self.loaded.spec:
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
            await self.run_steps(self.loaded.spec["steps"], Scope({}, {}), "")
        except RetryLater as wait:
            if await self._release(wait.at):
                return Outcome(RunStatus.QUEUED, wait.at)
            return None
        except StepFailed as failure:
            await self._finish(RunStatus.FAILED, error=str(failure))
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

    async def run_steps(self, steps: list[dict[str, Any]], scope: Scope, prefix: str) -> None:
        for step in steps:
            if self.lease_lost:
                raise LeaseLost()
            self._check_budget()
            # Pure steps never wait: yield so that the heartbeat and the worker's other runs keep going, and
            # let a write transaction this process has open finish before computing (db/write_gate.py).
            await until_no_write_held_here()
            await self.run_step(step, scope, prefix)

    def _check_budget(self) -> None:
        self.steps_walked += 1
        if self.steps_walked > MAX_STEPS_PER_EXECUTION:
            raise OverBudget(f"run executed more than {MAX_STEPS_PER_EXECUTION} steps at once")
        waited = self.waited + (time.monotonic() - self.waiting_since if self.waiting else 0.0)
        if time.monotonic() - self.started - waited > self.budget:
            raise OverBudget(f"run exceeded its time budget of {self.budget:g} s")

    @asynccontextmanager
    async def _waiting(self) -> Any:
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

    async def run_step(self, step: dict[str, Any], scope: Scope, prefix: str) -> None:
        path = prefix + step["id"]
        prior = self.records.get(path, [])
        final = next((r for r in reversed(prior) if r.status in FINAL_STEP_STATUSES), None)
        kind = step["type"]
        # A finished composite that succeeded is walked again to restore its children's results.
        if final is not None and (kind not in ("if", "foreach") or final.status == StepStatus.FAILED):
            self._restore(step, final, scope)
            if final.status == StepStatus.FAILED and step["on_error"] != "continue":
                raise StepFailed(path, final.error or "failed")
            return
        failures = sum(1 for r in prior if r.status in (StepStatus.RETRYING, StepStatus.FAILED))
        started = utcnow()
        waiting = next((r for r in prior if r.status == StepStatus.WAITING), None) if kind == "delay" else None
        record = waiting or StepRecord(
            run_id=self.run_id,
            step_id=step["id"],
            path=path,
            type=kind,
            attempt=len([r for r in prior if r.status != StepStatus.WAITING]) + 1,
            status=StepStatus.RUNNING,
            started_at=started,
        )
        if kind == "http":
            # Recorded before the call so an interrupted attempt is visible (and counted) after a crash.
            for stale in prior:
                if stale.status == StepStatus.RUNNING:
                    stale.status, stale.finished_at, stale.error = StepStatus.INTERRUPTED, started, "worker stopped"
            await self._write(*[r for r in prior if r.status == StepStatus.INTERRUPTED], record, check_cancel=True)
        elif kind == "delay" and waiting is None:
            await self._write(check_cancel=True)
        try:
            state = await self._dispatch(step, scope, path, prior, record)
            reason = unstorable(state)
            if reason is not None:
                if isinstance(record.response, dict) and unstorable(record.response) is not None:
                    record.response = {"status": record.response.get("status"), "body": f"[not stored: {reason}]"}
                raise StepError("state", f"the step's result cannot be stored: it holds {reason}")
        except StepError as error:
            state = error.state or {"status": StepStatus.FAILED.value, "response": None, "output": None}
            state.update(status=StepStatus.FAILED.value, error=self._redact(error.message), attempts=failures + 1)
            if retryable(step["retry"], error) and failures + 1 < step["retry"]["max_attempts"]:
                delay = backoff(step["retry"], failures + 1)
                record.status = StepStatus.RETRYING
                await self._close(record, state, error.message)
                raise RetryLater(utcnow() + timedelta(seconds=delay)) from None
            record.status = StepStatus.FAILED
            await self._close(record, state, error.message)
            scope.steps[step["id"]] = state
            if step["on_error"] == "continue":
                return
            raise StepFailed(path, self._redact(error.message)) from None
        except StepFailed as failure:
            # A step inside an `if`/`foreach` failed; the composite's own on_error decides what happens next.
            if step["on_error"] != "continue":
                raise
            state = {"status": StepStatus.FAILED.value, "response": None, "output": None, "error": str(failure)}
            record.status = StepStatus.FAILED
            await self._close(record, state, str(failure))
            scope.steps[step["id"]] = state
            return
        state.setdefault("status", StepStatus.SUCCEEDED.value)
        state.setdefault("attempts", failures + 1)
        record.status = StepStatus.SUCCEEDED
        if final is None:
            await self._close(record, state, None)
        scope.steps[step["id"]] = state
        if kind == "map":
            scope.vars.update(state["output"])
        elif kind == "respond":
            self.result = state["output"]

    def _restore(self, step: dict[str, Any], record: StepRecord, scope: Scope) -> None:
        state = dict(record.state or {})
        scope.steps[step["id"]] = state
        if record.status == StepStatus.SUCCEEDED:
            if step["type"] == "map":
                scope.vars.update(state.get("output") or {})
            elif step["type"] == "respond":
                self.result = state.get("output")

    async def _close(self, record: StepRecord, state: dict[str, Any], error: str | None) -> None:
        record.finished_at = utcnow()
        record.error = self._redact(error) if error else None
        record.state = _cap_state(self._redacted(state))
        if record.response is None and state.get("output") is not None and record.type != "http":
            record.response = {"output": summarize(self._redacted(_json_safe(state["output"])))}
        self.records.setdefault(record.path, []).append(record)
        if record.type in ("http", "delay") or record.status != StepStatus.SUCCEEDED:
            await self._write(record)
        else:
            self.pending.append(record)
            if len(self.pending) >= PENDING_WRITE_BATCH:
                await self._write()

    async def _dispatch(
        self, step: dict[str, Any], scope: Scope, path: str, prior: list[StepRecord], record: StepRecord
    ) -> dict[str, Any]:
        kind = step["type"]
        try:
            if kind == "http":
                async with self._waiting():
                    return await self._http(step, scope, path, record)
            if kind == "map":
                values = render(step["set"], self._ctx(scope))
                return {"output": values}
            if kind == "if":
                return await self._if(step, scope, path, prior)
            if kind == "foreach":
                return await self._foreach(step, scope, path, prior)
            if kind == "delay":
                async with self._waiting():
                    return await self._delay(step, scope, record)
            if kind == "respond":
                return {"output": self._reply(step, scope)}
            if kind == "fail":
                raise StepError("fail", str(render(step["message"], self._ctx(scope))))
        except ExpressionError as error:
            raise StepError("expression", f"expression error: {error}") from None
        raise StepError("config", f"unknown step type {kind}")

    def _reply(self, step: dict[str, Any], scope: Scope) -> dict[str, Any]:
        ctx = self._ctx(scope)
        status = render(step["status"], ctx)
        try:
            status = int(status)
        except (TypeError, ValueError, OverflowError):
            raise StepError("expression", f"status {str(status)[:50]!r} is not an HTTP status code") from None
        output: dict[str, Any] = {"status": status, "body": render(step["body"], ctx)}
        if "headers" in step:
            headers = render(step["headers"], ctx)
            if not isinstance(headers, dict):
                raise StepError("respond", "headers must be an object of names to values")
            output["headers"] = {str(k): _text(v) for k, v in headers.items()}
        try:
            check_reply(output)
        except InvalidReply as error:
            raise StepError("respond", f"invalid reply: {error}") from None
        return output

    async def _if(self, step: dict[str, Any], scope: Scope, path: str, prior: list[StepRecord]) -> dict[str, Any]:
        condition = bool(evaluate(step["condition"], self._ctx(scope)))
        branch = "then" if condition else "else"
        await self.run_steps(step[branch], scope, f"{path}.{branch}.")
        return {"output": {"branch": branch, "condition": condition}}

    async def _foreach(self, step: dict[str, Any], scope: Scope, path: str, prior: list[StepRecord]) -> dict[str, Any]:
        items = evaluate(step["items"], self._ctx(scope))
        if isinstance(items, dict):
            items = [{"key": k, "value": v} for k, v in items.items()]
        if not isinstance(items, list):
            raise StepError("expression", f"items must be a list, got {type(items).__name__}")
        if len(items) > MAX_FOREACH_ITEMS:
            raise StepError("expression", f"{len(items)} items: foreach takes at most {MAX_FOREACH_ITEMS}")
        semaphore = asyncio.Semaphore(step["concurrency"])
        results: list[Any] = [None] * len(items)

        async def iteration(index: int, item: Any) -> None:
            async with semaphore:
                inner = scope.child(**{step["as"]: item, "loop": {"index": index, "length": len(items)}})
                await self.run_steps(step["steps"], inner, f"{path}[{index}].")
                results[index] = {s["id"]: inner.steps.get(s["id"]) for s in step["steps"]}

        outcomes = await asyncio.gather(*(iteration(i, item) for i, item in enumerate(items)), return_exceptions=True)
        for kind in (LeaseLost, Cancelled, OverBudget, StepFailed):
            for outcome in outcomes:
                if isinstance(outcome, kind):
                    raise outcome
        waits = [o.at for o in outcomes if isinstance(o, RetryLater)]
        if waits:
            raise RetryLater(min(waits))
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return {"output": results}

    async def _delay(self, step: dict[str, Any], scope: Scope, record: StepRecord) -> dict[str, Any]:
        if record.status == StepStatus.WAITING:
            until = datetime.fromisoformat((record.state or {})["until"])
            if utcnow() < until:
                raise RetryLater(until)
            return {"output": {"seconds": (record.state or {}).get("seconds")}}
        seconds = render(step["seconds"], self._ctx(scope))
        try:
            seconds = float(seconds)
        except (TypeError, ValueError, OverflowError):
            raise StepError("expression", f"delay seconds {str(seconds)[:50]!r} is not a number") from None
        # The same bound as a literal `seconds` in the definition (NaN fails the comparison too).
        if not 0 <= seconds <= MAX_DELAY_SECONDS:
            raise StepError("expression", f"delay seconds {seconds:g} must be between 0 and {MAX_DELAY_SECONDS}")
        if seconds <= INLINE_DELAY_MAX:
            await asyncio.sleep(max(0.0, seconds))
            return {"output": {"seconds": seconds}}
        until = utcnow() + timedelta(seconds=seconds)
        record.status = StepStatus.WAITING
        record.state = {"until": until.isoformat(), "seconds": seconds}
        await self._write(record)
        raise RetryLater(until)

    async def _connection(self, slot: str) -> dict[str, Any]:
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

    async def _http(self, step: dict[str, Any], scope: Scope, path: str, record: StepRecord) -> dict[str, Any]:
        ctx = self._ctx(scope)
        runtime: dict[str, Any] = {"type": "http", "config": {}, "secrets": {}}
        if "connection" in step:
            runtime = await self._connection(step["connection"])
            await until_no_write_held_here()  # rendering is CPU work (see run_steps)
        fields = fields_of(runtime)
        target_path = render(step.get("path"), ctx) if "path" in step else None
        target_url = render(step.get("url"), ctx) if "url" in step else None
        try:
            url = build_url(fields, target_path and str(target_path), target_url and str(target_url))
        except ConnectionError_ as error:
            raise StepError("config", str(error)) from None
        query = {str(k): _text(v) for k, v in (render(step.get("query") or {}, ctx)).items() if v is not None}
        headers = {str(k): _text(v) for k, v in (render(step.get("headers") or {}, ctx)).items() if v is not None}
        if "connection" in step and (routing := ROUTING_HEADERS & {name.strip().lower() for name in headers}):
            raise StepError("config", f"header {min(routing)!r} cannot be set beside a connection's credentials")
        headers.setdefault("Idempotency-Key", f"{self.run_uid}-{path}")
        content: bytes | None = None
        if "json" in step:
            headers.setdefault("Content-Type", "application/json")
            content = _dumps(render(step["json"], ctx)).encode()
        elif "body" in step:
            content = _text(render(step["body"], ctx)).encode()
        record.request = self._request_summary(step["method"], url, query, headers, content)
        response, auth_secrets = await self._send(step, runtime, url, query, headers, content, record)
        await until_no_write_held_here()  # parsing and redacting a 10 MiB answer is CPU work
        self.secrets.extend(auth_secrets)
        body = _parse_body(response)
        response_state = {
            "status": response.status_code,
            "headers": {k.lower(): v for k, v in response.headers.items()},
            "body": body,
        }
        record.response = self._redacted(
            {
                "status": response.status_code,
                "headers": redact_headers(dict(response.headers)),
                "body": summarize(self._redacted(_json_safe(body))),
            }
        )
        state = {"response": response_state, "output": body}
        if response.status_code not in step["expect"]:
            raise StepError(
                "status",
                f"HTTP {response.status_code} from {step['method']} {self._redact(_strip_query(url))}"
                f" (expected {', '.join(map(str, step['expect']))})",
                response.status_code,
                state,
            )
        return state

    def _request_summary(
        self, method: str, url: str, query: dict[str, str], headers: dict[str, str], content: bytes | None
    ) -> dict[str, Any]:
        body = content.decode("utf-8", "replace") if content else None
        summary = {
            "method": method,
            "url": url,
            "query": query,
            "headers": redact_headers(headers),
            "body": summarize(self._redacted(body)),
        }
        redacted: dict[str, Any] = self._redacted(summary)  # redaction keeps a dict a dict
        return redacted

    async def _send(
        self,
        step: dict[str, Any],
        runtime: dict[str, Any],
        url: str,
        query: dict[str, str],
        headers: dict[str, str],
        content: bytes | None,
        record: StepRecord,
    ) -> tuple[FetchedResponse, list[str]]:
        try:
            # The step's timeout is one deadline over everything it waits for: the token fetch, connecting,
            # sending, and every byte of the answer (inner fetches carry it too, as their own limit).
            async with asyncio.timeout(step["timeout"]):
                return await self._send_within_deadline(step, runtime, url, query, headers, content, record)
        except TimeoutError:
            raise StepError("timeout", f"timed out after {step['timeout']:g}s: {self._shown(url)}") from None

    async def _send_within_deadline(
        self,
        step: dict[str, Any],
        runtime: dict[str, Any],
        url: str,
        query: dict[str, str],
        headers: dict[str, str],
        content: bytes | None,
        record: StepRecord,
    ) -> tuple[FetchedResponse, list[str]]:
        http, tokens = self.engine.http, self.engine.tokens
        limits = FetchLimits(step["timeout"], self.engine.max_response_bytes)
        secrets: list[str] = []
        for attempt in (1, 2):
            try:
                auth = await prepare_auth(http, tokens, runtime, url, limits)
            except ConnectionError_ as error:
                raise StepError(error.kind, self._redact(str(error))) from None
            secrets.extend(auth.secrets)
            self.secrets.extend(auth.secrets)
            sent_query, sent_headers = {**query, **auth.params}, {**auth.headers, **headers}
            record.request = self._request_summary(step["method"], url, sent_query, sent_headers, content)
            shown = self._shown(url)
            try:
                response = await fetch(
                    http,
                    step["method"],
                    url,
                    deadline=limits.deadline,
                    max_bytes=limits.max_bytes,
                    params=sent_query or None,
                    headers=sent_headers,
                    content=content,
                )
            except EgressRefused as error:
                raise StepError("egress", f"not sent to {shown}: {self._redact(str(error))}") from None
            except DeadlineExceeded:
                raise StepError("timeout", f"timed out after {step['timeout']:g}s: {shown}") from None
            except ResponseTooLarge as error:
                raise StepError(
                    "too_large", f"{shown}: {error} (IHUB_HTTP_MAX_RESPONSE_BYTES); the rest was not read"
                ) from None
            except httpx.InvalidURL:
                raise StepError("config", f"not a valid URL: {shown}") from None
            except httpx.ConnectError as error:
                raise StepError("connect", f"cannot connect to {shown}: {error}") from None
            except httpx.HTTPError as error:
                raise StepError("network", f"{type(error).__name__} calling {shown}: {error}") from None
            oauth = fields_of(runtime).get("authType") == "oauth2_client_credentials"
            if response.status_code == 401 and oauth and attempt == 1:
                # The token may have been revoked or expired early: fetch a fresh one, once.
                tokens.invalidate(fields_of(runtime))
                continue
            return response, secrets
        raise AssertionError("unreachable")

    def _shown(self, url: str) -> str:
        """A target URL as a run record may show it: no query string, no known secret."""
        return self._redact(_strip_query(url))


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


def _slots_used(steps: list[dict[str, Any]]) -> set[str]:
    slots: set[str] = set()
    for step in steps:
        if "connection" in step:
            slots.add(step["connection"])
        for branch in ("then", "else", "steps"):
            if isinstance(step.get(branch), list):
                slots |= _slots_used(step[branch])
    return slots


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return _dumps(value)


def _strip_query(url: str) -> str:
    return url.split("?", 1)[0]


def _parse_body(response: FetchedResponse) -> Any:
    if not response.content:
        return None
    content_type = response.headers.get("content-type", "")
    if "json" in content_type:
        try:
            return response.json()
        except ValueError:
            pass
    return response.text


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def _cap_state(state: dict[str, Any]) -> dict[str, Any]:
    """Keep a step's state storable: a huge response body is cut (later steps see the cut text)."""
    text = _dumps(state)
    # json.loads is typed Any; the text is a dict's JSON, so it gives a dict back.
    if len(text) <= STATE_BODY_CAP:
        same: dict[str, Any] = json.loads(text)
        return same
    capped = dict(state)
    for key in ("output",):
        capped[key] = summarize(_json_safe(state.get(key)), STATE_BODY_CAP // 2)
    if isinstance(capped.get("response"), dict):
        capped["response"] = {**capped["response"], "body": summarize(capped["response"].get("body"), 1024)}
    cut: dict[str, Any] = json.loads(_dumps(capped))
    return cut
