"""Flows of a project: loading a flow with its compiled definition from the project's template."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.common.errors import ApiError
from ihub.flows.definition import FlowSpec, compile_flow, template_slots
from ihub.flows.models import Flow
from ihub.projects.models import Project
from ihub.templates.models import Template
from ihub.tenancy.models import Organization

__all__ = ["LoadedFlow", "flow_spec", "load_flow", "template_slots"]


@dataclass
class LoadedFlow:
    flow: Flow
    project_id: int
    org_id: int
    org_path: str
    template_id: int
    template_version: int
    # The compiled flow (ihub.flows.definition.FlowSpec) from the project's template; None if it is gone.
    spec: FlowSpec | None
    # False when the template no longer defines the flow's key (or the row was deactivated).
    active: bool


def flow_spec(definition: dict[str, Any] | None, key: str) -> FlowSpec | None:
    """The compiled flow `key` of a template definition, or None if it is not there (or no longer valid)."""
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


async def load_flow(session: AsyncSession, flow_id: int) -> LoadedFlow | None:
    row = (
        await session.execute(
            select(Flow, Project, Template, Organization)
            .join(Project, Project.id == Flow.project_id)
            .join(Template, Template.id == Project.template_id)
            .join(Organization, Organization.id == Project.org_id)
            .where(Flow.id == flow_id)
        )
    ).first()
    if row is None:
        return None
    flow, project, template, org = row
    spec = flow_spec(template.definition, flow.key)
    return LoadedFlow(
        flow=flow,
        project_id=project.id,
        org_id=project.org_id,
        org_path=org.path,
        template_id=template.id,
        template_version=template.version,
        spec=spec,
        active=bool(flow.active and spec is not None),
    )
