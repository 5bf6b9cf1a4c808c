"""The `ihub` command as operators and scripts use it: init, key generate, serve's first start."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from ihub.app import create_app
from ihub.config import Settings

pytestmark = pytest.mark.slow

POSTGRES_ADMIN_URL = os.environ.get("IHUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def ihub(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ihub", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IHUB_")}
    return {**clean, "IHUB_DATA_DIR": str(tmp_path / "data")}


def token_status(data_dir: Path, user_id: str, secret: str) -> int:
    """Exchange a secret for a token in-process against the same database and key file the CLI used."""
    import anyio

    async def exchange() -> int:
        app = create_app(Settings(data_dir=data_dir, _env_file=None))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://cli-test") as client:
                nonce = str(uuid.uuid1())
                digest = hashlib.sha256((secret + nonce).encode()).hexdigest()
                response = await client.post("/api/v1/token", json={"userId": user_id, "nonce": nonce, "hash": digest})
                return response.status_code

    return anyio.run(exchange)


def test_init_json_prints_the_first_owner_once(env, tmp_path):
    first = ihub(env, "init", "--json")
    assert first.returncode == 0, first.stderr
    created = json.loads(first.stdout)
    assert set(created) == {"orgId", "userId", "email", "secret", "signinUrl"}
    assert created["orgId"] == "1" and created["userId"].isdigit() and len(created["secret"]) >= 32
    assert first.stdout.count(created["secret"]) == 1 and created["secret"] not in first.stderr
    assert created["signinUrl"].startswith("http://127.0.0.1:8080/console/password/")
    assert first.stdout.count(created["signinUrl"]) == 1 and created["signinUrl"] not in first.stderr
    assert (tmp_path / "data" / "secret.key").stat().st_mode & 0o077 == 0
    assert token_status(tmp_path / "data", created["userId"], created["secret"]) == 200

    again = ihub(env, "init", "--json")
    assert again.returncode == 3
    assert created["secret"] not in again.stdout + again.stderr
    refused = json.loads(again.stdout)
    assert refused["initialized"] is False and "already initialized" in refused["message"]

    plain = ihub(env, "init")
    assert plain.returncode == 3
    assert "already initialized" in plain.stdout + plain.stderr
    assert "Traceback" not in plain.stderr


def test_key_generate_replaces_the_secret(env, tmp_path):
    created = json.loads(ihub(env, "init", "--json").stdout)
    generated = ihub(env, "key", "generate", "--user", created["userId"], "--json")
    assert generated.returncode == 0, generated.stderr
    key = json.loads(generated.stdout)
    assert key["userId"] == created["userId"] and key["secret"] != created["secret"]
    assert token_status(tmp_path / "data", created["userId"], key["secret"]) == 200
    assert token_status(tmp_path / "data", created["userId"], created["secret"]) == 401


def test_key_generate_for_a_bad_user(env):
    ihub(env, "init", "--json")
    for user, message in (("999", "no user"), ("abc", "decimal id"), ("0", "decimal id")):
        result = ihub(env, "key", "generate", "--user", user, "--json")
        assert result.returncode != 0, user
        assert message in result.stdout + result.stderr, user
        assert "Traceback" not in result.stderr, user


def test_serve_prints_the_owner_on_first_start_only(env, tmp_path):
    port = str(_free_port())
    env = {**env, "IHUB_PORT": port}
    log = tmp_path / "serve.log"
    for start in ("first", "second"):
        with open(log, "w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "ihub", "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
            )
            try:
                _wait_healthy(f"http://127.0.0.1:{port}", process, log)
            finally:
                process.terminate()
                process.wait(timeout=60)  # a graceful stop; a loaded machine (xdist workers) slows it
        output = log.read_text()
        if start == "first":
            lines = dict(line.split("=", 1) for line in output.splitlines() if line.startswith("IHUB_"))
            user_id, secret = lines["IHUB_OWNER_USER_ID"], lines["IHUB_OWNER_SECRET"]
            signin_url = lines["IHUB_SIGNIN_URL"]
            assert user_id == "1"
            assert token_status(tmp_path / "data", user_id, secret) == 200
            # Each credential once: the machine-readable line is the only place (the hint points at it).
            assert output.count(secret) == 1 and output.count(signin_url) == 1
            # IHUB_PUBLIC_URL is unset: the link names the port the hub listens on, so it opens as printed.
            assert signin_url.startswith(f"http://127.0.0.1:{port}/console/password/")
        else:
            assert "IHUB_OWNER_SECRET" not in output and secret not in output
            assert "IHUB_SIGNIN_URL" not in output and signin_url not in output


def test_init_on_postgresql(tmp_path):
    admin = make_url(POSTGRES_ADMIN_URL)
    name = f"ihub_cli_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin.render_as_string(False), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin.set(database=name).render_as_string(hide_password=False)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("IHUB_")},
            "IHUB_DATA_DIR": str(tmp_path / "data"),
            "IHUB_DATABASE_URL": url,
            "IHUB_SECRET_KEY": "k" * 48,
        }
        first = ihub(env, "init", "--json")
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["orgId"] == "1"
        assert ihub(env, "init", "--json").returncode == 3
        # IHUB_SECRET_KEY was given: nothing is written into the data directory.
        assert not (tmp_path / "data" / "secret.key").exists()
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()[0] is None
        # Workers need the job queue's schema too; `ihub migrate` applies it when that executor is chosen.
        migrated = ihub({**env, "IHUB_EXECUTOR": "procrastinate"}, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()[0] == "procrastinate_jobs"
    finally:
        with psycopg.connect(admin.render_as_string(False), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("ihub serve did not start:\n" + log.read_text())
