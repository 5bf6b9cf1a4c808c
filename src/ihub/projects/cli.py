"""`ihub project show ID`: a project's connections and their health; `ihub project upgrade ID [--version N]`:
move a project to another version of its template."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from ihub.common.cli_support import JsonFlag, fail, run_work

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from ihub.common.crypto import SecretBox

app = typer.Typer(help="Manage projects from the server's shell.", no_args_is_help=True)
console = Console(stderr=True)


@app.command("show")
def show(project_id: Annotated[str, typer.Argument(help="Project id.")], as_json: JsonFlag = False) -> None:
    """A project's connections: configured or not, their status (connected, expiring, needs_reconnect, error)
    with the provider's message, and when each was last refreshed and used."""
    from ihub.common.errors import not_found
    from ihub.common.ids import parse_id
    from ihub.projects import service
    from ihub.projects.models import Project

    try:
        pid = parse_id(project_id)
    except ValueError:
        fail("the project id must be a decimal number", as_json)

    async def work(session: AsyncSession, _box: SecretBox) -> dict[str, Any]:
        project = await session.get(Project, pid)
        if project is None:
            raise not_found("project", pid)
        (view,) = await service.project_views(session, [project])
        return {
            "id": str(project.id),
            "name": project.name,
            "templateVersion": project.template_version,
            "connections": [c.model_dump(mode="json", by_alias=True, exclude={"config"}) for c in view.connections],
        }

    result = run_work(work, as_json)
    if as_json:
        print(json.dumps(result))
        return
    print(f"project {result['id']} {result['name']} (template version {result['templateVersion']})")
    for connection in result["connections"]:
        state = connection["status"] if connection["configured"] else "not configured"
        line = f"  {connection['id']:<20} {connection['type']:<12} {state}"
        if connection["statusMessage"]:
            line += f": {connection['statusMessage']}"
        line += (
            f"  (last used {connection['lastUsedAt'] or 'never'}, refreshed {connection['lastRefreshedAt'] or 'never'})"
        )
        print(line)


@app.command("upgrade")
def upgrade(
    project_id: Annotated[str, typer.Argument(help="Project id.")],
    version: Annotated[
        str | None, typer.Option("--version", help="Template version to pin (default: the latest).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Pin the project to a version of its template (a lower one rolls back); runs already started keep theirs.
    Running hubs pick the new version up for webhook runs within a few seconds (their client cache's TTL)."""
    from ihub.common.errors import not_found
    from ihub.common.ids import parse_id
    from ihub.projects import service
    from ihub.projects.models import Project

    try:
        pid = parse_id(project_id)
        number = parse_id(version) if version is not None else None
    except ValueError:
        fail("the project id and --version must be decimal numbers", as_json)

    async def work(session: AsyncSession, _box: SecretBox) -> dict[str, Any]:
        project = await session.get(Project, pid)
        if project is None:
            raise not_found("project", pid)
        before = project.template_version
        project = await service.pin_version(session, project, number)
        (view,) = await service.project_views(session, [project])
        return {
            "id": str(project.id),
            "templateId": str(project.template_id),
            "previousVersion": before,
            "templateVersion": project.template_version,
            "flows": [flow.key for flow in view.flows],
        }

    result = run_work(work, as_json)
    if as_json:
        print(json.dumps(result))
        return
    console.print(
        f"project {result['id']} pinned to version {result['templateVersion']} of template {result['templateId']} "
        f"(was {result['previousVersion']}; flows: {', '.join(result['flows']) or 'none'})"
    )
