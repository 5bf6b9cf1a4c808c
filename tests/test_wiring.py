"""Routers and command groups are wired explicitly (app.ROUTERS, ihub.cli): a domain that adds a routes.py
or a cli.py and forgets the wiring fails here instead of silently serving nothing."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import typer

import ihub
from ihub import cli
from ihub.app import ROUTERS

PACKAGE = Path(ihub.__file__).parent


def domain_modules(name: str) -> list[str]:
    return sorted(f"ihub.{path.parent.name}.{name}" for path in PACKAGE.glob(f"*/{name}.py"))


def test_every_domain_router_is_served() -> None:
    modules = domain_modules("routes")
    assert len(modules) >= 6
    for module in modules:
        assert importlib.import_module(module).router in ROUTERS, module


def registered_commands() -> set[object]:
    """Callbacks of the root's commands and of its groups' commands (`ihub worker`, `ihub user invite`)."""
    apps = [cli.app, *(group.typer_instance for group in cli.app.registered_groups)]
    return {command.callback for app in apps if app is not None for command in app.registered_commands}


def test_every_domain_command_group_is_registered() -> None:
    registered = {id(group.typer_instance) for group in cli.app.registered_groups}
    commands = registered_commands()
    for module in domain_modules("cli"):
        loaded = importlib.import_module(module)
        groups = [value for value in vars(loaded).values() if isinstance(value, typer.Typer)]
        for group in groups:
            assert id(group) in registered, module
        if not groups:
            # A module of single commands (executors: `ihub worker`; accounts: `ihub user invite`, ...): each of
            # its public plain functions is a command of the root or of one of its groups.
            singles = [
                value
                for name, value in vars(loaded).items()
                if inspect.isfunction(value)
                and value.__module__ == module
                and not name.startswith("_")
                and not inspect.iscoroutinefunction(value)
            ]
            assert singles, module
            for function in singles:
                assert function in commands, f"{module}.{function.__name__}"


# Dependencies between these domains point one way: each may import those listed before it, never one after.
LAYERS = ("tenancy", "templates", "projects")


def imported_modules(source: str, package: str) -> set[str]:
    """Every module a file of `package` imports, at module level, inside functions or under TYPE_CHECKING."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            # `from ihub import projects` / `from ihub.projects import service` name modules too.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def domain_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "ihub" and parts[1] in LAYERS else None


def layer_imports() -> dict[tuple[str, str], list[str]]:
    """(importing domain, imported domain) -> the files that do it, for imports between LAYERS."""
    edges: dict[tuple[str, str], list[str]] = {}
    for domain in LAYERS:
        for path in sorted((PACKAGE / domain).rglob("*.py")):
            package = "ihub." + ".".join(path.relative_to(PACKAGE).parent.parts)
            for module in imported_modules(path.read_text(encoding="utf-8"), package):
                target = domain_of(module)
                if target is not None and target != domain:
                    edges.setdefault((domain, target), []).append(str(path.relative_to(PACKAGE)))
    return edges


def test_tenancy_templates_projects_import_one_way() -> None:
    edges = layer_imports()
    assert ("projects", "templates") in edges and ("templates", "tenancy") in edges  # the parser sees imports
    upward = {
        f"{source} imports {target} in {sorted(set(files))}": None
        for (source, target), files in edges.items()
        if LAYERS.index(target) > LAYERS.index(source)
    }
    assert not upward, "dependencies must point tenancy <- templates <- projects: " + "; ".join(upward)


def test_the_cycle_check_sees_function_level_and_relative_imports() -> None:
    source = "def f():\n    from ..projects import service\n    import ihub.templates.models\n"
    found = imported_modules(source, "ihub.tenancy")
    assert "ihub.projects.service" in found and "ihub.templates.models" in found


def test_lower_domains_are_wired_by_the_composition_root() -> None:
    from ihub.projects import service as projects
    from ihub.templates import service as templates
    from ihub.tenancy import service as tenancy
    from ihub.wiring import connect_domains

    connect_domains()
    assert tenancy.org_contents() is projects
    assert templates.template_users() is projects
