"""The webhook: a verified caller's payload becomes a committed run before anything is acknowledged.

The path is kept to one cached state lookup and one insert (plus one more insert when an
`Idempotency-Key` is sent), because it is what external systems hammer. Concurrent webhooks share
commits (see RunWriter).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ihub.common.context import AppContext
from ihub.common.crypto import sha256_hex
from ihub.common.errors import ApiError
from ihub.common.group_commit import GroupCommit
from ihub.common.jsonbounds import payload_depth_error
from ihub.db.base import utcnow
from ihub.executors import dispatch
from ihub.flows.models import Flow
from ihub.flows.triggers import JwtTrigger
from ihub.incoming.access import ClientState
from ihub.incoming.models import IdempotencyRecord
from ihub.incoming.strictjson import strict_json
from ihub.runs.models import Run
from ihub.runs.service import create_run
from ihub.runs.status import TERMINAL_RUN_STATUSES, RunStatus

IDEMPOTENCY_WINDOW = timedelta(hours=24)
MAX_IDEMPOTENCY_KEY = 255
# Credentials of the caller are not part of the payload a flow (or a run viewer) sees.
DROPPED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


@dataclass(frozen=True)
class Accepted:
    run_id: int
    flow_id: int
    status: str
    duplicate: bool = False


def is_json_type(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return kind in ("application/json", "text/json") or kind.endswith("+json")


def payload(raw: bytes, content_type: str) -> dict[str, Any]:
    """JSON bodies parsed; everything else kept as sent (text, or base64 when it is not UTF-8)."""
    if is_json_type(content_type) or (not content_type and raw[:1] in (b"{", b"[")):
        if not raw.strip():
            return {"body": None, "contentType": content_type or "application/json"}
        try:
            body = strict_json(raw)
        except (ValueError, UnicodeDecodeError) as error:
            raise ApiError(400, f"body is not valid JSON: {error}", "invalid_request") from None
        too_deep = payload_depth_error(body)
        if too_deep is not None:
            raise ApiError(400, too_deep, "invalid_request")
        return {"body": body, "contentType": content_type or "application/json"}
    try:
        return {"body": raw.decode("utf-8"), "contentType": content_type}
    except UnicodeDecodeError:
        return {"body": base64.b64encode(raw).decode(), "bodyEncoding": "base64", "contentType": content_type}


def kept_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    kept: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        if name in DROPPED_HEADERS:
            continue
        value = raw_value.decode("latin-1")
        kept[name] = f"{kept[name]}, {value}" if name in kept else value
    return kept


async def accept(
    context: AppContext,
    client: ClientState,
    *,
    env: str,
    raw: bytes,
    content_type: str,
    headers: list[tuple[bytes, bytes]],
    idempotency_key: str | None,
) -> Accepted:
    """Commit the run (or find the one this idempotency key already started), then hand it to the executor."""
    trigger = JwtTrigger.payload(
        payload(raw, content_type), headers=kept_headers(headers), env=env, client_id=client.client_id
    )
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise ApiError(400, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters", "invalid_request")
    if idempotency_key is None:
        run_id = await run_writer(context).write(client, trigger)
        await dispatch(context, run_id)
        return Accepted(run_id, client.flow_id, RunStatus.QUEUED)
    flow = Flow(id=client.flow_id, project_id=client.project_id)
    async with context.sessions() as session:
        digest = sha256_hex(idempotency_key)
        earlier = await _earlier_run(session, client.pk, digest)
        if earlier is not None:
            return earlier
        run = await create_run(
            session, flow=flow, trigger_type="jwt", trigger=trigger, flow_version=client.flow_version
        )
        try:
            async with session.begin_nested():
                session.add(
                    IdempotencyRecord(client_pk=client.pk, key_digest=digest, run_id=run.id, key=idempotency_key)
                )
        except IntegrityError:
            # A concurrent request with the same key committed first: its run is the one.
            await session.rollback()
            earlier = await _earlier_run(session, client.pk, digest)
            if earlier is not None:
                return earlier
            raise ApiError(409, "a request with this Idempotency-Key is in progress", "conflict") from None
        run_id = run.id
        await session.commit()
    await dispatch(context, run_id)
    return Accepted(run_id, client.flow_id, RunStatus.QUEUED)


class RunWriter:
    """Webhook runs are group-committed (common/group_commit.py): concurrent webhooks share one transaction,
    and each request is answered only after its own run is committed."""

    MAX_BATCH = 128

    def __init__(self, context: AppContext) -> None:
        self.context = context
        self._group: GroupCommit[tuple[ClientState, dict[str, Any]], int] = GroupCommit(self._insert, self.MAX_BATCH)

    async def write(self, client: ClientState, trigger: dict[str, Any]) -> int:
        return await self._group.write((client, trigger))

    async def _insert(self, batch: Sequence[tuple[ClientState, dict[str, Any]]]) -> list[int]:
        async with self.context.sessions() as session:
            runs = [
                await create_run(
                    session,
                    flow=Flow(id=client.flow_id, project_id=client.project_id),
                    trigger_type="jwt",
                    trigger=trigger,
                    flow_version=client.flow_version,
                )
                for client, trigger in batch
            ]
            ids = [run.id for run in runs]
            await session.commit()
        return ids


def run_writer(context: AppContext) -> RunWriter:
    writer = context.run_writer
    if writer is None:
        writer = context.run_writer = RunWriter(context)
    return writer


async def _earlier_run(session: Any, client_pk: int, digest: str) -> Accepted | None:
    row = (
        await session.execute(
            select(IdempotencyRecord, Run.status, Run.flow_id)
            .join(Run, Run.id == IdempotencyRecord.run_id)
            .where(IdempotencyRecord.client_pk == client_pk, IdempotencyRecord.key_digest == digest)
        )
    ).first()
    if row is None:
        return None
    record, status, flow_id = row
    if record.created_at < utcnow() - IDEMPOTENCY_WINDOW:
        # Older than the window: forget it, this request starts a new run.
        await session.delete(record)
        await session.flush()
        return None
    run_id = record.run_id
    await session.rollback()
    return Accepted(run_id, flow_id, status, duplicate=True)


@dataclass(frozen=True)
class Outcome:
    status: str
    result: Any
    error: str | None


async def wait_for(context: AppContext, run_id: int, timeout: float) -> Outcome | None:
    """Poll the run row until it finishes (None after `timeout` seconds). The row is the only channel,
    so this works whichever node or worker executes the run."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        async with context.readers() as session:  # a poll must not take the write lock
            row = (await session.execute(select(Run.status, Run.result, Run.error).where(Run.id == run_id))).first()
        if row is not None and row.status in TERMINAL_RUN_STATUSES:
            return Outcome(row.status, row.result, row.error)
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 1.5, 0.25)
