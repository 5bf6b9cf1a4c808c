"""The `ihub` command: init, serve, migrate, and operator tools."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.panel import Panel

from ihub.accounts.cli import invite, reset_password
from ihub.audit.cli import app as audit_app
from ihub.common.cli_support import JsonFlag, with_session
from ihub.config import Settings, get_settings
from ihub.executors.cli import worker
from ihub.incoming.cli import trigger_app
from ihub.projects.cli import app as project_app
from ihub.replays.cli import app as replay_app
from ihub.runs.cli import app as runs_app
from ihub.runs.cli import failures_app
from ihub.templates.cli import app as template_app

if TYPE_CHECKING:
    # For annotations only: the commands import these where they use them, as the rest of this module does.
    from sqlalchemy.ext.asyncio import AsyncSession

    from ihub.bootstrap import FirstOwner
    from ihub.common.crypto import SecretBox
    from ihub.provisioning.service import IssuedKey
    from ihub.tenancy.models import User

app = typer.Typer(help="ihub: an integration hub.", no_args_is_help=True, add_completion=False)
user_app = typer.Typer(help="Manage users from the server's shell.", no_args_is_help=True)
key_app = typer.Typer(help="Manage API secret keys from the server's shell.", no_args_is_help=True)


@app.callback()
def _connect() -> None:
    # Every command's services see the same domain wiring as the API (ihub/wiring.py). No docstring: it would
    # replace the command's help text.
    from ihub.wiring import connect_domains

    connect_domains()


app.add_typer(user_app, name="user")
app.add_typer(key_app, name="key")
console = Console(stderr=True)


def migrate_database(settings: Settings) -> None:
    from ihub.db.engine import is_sqlite
    from ihub.db.migrate import upgrade

    if is_sqlite(settings.resolved_database_url):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    if settings.executor == "procrastinate" and not is_sqlite(settings.resolved_database_url):
        from ihub.executors.procrastinate_executor import ensure_schema, libpq_url

        asyncio.run(ensure_schema(libpq_url(settings.resolved_database_url)))


async def _initialize(settings: Settings, owner_email: str) -> FirstOwner | None:
    from ihub.bootstrap import initialize
    from ihub.common.crypto import SecretBox
    from ihub.db.engine import create_engine, create_sessionmaker

    engine = create_engine(settings.resolved_database_url, pool=False)
    try:
        async with create_sessionmaker(engine)() as session:
            box = SecretBox(settings.resolved_secret_key())
            first = await initialize(session, box, owner_email=owner_email, settings=settings)
            await session.commit()
            return first
    finally:
        await engine.dispose()


def _signin_url(settings: Settings, first: FirstOwner) -> str:
    from ihub.accounts.service import link_url

    if first.signin is None:
        raise RuntimeError("initialize() was called without settings, so no sign-in link was made")
    return link_url(settings, first.signin)


def _print_first_owner(settings: Settings, first: FirstOwner, as_json: bool) -> None:
    """`ihub init`: the secret and the sign-in link, each shown once (JSON on stdout, or a panel on stderr)."""
    url = _signin_url(settings, first)
    if as_json:
        print(
            json.dumps(
                {
                    "orgId": str(first.org_id),
                    "userId": str(first.user_id),
                    "email": first.email,
                    "secret": first.secret,
                    "signinUrl": url,
                }
            )
        )
        return
    console.print(
        Panel.fit(
            f"[bold]Root organization:[/] {first.org_id}\n"
            f"[bold]Owner userId:[/]      {first.user_id}  ({first.email})\n"
            f"[bold]Owner secret key:[/]  {first.secret}\n\n"
            "The secret is shown once. Store it now; `ihub key generate --user ID` makes a new one.\n"
            f"Open the link below to choose the Owner's console password: it works once, for "
            f"{settings.signin_link_ttl_hours} h; `ihub user invite --email E` makes a new one.",
            title="ihub initialized",
            border_style="green",
        )
    )
    # Outside the panel and never wrapped: a link broken over two lines does not open when copied.
    console.print(f"Console sign-in: {url}", soft_wrap=True, highlight=False)


def _announce_first_owner(settings: Settings, first: FirstOwner) -> None:
    """`ihub serve` on first start: machine-readable lines on stdout, the one place the secret and link appear,
    and a hint on stderr that points at them without repeating them (logs get copied around)."""
    print(
        f"IHUB_OWNER_USER_ID={first.user_id}\n"
        f"IHUB_OWNER_SECRET={first.secret}\n"
        f"IHUB_SIGNIN_URL={_signin_url(settings, first)}",
        flush=True,
    )
    console.print(
        f"[green]ihub initialized:[/] first Owner userId {first.user_id} ({first.email}). Its API secret key is "
        "on the IHUB_OWNER_SECRET line above (shown once: store it now). Open the IHUB_SIGNIN_URL link to choose "
        f"the Owner's console password (works once, for {settings.signin_link_ttl_hours} h).",
        # One line, never wrapped: a wrapped line could start with "IHUB_" and look like one of those above.
        soft_wrap=True,
    )


@app.command()
def init(
    as_json: JsonFlag = False,
    owner_email: Annotated[str, typer.Option(help="Email of the first Owner.")] = "owner@ihub.local",
) -> None:
    """Create the schema, the root organization (id "1") and the first Owner with a secret key and a one-time
    console sign-in link."""
    settings = get_settings()
    migrate_database(settings)
    first = asyncio.run(_initialize(settings, owner_email))
    if first is None:
        message = "already initialized: the hub has users. Use `ihub key generate --user ID` for a new secret."
        if as_json:
            print(json.dumps({"initialized": False, "message": message}))
        else:
            console.print(message)
        raise typer.Exit(3)
    _print_first_owner(settings, first, as_json)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default IHUB_HOST or 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default IHUB_PORT or 8080).")] = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Serve the API only; run no flows here.")] = False,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes that execute flows (default IHUB_WORKERS or 1).", min=1, max=64),
    ] = None,
) -> None:
    """Migrate, initialize on first start, and serve the API; flows run in supervised worker processes."""
    import uvicorn

    from ihub.app import create_app
    from ihub.logs import configure_logging

    settings = get_settings().listening_on(host, port)
    if workers is not None:
        settings = settings.model_copy(update={"workers": workers})
    configure_logging(settings.log_level)
    migrate_database(settings)
    first = asyncio.run(_initialize(settings, "owner@ihub.local"))
    if first is not None:
        _announce_first_owner(settings, first)
    from ihub.common.gcpause import freeze_startup_objects

    if settings.metrics_enabled:
        from ihub.observability import metrics

        # Counters of this server and its worker processes, summed at scrape time; an earlier server's are gone.
        directory = settings.data_dir / "metrics"
        metrics.reset_directory(directory)
        metrics.use_directory(directory)
    hub = create_app(settings, run_worker=not no_worker)
    freeze_startup_objects()
    uvicorn.run(
        hub,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        proxy_headers=False,
    )


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    migrate_database(get_settings())
    console.print("schema is up to date")


@key_app.command("generate")
def key_generate(user: Annotated[str, typer.Option("--user", help="User id.")], as_json: JsonFlag = False) -> None:
    """Generate a new secret key for a user (the old one stops working). Shown once."""
    from ihub.common.ids import parse_id
    from ihub.provisioning.service import generate_key
    from ihub.tenancy.models import User

    try:
        user_id = parse_id(user)
    except ValueError as error:
        console.print(f"--user {user!r}: {error}")
        raise typer.Exit(2) from None

    async def work(session: AsyncSession, box: SecretBox) -> IssuedKey | None:
        if await session.get(User, user_id) is None:
            return None
        return await generate_key(session, box, user_id)

    issued = asyncio.run(with_session(work))
    if issued is None:
        console.print(f"no user {user_id}")
        raise typer.Exit(1)
    if as_json:
        print(json.dumps({"userId": str(issued.user_id), "secret": issued.secret}))
    else:
        console.print(f"userId {issued.user_id}\nsecret {issued.secret}\n(shown once)")


@user_app.command("list")
def user_list(as_json: JsonFlag = False) -> None:
    """List every user."""
    from rich.table import Table
    from sqlalchemy import select

    from ihub.tenancy.models import User

    async def work(session: AsyncSession, _box: SecretBox) -> Sequence[User]:
        return (await session.scalars(select(User).order_by(User.id))).all()

    users = asyncio.run(with_session(work))
    if as_json:
        print(
            json.dumps(
                [
                    {"id": str(u.id), "orgId": str(u.org_id), "name": u.name, "email": u.email, "role": u.role}
                    for u in users
                ]
            )
        )
        return
    table = Table("id", "org", "name", "email", "role")
    for u in users:
        table.add_row(str(u.id), str(u.org_id), u.name, u.email, u.role)
    Console().print(table)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


# Command groups of the domains, wired explicitly: a missing or broken one fails at import, never skipped.
app.add_typer(template_app, name="template")
app.add_typer(project_app, name="project")
app.add_typer(runs_app, name="runs")
app.add_typer(failures_app, name="failures")
app.add_typer(replay_app, name="replay")
app.add_typer(trigger_app, name="trigger")
app.add_typer(audit_app, name="audit")
app.command()(worker)
user_app.command("invite")(invite)
user_app.command("reset-password")(reset_password)
