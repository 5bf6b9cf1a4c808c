"""Failure groups: failed runs that failed the same way, counted where they happen.

A failed run belongs to the group of (template, flow key, failing step, error signature). The template and the
flow key, not the flow id: the same flow of one template fails the same way in every customer's project, and a
vendor wants to see "sync-contacts fails at create_issue with `HTTP 401` in 37 organizations" once, not 37 times.
The failing step is the step's path with loop indexes removed (`each[2].create` → `each[].create`); a run that
failed outside any step (its time budget, a parked wait that ran out) has the empty step. The signature is the
error text with what varies between occurrences replaced (numbers, ids, quoted values, URLs' queries): two
401s from different records read the same.

The group's key (`failure_key`, a hash of the four) is stored on the run, so a group's runs are one indexed
range (`ix_runs_failure_key`); its counts live in `failure_groups`, one row per organization, upserted in the
transaction that finishes the run. Reading the groups of a subtree sums a few small rows instead of grouping
millions of runs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.runs.models import FailureGroup

# What replaces a varying part of an error message in its signature.
VARIES = "…"
SIGNATURE_CAP = 300
SAMPLE_CAP = 1000

# Order matters: quoted values and URLs first (they may hold digits), then ids, then the remaining numbers.
_VARYING_PARTS = (
    re.compile(r"'[^']*'|\"[^\"]*\""),  # quoted values
    re.compile(r"(?<=[?&])[^=&\s]+=[^&\s]*"),  # query parameters of URLs
    re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE),  # UUIDs
    re.compile(r"\b[0-9a-f]{16,}\b", re.IGNORECASE),  # hex ids, digests
    re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"),  # email addresses
    re.compile(r"(?<![A-Za-z])\d+(?:\.\d+)?(?![A-Za-z])"),  # numbers (not inside words like OAuth2 or v1)
)
# HTTP statuses are what tells one failure from another: kept, not replaced like the other numbers.
_HTTP_STATUS = re.compile(r"\b(HTTP|status) ([1-5]\d\d)\b", re.IGNORECASE)
_KEPT = 0xE000
_PRIVATE_USE = re.compile("[\ue000-\uf8ff]")
_STEP_PREFIX = re.compile(r"^step [^:]+: ")
_LOOP_INDEX = re.compile(r"\[\d+\]")


def step_of(path: str) -> str:
    """The failing step without loop indexes: every iteration's failure is one step's failure."""
    return _LOOP_INDEX.sub("[]", path)[:200]


def signature(error: str) -> str:
    """The error text with what differs between occurrences of the same failure replaced by `…`."""
    # (Private-use characters in the error itself are dropped: they stand in for kept parts below.)
    # The start of a long error is what identifies it; capping first also bounds the work on hostile input.
    text = _PRIVATE_USE.sub("", _STEP_PREFIX.sub("", error.strip()[: 4 * SIGNATURE_CAP]))
    statuses: list[str] = []

    def keep_status(match: re.Match[str]) -> str:
        statuses.append(match.group(0))
        # A private-use character stands in for it: no pattern below matches one.
        return chr(_KEPT + len(statuses) - 1)

    text = _HTTP_STATUS.sub(keep_status, text)
    for pattern in _VARYING_PARTS:
        text = pattern.sub(VARIES, text)
    text = _PRIVATE_USE.sub(lambda m: statuses[ord(m.group(0)) - _KEPT], text)
    return re.sub(r"\s+", " ", text)[:SIGNATURE_CAP]


@dataclass(frozen=True)
class Failure:
    """How one run failed, in the terms its group is kept in."""

    org_id: int
    template_id: int
    flow_key: str
    step: str
    signature: str
    error: str

    @property
    def key(self) -> str:
        material = "\x1f".join((str(self.template_id), self.flow_key, self.step, self.signature))
        return hashlib.sha256(material.encode()).hexdigest()[:32]


def describe(*, org_id: int, template_id: int, flow_key: str, path: str, error: str) -> Failure:
    return Failure(org_id, template_id, flow_key, step_of(path), signature(error), error[:SAMPLE_CAP])


async def count(session: AsyncSession, failure: Failure, at: datetime) -> None:
    """One more failure in its group (an atomic upsert: concurrent workers do not lose counts)."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(FailureGroup).values(
        org_id=failure.org_id,
        failure_key=failure.key,
        template_id=failure.template_id,
        flow_key=failure.flow_key,
        step=failure.step,
        signature=failure.signature,
        sample_error=failure.error,
        count=1,
        first_seen=at,
        last_seen=at,
    )
    statement = statement.on_conflict_do_update(
        index_elements=["org_id", "failure_key"],
        set_={"count": FailureGroup.count + 1, "last_seen": at, "sample_error": failure.error},
    )
    await session.execute(statement)
