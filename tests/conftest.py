"""Shared fixtures. Every test that takes `db_url` (directly or through `app`/`client`) runs twice:
against a fresh SQLite file and against the PostgreSQL server at IHUB_TEST_POSTGRES_URL
(default postgresql://postgres@127.0.0.1:5432/postgres), in a database made for this test run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import text
from sqlalchemy.engine import make_url

from ihub.app import create_app
from ihub.bootstrap import initialize
from ihub.config import Settings
from ihub.db.engine import sync_url
from ihub.db.registry import metadata
from ihub.flows.service import forget_compiled_flows
from ihub.projects.runtime import forget_project_runtimes

POSTGRES_ADMIN_URL = os.environ.get("IHUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = [b for b in os.environ.get("IHUB_TEST_BACKENDS", "sqlite,postgresql").split(",") if b]
TEST_SECRET_KEY = "test-master-key-" + "x" * 32
PUBLIC_URL = "http://testserver"
LOOPBACK_ALLOWED = ["127.0.0.0/8", "::1"]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of its own for this pytest process, dropped at the end."""
    name = f"ihub_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = make_url(POSTGRES_ADMIN_URL)
    try:
        with psycopg.connect(admin.set(drivername="postgresql").render_as_string(False), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {error}")
    url = admin.set(database=name).render_as_string(hide_password=False)
    engine = create_sync_engine(sync_url(url))
    metadata.create_all(engine)
    engine.dispose()
    yield url
    with psycopg.connect(admin.set(drivername="postgresql").render_as_string(False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_SEQUENCES: dict[str, list[str]] = {}


def truncate_postgres(url: str) -> None:
    """Empty every table and restart the id sequences (tests rely on the root organization being 1).

    DELETE, children first, not TRUNCATE: a test's tables hold a few rows, and TRUNCATE of all 28 tables (new
    files for each, and their indexes) took 0.5 s per test against 0.03 s for this: about a sixth of the suite."""
    engine = create_sync_engine(sync_url(url))
    with engine.begin() as conn:
        if url not in _SEQUENCES:
            found = (
                conn.scalar(text("SELECT pg_get_serial_sequence(:table, :column)"), {"table": t.name, "column": c.name})
                for t in metadata.sorted_tables
                for c in t.primary_key.columns
            )
            _SEQUENCES[url] = [name for name in found if name]
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
        for sequence in _SEQUENCES[url]:
            conn.execute(text(f"ALTER SEQUENCE {sequence} RESTART"))
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The schema in a SQLite file, made once per test process: each test copies it (create_all took 0.17 s)."""
    path = tmp_path_factory.mktemp("schema") / "ihub.db"
    engine = create_sync_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    engine.dispose()
    return path


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        shutil.copyfile(request.getfixturevalue("sqlite_template"), tmp_path / "ihub.db")
        return f"sqlite:///{tmp_path / 'ihub.db'}"
    url = request.getfixturevalue("postgres_database")
    truncate_postgres(url)
    # Same URL, new contents: flows this process compiled from the previous test's templates are not these.
    forget_compiled_flows()
    forget_project_runtimes()
    return url


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        public_url=PUBLIC_URL,
        secret_key=TEST_SECRET_KEY,
        # Test targets (pytest-httpserver, small servers) listen on loopback, which the egress policy refuses
        # by default; tests of the default policy use `settings.model_copy(update={"egress_allow": []})`.
        egress_allow=LOOPBACK_ALLOWED,
        # In-process execution keeps each test's app cheap; live hubs (start_hub) use worker processes.
        workers=0,
        # Two loaded cores can queue a test's requests for seconds; tests of the 503 set their own short timeout.
        db_lock_timeout_seconds=30,
        _env_file=None,
    )


@pytest.fixture
async def app(settings: Settings):  # noqa: ANN201
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:  # noqa: ANN001
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as http:
        yield http


@dataclass
class Credentials:
    user_id: str
    secret: str


@pytest.fixture
async def owner(app) -> Credentials:  # noqa: ANN001
    """The first Owner of the root organization, as `ihub init` creates it."""
    context = app.state.context
    async with context.sessions() as session:
        first = await initialize(session, context.box)
        await session.commit()
    assert first is not None
    return Credentials(str(first.user_id), first.secret)


def sign(secret: str, nonce: str) -> str:
    return hashlib.sha256((secret + nonce).encode()).hexdigest()


async def get_token(client: httpx.AsyncClient, creds: Credentials) -> str:
    nonce = str(uuid.uuid1())
    response = await client.post(
        "/api/v1/token", json={"userId": creds.user_id, "nonce": nonce, "hash": sign(creds.secret, nonce)}
    )
    assert response.status_code == 200, response.text
    return response.json()["tokens"][0]["token"]


@pytest.fixture
async def owner_token(client: httpx.AsyncClient, owner: Credentials) -> str:
    return await get_token(client, owner)


@pytest.fixture
def auth(owner_token: str) -> dict[str, str]:
    return {"Authorization": owner_token}


@pytest.fixture
def api(client: httpx.AsyncClient, auth: dict[str, str]):  # noqa: ANN201
    """Sets up org trees, users of each role and their tokens through the API (tests/api_helpers.py)."""
    from api_helpers import Api

    return Api(client, auth)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveHub:
    url: str
    user_id: str
    secret: str
    process: subprocess.Popen
    env: dict[str, str]
    # The one-time sign-in link `ihub init` printed for the first Owner.
    signin_url: str = ""


def start_hub(
    tmp_path: Path, database_url: str = "", extra_env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> LiveHub:
    """`ihub init --json` then `ihub serve` on a free port, as an operator would run them. Loopback test
    targets are allowed through the egress policy unless `extra_env` sets IHUB_EGRESS_ALLOW itself."""
    port = free_port()
    env = {
        **os.environ,
        "IHUB_DATA_DIR": str(tmp_path / "hub-data"),
        "IHUB_PORT": str(port),
        "IHUB_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "IHUB_EGRESS_ALLOW": json.dumps(LOOPBACK_ALLOWED),
        **(extra_env or {}),
    }
    if database_url:
        env["IHUB_DATABASE_URL"] = database_url
    ihub = [sys.executable, "-m", "ihub"]
    init = subprocess.run([*ihub, "init", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    creds = json.loads(init.stdout)
    log = open(tmp_path / "hub.log", "w")  # noqa: SIM115
    process = subprocess.Popen([*ihub, "serve", *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return LiveHub(url, creds["userId"], creds["secret"], process, env, creds.get("signinUrl", ""))
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise AssertionError("ihub serve did not start:\n" + (tmp_path / "hub.log").read_text())


def stop_hub(hub: LiveHub) -> None:
    hub.process.terminate()
    try:
        hub.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        hub.process.kill()


@pytest.fixture
def live_hub(tmp_path: Path) -> Iterator[LiveHub]:
    """A real `ihub serve` on the embedded default (SQLite) on a free port."""
    hub = start_hub(tmp_path)
    yield hub
    stop_hub(hub)


@pytest.fixture
def start_live_hub(tmp_path: Path) -> Iterator[object]:
    """`start_hub(database_url, extra_env)` for tests that choose the database or settings; stopped at teardown."""
    hubs: list[LiveHub] = []

    def start(database_url: str = "", extra_env: dict[str, str] | None = None) -> LiveHub:
        hubs.append(start_hub(tmp_path / f"hub-{len(hubs)}", database_url, extra_env))
        return hubs[-1]

    yield start
    for hub in hubs:
        stop_hub(hub)


# -- added for issue 7 (tests that catch what users would hit) -------------------------------------

# Hypothesis: no per-example deadline (a loaded 2-core machine is slow, not wrong), failing examples kept in
# .hypothesis/ and replayed first; `ci` bounds the examples per property. HYPOTHESIS_PROFILE picks one.
from hypothesis import settings as hypothesis_settings  # noqa: E402
from hypothesis.database import DirectoryBasedExampleDatabase  # noqa: E402

from clock import clock  # noqa: E402, F401 - a fixture: a clock tests can move (tests/clock.py)

hypothesis_settings.register_profile(
    "dev", deadline=None, max_examples=60, database=DirectoryBasedExampleDatabase(".hypothesis/examples")
)
hypothesis_settings.register_profile(
    "ci", deadline=None, max_examples=30, database=DirectoryBasedExampleDatabase(".hypothesis/examples")
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
