"""`ihub init` hands out the first Owner's sign-in link; `ihub user invite` and `reset-password` make new ones."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ihub.accounts import service as accounts
from ihub.accounts.service import LinkTarget
from ihub.cli import app
from ihub.config import get_settings
from ihub.db.engine import create_engine, create_sessionmaker

pytestmark = pytest.mark.slow  # each command migrates a fresh SQLite file
runner = CliRunner()


@pytest.fixture
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in [name for name in os.environ if name.startswith("IHUB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("IHUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IHUB_PUBLIC_URL", "https://hub.example/")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def ihub(*args: str):
    return runner.invoke(app, list(args))


def peek(url: str) -> LinkTarget | None:
    token = url.rsplit("/", 1)[1]

    async def look() -> LinkTarget | None:
        engine = create_engine(get_settings().resolved_database_url, pool=False)
        try:
            async with create_sessionmaker(engine)() as session:
                return await accounts.peek_link(session, token)
        finally:
            await engine.dispose()

    return asyncio.run(look())


def test_init_json_has_a_signin_link_that_works(hub_env):
    result = ihub("init", "--json")
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert created["signinUrl"].startswith("https://hub.example/console/password/")
    target = peek(created["signinUrl"])
    assert target is not None
    assert (str(target.user_id), target.email, target.purpose) == (created["userId"], "owner@ihub.local", "invite")


def test_user_invite_makes_a_new_link_and_the_old_one_stops(hub_env):
    created = json.loads(ihub("init", "--json").stdout)
    result = ihub("user", "invite", "--email", "Owner@IHUB.local", "--json")
    assert result.exit_code == 0, result.output
    invited = json.loads(result.stdout)
    assert set(invited) == {"userId", "email", "url", "expiresAt"}
    assert invited["userId"] == created["userId"] and invited["email"] == "owner@ihub.local"
    assert invited["url"].startswith("https://hub.example/console/password/")
    assert peek(invited["url"]) is not None and peek(created["signinUrl"]) is None

    plain = ihub("user", "invite", "--email", "owner@ihub.local")
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.splitlines()[0].startswith("https://hub.example/console/password/")


def test_reset_password_and_unknown_emails(hub_env):
    ihub("init", "--json")
    reset = ihub("user", "reset-password", "--email", "owner@ihub.local", "--json")
    assert reset.exit_code == 0, reset.output
    target = peek(json.loads(reset.stdout)["url"])
    assert target is not None and target.purpose == "reset"

    for command in ("invite", "reset-password"):
        unknown = ihub("user", command, "--email", "nobody@example.com", "--json")
        assert unknown.exit_code == 1
        assert "no user with email nobody@example.com" in json.loads(unknown.stdout)["error"]
        assert unknown.exception is None or isinstance(unknown.exception, SystemExit)
