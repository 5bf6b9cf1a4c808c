"""Routers and command groups are wired explicitly (app.ROUTERS, ihub.cli): a domain that adds a routes.py
or a cli.py and forgets the wiring fails here instead of silently serving nothing."""

from __future__ import annotations

import importlib
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


def test_every_domain_command_group_is_registered() -> None:
    registered = {id(group.typer_instance) for group in cli.app.registered_groups}
    commands = {command.callback for command in cli.app.registered_commands}
    for module in domain_modules("cli"):
        loaded = importlib.import_module(module)
        groups = [value for value in vars(loaded).values() if isinstance(value, typer.Typer)]
        for group in groups:
            assert id(group) in registered, module
        if not groups:  # a module of single commands (executors: `ihub worker`)
            assert any(getattr(loaded, "worker", None) is callback for callback in commands), module
