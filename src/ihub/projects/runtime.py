"""What the engine needs of a project to run a flow: its settings and its decrypted connections, cached per
process and checked against the project's change stamp on every use.

A run used to read the project, then for every connection slot the project, the connection and the pinned
template definition again, and decrypt the secrets: 1 + 3 queries per slot and the decryption, for every run.
Now a run reads one row (the stamp: the project's `updated_at` and pinned version, and the count and latest
`updated_at` of its connections) and gets the rest from memory while nothing changed. Any change of the
project, its pin or a connection moves the stamp (every such write sets `updated_at`), so a run never uses
settings or credentials older than its own load: there is no expiry to wait for and nothing to invalidate.
The cached credentials are decrypted, like the OAuth2 tokens the engine already keeps in memory; the cache is
bounded, and a copy is handed out so that no run can change what the next one gets.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.common.crypto import SecretBox
from ihub.common.errors import ApiError
from ihub.db.engine import database_of
from ihub.projects.health import USES
from ihub.projects.models import Connection, Project
from ihub.projects.service import connection_runtime, project_settings

Stamp = tuple[datetime | None, int | None, int, datetime | None]


@dataclass(frozen=True)
class ProjectRuntime:
    settings: dict[str, object]
    # slot → the connection as the engine uses it (connection_runtime's shape, secrets decrypted)
    connections: dict[str, dict[str, object]]
    # slot → why the slot cannot be used (unknown, not configured, unreadable): the step that uses it fails
    errors: dict[str, str]


async def _stamp(session: AsyncSession, project_id: int) -> Stamp | None:
    row = (
        await session.execute(
            select(
                Project.updated_at, Project.template_version, func.count(Connection.id), func.max(Connection.updated_at)
            )
            .outerjoin(Connection, Connection.project_id == Project.id)
            .where(Project.id == project_id)
            .group_by(Project.id, Project.updated_at, Project.template_version)
        )
    ).first()
    if row is None:
        return None
    updated, version, count, latest = row
    return (updated, version, int(count), latest)


async def _build(session: AsyncSession, box: SecretBox, project_id: int, slots: frozenset[str]) -> ProjectRuntime:
    connections: dict[str, dict[str, object]] = {}
    errors: dict[str, str] = {}
    for slot in sorted(slots):
        try:
            connections[slot] = await connection_runtime(session, box, project_id, slot)
        except ApiError as error:
            errors[slot] = error.message
    return ProjectRuntime(await project_settings(session, project_id), connections, errors)


class ProjectRuntimes:
    """Per-process LRU of ProjectRuntime by (database, project), each valid for the stamp it was built at."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, int], tuple[Stamp, frozenset[str], ProjectRuntime]] = OrderedDict()

    async def get(self, session: AsyncSession, box: SecretBox, project_id: int, slots: Iterable[str]) -> ProjectRuntime:
        wanted = frozenset(slots)
        key = (database_of(session), project_id)
        stamp = await _stamp(session, project_id)
        hit = self._entries.get(key)
        if hit is not None and stamp is not None and hit[0] == stamp:
            if wanted <= hit[1]:
                self._entries.move_to_end(key)
                return copy.deepcopy(hit[2])
            known = hit[1]  # built at this stamp for other slots: rebuilt for both
        else:
            known = frozenset()
        runtime = await _build(session, box, project_id, wanted | known)
        if stamp is not None:
            self._entries[key] = (stamp, wanted | known, runtime)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return copy.deepcopy(runtime)

    def clear(self) -> None:
        self._entries.clear()


RUNTIMES = ProjectRuntimes()


def forget_project_runtimes() -> None:
    """Drop every cached project (for a database emptied while this process runs: ids start again at 1), and
    which connections had their use recorded lately (the same ids may name new connections)."""
    RUNTIMES.clear()
    USES.clear()
