"""Flows of a project: loading a flow with its compiled definition from a pinned template version.

Template versions are immutable (ihub.templates.models.TemplateVersion), so a flow compiled from
(template, version, key) stays valid for the life of the process: `CompiledFlows` keeps them in a bounded
LRU and nothing on the hot path (webhook, token grant, run claim) validates a definition again. A new
version is a new key; no invalidation is needed. Entries are keyed by database too (its URL: the API's read
and write engines share them), since ids are only unique within a database; whoever empties a database under
a live process (the test fixtures) calls `forget_compiled_flows`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.common.errors import ApiError
from ihub.db.engine import database_of
from ihub.flows.definition import FlowSpec, compile_flow, template_slots
from ihub.flows.models import Flow
from ihub.projects.models import Project
from ihub.templates.models import TemplateVersion
from ihub.tenancy.models import Organization

__all__ = ["LoadedFlow", "compiled_flow", "flow_spec", "forget_compiled_flows", "load_flow", "template_slots"]


@dataclass
class LoadedFlow:
    flow: Flow
    project_id: int
    org_id: int
    org_path: str
    template_id: int
    # The version `spec` comes from: the one asked for (a run's recorded version), else the project's pin.
    template_version: int
    # The version the project is pinned to now (what new runs and a "current" replay use).
    pinned_version: int
    # The compiled flow (ihub.flows.definition.FlowSpec) of that version; None if it lacks the key.
    spec: FlowSpec | None
    # False when the pinned version no longer defines the flow's key (or the row was deactivated).
    active: bool


def flow_spec(definition: dict[str, Any] | None, key: str) -> FlowSpec | None:
    """The compiled flow `key` of a template definition, or None if it is not there (or no longer valid).
    Compiles every time: use `compiled_flow` for a stored version."""
    flows = (definition or {}).get("flows") or []
    if not isinstance(flows, list):
        return None
    slots = template_slots(definition)
    for index, raw in enumerate(flows):
        if isinstance(raw, dict) and raw.get("key") == key:
            try:
                return compile_flow(raw, slots, f"definition.flows[{index}]")
            except ApiError:
                # Templates are validated on save; a stored one that no longer validates is not runnable.
                return None
    return None


CacheKey = tuple[str, int, int, str]


class CompiledFlows:
    """Process-wide LRU of compiled flows by (database, template id, version, flow key). A version that lacks
    the key is cached too (as None): asking again would give the same answer."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._entries: OrderedDict[CacheKey, FlowSpec | None] = OrderedDict()

    def get(self, key: CacheKey) -> tuple[bool, FlowSpec | None]:
        """(found, spec)."""
        if key not in self._entries:
            return False, None
        self._entries.move_to_end(key)
        return True, self._entries[key]

    def put(self, key: CacheKey, spec: FlowSpec | None) -> None:
        self._entries[key] = spec
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


COMPILED = CompiledFlows()


def forget_compiled_flows() -> None:
    """Drop every compiled flow (for a database emptied while this process runs: ids start again at 1)."""
    COMPILED.clear()


async def compiled_flow(
    session: AsyncSession, template_id: int, version: int, key: str
) -> tuple[bool, FlowSpec | None]:
    """(the version exists, flow `key` compiled from it or None). The definition is read and validated only
    on the first call per process for this (template, version, key)."""
    cache_key = (database_of(session), template_id, version, key)
    found, spec = COMPILED.get(cache_key)
    if found:
        return True, spec
    definition = await session.scalar(
        select(TemplateVersion.definition).where(
            TemplateVersion.template_id == template_id, TemplateVersion.version == version
        )
    )
    if definition is None:
        # Not cached: a missing version is an anomaly (a run recorded before versions were stored).
        return False, None
    spec = flow_spec(definition, key)
    COMPILED.put(cache_key, spec)
    return True, spec


async def load_flow(session: AsyncSession, flow_id: int, version: int | None = None) -> LoadedFlow | None:
    """The flow with its spec from template version `version` (a run's recorded version), or from the version
    the project is pinned to when None or when that version is not stored (runs recorded before versions
    existed carry numbers the migration could not recover; the pin is what they ran on before)."""
    row = (
        await session.execute(
            select(Flow, Project.id, Project.org_id, Project.template_id, Project.template_version, Organization.path)
            .join(Project, Project.id == Flow.project_id)
            .join(Organization, Organization.id == Project.org_id)
            .where(Flow.id == flow_id)
        )
    ).first()
    if row is None:
        return None
    flow, project_id, org_id, template_id, pinned, org_path = row
    chosen = pinned if version is None else version
    exists, spec = await compiled_flow(session, template_id, chosen, flow.key)
    if not exists and chosen != pinned:
        chosen = pinned
        exists, spec = await compiled_flow(session, template_id, chosen, flow.key)
    return LoadedFlow(
        flow=flow,
        project_id=project_id,
        org_id=org_id,
        org_path=org_path,
        template_id=template_id,
        template_version=chosen,
        pinned_version=pinned,
        spec=spec,
        active=bool(flow.active and spec is not None),
    )
