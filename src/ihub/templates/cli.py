"""`ihub template import FILE --org ID`: load a template from a YAML or JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.console import Console

from ihub.common.cli_support import JsonFlag, fail, run_work

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from ihub.common.crypto import SecretBox

app = typer.Typer(help="Manage integration templates from the server's shell.", no_args_is_help=True)
console = Console(stderr=True)


def read_template_file(path: Path) -> dict[str, Any]:
    """YAML (a superset of JSON) with `name`, `description` and `definition` at the top."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read {path}: {error}") from None
    from ihub.templates.service import template_document

    return template_document(data, str(path))


@app.command("import")
def import_template(
    file: Annotated[Path, typer.Argument(help="YAML or JSON file with name, description and definition.")],
    org: Annotated[str, typer.Option("--org", help="Id of the organization that owns the template.")],
    as_json: JsonFlag = False,
) -> None:
    """Create the template, or update the one of the same name in that organization (a new version; projects
    stay on theirs until `ihub project upgrade`)."""
    from ihub.common.ids import parse_id
    from ihub.templates import service

    try:
        org_id = parse_id(org)
        data = read_template_file(file)
    except ValueError as error:
        fail(str(error), as_json)

    async def work(session: AsyncSession, _box: SecretBox) -> dict[str, Any]:
        template, created = await service.import_template(
            session, org_id, data["name"], data["description"], data["definition"]
        )
        return {
            "created": created,
            "id": str(template.id),
            "orgId": str(template.org_id),
            "name": template.name,
            "version": template.version,
            "connections": [slot["id"] for slot in service.slots_of(template)],
            "flows": service.flow_keys(template),
        }

    result = run_work(work, as_json)
    if as_json:
        print(json.dumps(result))
        return
    verb = "created" if result["created"] else "updated"
    console.print(
        f"template {result['id']} {result['name']!r} {verb} in organization {result['orgId']} "
        f"(version {result['version']}, connections: {', '.join(result['connections']) or 'none'}, "
        f"flows: {', '.join(result['flows']) or 'none'})"
    )


def _ids(as_json: bool, *values: str) -> list[int]:
    from ihub.common.ids import parse_id

    try:
        return [parse_id(value) for value in values]
    except ValueError:
        fail(f"ids and versions must be decimal numbers, got {' '.join(values)!r}", as_json)


def _version_view(version: Any, with_definition: bool) -> dict[str, Any]:
    from ihub.templates.service import definition_flow_keys

    view: dict[str, Any] = {
        "version": version.version,
        "createdAt": version.created_at.isoformat(),
        "createdBy": str(version.created_by) if version.created_by is not None else None,
        "flows": definition_flow_keys(version.definition),
    }
    if with_definition:
        view["definition"] = version.definition
    return view


@app.command("versions")
def list_versions(
    template_id: Annotated[str, typer.Argument(help="Template id.")],
    as_json: JsonFlag = False,
) -> None:
    """Every stored version of a template, oldest first."""
    from sqlalchemy import select

    from ihub.common.errors import not_found
    from ihub.templates.models import Template, TemplateVersion

    [tid] = _ids(as_json, template_id)

    async def work(session: AsyncSession, _box: SecretBox) -> list[dict[str, Any]]:
        if await session.get(Template, tid) is None:
            raise not_found("template", tid)
        rows = await session.scalars(
            select(TemplateVersion).where(TemplateVersion.template_id == tid).order_by(TemplateVersion.version)
        )
        return [_version_view(row, with_definition=False) for row in rows.all()]

    versions = run_work(work, as_json)
    if as_json:
        print(json.dumps({"templateId": str(tid), "versions": versions}))
        return
    from rich.table import Table

    table = Table("version", "created", "by", "flows", title=f"template {tid}")
    for view in versions:
        table.add_row(str(view["version"]), view["createdAt"], view["createdBy"] or "-", ", ".join(view["flows"]))
    Console().print(table)


@app.command("version")
def show_version(
    template_id: Annotated[str, typer.Argument(help="Template id.")],
    version: Annotated[str, typer.Argument(help="Version number.")],
    as_json: JsonFlag = False,
) -> None:
    """One stored version of a template, with its definition."""
    from ihub.common.errors import ApiError
    from ihub.templates import service

    tid, number = _ids(as_json, template_id, version)

    async def work(session: AsyncSession, _box: SecretBox) -> dict[str, Any]:
        found = await service.find_version(session, tid, number)
        if found is None:
            raise ApiError(404, f"template {tid} has no version {number}", "not_found")
        return _version_view(found, with_definition=True)

    view = run_work(work, as_json)
    if as_json:
        print(json.dumps({"templateId": str(tid), **view}))
        return
    console.print(
        f"template {tid} version {view['version']} (saved {view['createdAt']}, "
        f"flows: {', '.join(view['flows']) or 'none'})"
    )
    print(yaml.safe_dump(view["definition"], sort_keys=False, allow_unicode=True), end="")
