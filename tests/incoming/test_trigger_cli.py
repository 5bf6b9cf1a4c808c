"""`ihub trigger ...` from the server's shell, against the same database the app serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from incoming_support import PUBLIC_URL, Incoming, sign, within_client_cache_ttl

from ihub.config import Settings

pytestmark = pytest.mark.anyio


async def ihub(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "IHUB_DATABASE_URL": settings.database_url,
        "IHUB_SECRET_KEY": settings.secret_key,
        "IHUB_PUBLIC_URL": PUBLIC_URL,
        "IHUB_DATA_DIR": str(settings.data_dir),
    }
    # In a thread: blocking the event loop would freeze the in-process hub, possibly while it holds
    # SQLite's write lock, which the CLI process then waits for in vain.
    return await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-m", "ihub", "trigger", *args], env=env, capture_output=True, text=True, timeout=60
        )
    )


def ok(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["triggers"][0]


async def test_create_rotate_revoke_from_the_shell(
    incoming: Incoming, settings: Settings, tmp_path: Path, db_url: str
) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("the CLI shares the service layer tested on both backends; one backend keeps this fast")
    flow = incoming.flows["create-issue"]
    key_file = tmp_path / "privateKey.txt"
    created = ok(await ihub(settings, "create", "--flow", flow, "--private-key-out", str(key_file), "--json"))
    assert "privateKey" not in created and created["sub"] == flow
    assert key_file.stat().st_mode & 0o777 == 0o600
    iss, first_kid = created["iss"], created["kid"]

    def claims() -> dict[str, Any]:
        now = int(time.time())
        return {"iss": iss, "sub": flow, "aud": created["aud"], "iat": now, "exp": now + 1200}

    assert (await incoming.token(sign(key_file.read_text(), claims()))).status_code == 200

    shown = ok(await ihub(settings, "show", "--flow", flow, "--json"))
    assert shown["iss"] == iss and [k["kid"] for k in shown["keys"]] == [first_kid]

    # The shell is another process: the hub's client cache sees its changes within STATE_TTL_SECONDS.
    rotated = ok(await ihub(settings, "rotate", "--client", iss, "--revoke-old", "--json"))
    assert rotated["kid"] != first_kid and rotated["privateKey"].startswith("-----BEGIN PRIVATE KEY-----")
    assert {k["kid"]: k["revoked"] for k in rotated["keys"]} == {first_kid: True, rotated["kid"]: False}
    response = await within_client_cache_ttl(lambda: incoming.token(sign(key_file.read_text(), claims())), 400)
    assert response.json()["error"] == "invalid_grant"
    assert (await incoming.token(sign(rotated["privateKey"], claims()))).status_code == 200

    revoked = ok(await ihub(settings, "revoke", "--client", iss, "--json"))
    assert revoked["enabled"] is False
    response = await within_client_cache_ttl(lambda: incoming.token(sign(rotated["privateKey"], claims())), 401)
    assert response.json()["error"] == "invalid_client"

    missing = await ihub(settings, "revoke", "--client", "no-such-client")
    assert missing.returncode == 1 and "not found" in missing.stderr
    manual = await ihub(settings, "create", "--flow", incoming.flows["by-hand"])
    assert manual.returncode == 1 and "jwt" in manual.stderr
