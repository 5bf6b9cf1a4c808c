"""`ihub template import FILE --org ID`: load a template from a YAML or JSON file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
import yaml
from rich.console import Console

from ihub.common.cli_support import JsonFlag, with_session

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
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with name, description and definition")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 200:
        raise ValueError(f"{path}: name: required, a non-empty string of at most 200 characters")
    description = data.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise ValueError(f"{path}: description: must be a string")
    if "definition" not in data:
        raise ValueError(f"{path}: definition: required ({{connections, flows}})")
    return {"name": name.strip(), "description": description, "definition": data["definition"]}


@app.command("import")
def import_template(
    file: Annotated[Path, typer.Argument(help="YAML or JSON file with name, description and definition.")],
    org: Annotated[str, typer.Option("--org", help="Id of the organization that owns the template.")],
    as_json: JsonFlag = False,
) -> None:
    """Create the template, or update the one of the same name in that organization (its version goes up)."""
    from ihub.common.errors import ApiError
    from ihub.common.ids import parse_id
    from ihub.templates import service

    try:
        org_id = parse_id(org)
        data = read_template_file(file)
    except ValueError as error:
        _fail(str(error), as_json)

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

    try:
        result = asyncio.run(with_session(work))
    except ApiError as error:
        _fail(error.message, as_json)
    if as_json:
        print(json.dumps(result))
        return
    verb = "created" if result["created"] else "updated"
    console.print(
        f"template {result['id']} {result['name']!r} {verb} in organization {result['orgId']} "
        f"(version {result['version']}, connections: {', '.join(result['connections']) or 'none'}, "
        f"flows: {', '.join(result['flows']) or 'none'})"
    )


def _fail(message: str, as_json: bool) -> NoReturn:
    if as_json:
        print(json.dumps({"error": message}))
    else:
        console.print(f"[red]error:[/] {message}")
    raise typer.Exit(1)
