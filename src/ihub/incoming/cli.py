"""`ihub trigger create|show|rotate|revoke|expire|enable|disable`: the trigger page from the server's shell."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ihub.common.errors import ApiError
from ihub.common.ids import parse_id
from ihub.config import get_settings
from ihub.egress import policy_from_settings
from ihub.incoming import service
from ihub.incoming.schemas import KeyUpdate, TriggerCreate, TriggerOut

trigger_app = typer.Typer(help="JWT triggers of flows: clients (iss), keys (kid), rotation.", no_args_is_help=True)
err = Console(stderr=True)
T = TypeVar("T")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
FlowOpt = Annotated[str, typer.Option("--flow", help="Flow id (the JWT sub).")]
ClientOpt = Annotated[str, typer.Option("--client", help="Client id (the JWT iss).")]
PublicKeyOpt = Annotated[
    Path | None, typer.Option("--public-key", help="PEM file with the client's public key (instead of generating).")
]
ExpiresOpt = Annotated[
    int | None,
    typer.Option(
        "--expires-in-days",
        min=1,
        max=3650,
        help="The new key expires this many days from now (default: IHUB_TRIGGER_KEY_MAX_AGE_DAYS when set).",
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option("--private-key-out", help="Write a generated private key here (mode 0600) instead of printing it."),
]


def _run(work: Callable[[Any], Awaitable[T]]) -> T:
    """`work` as one unit of work: the services flush, this commits when it returns (db/unit_of_work.py)."""
    from ihub.audit.recorder import begin_cli
    from ihub.db.engine import create_engine, create_sessionmaker
    from ihub.db.unit_of_work import unit_of_work

    async def main() -> T:
        engine = create_engine(get_settings().resolved_database_url, pool=False)
        try:
            async with unit_of_work(create_sessionmaker(engine)) as session:
                begin_cli(session)  # recorded in the audit log, as common/cli_support.py with_session does
                return await work(session)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except ApiError as error:
        err.print(f"[red]{error.message}[/]")
        raise typer.Exit(1) from None


def _show(triggers: list[TriggerOut], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"triggers": [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in triggers]}))
        return
    console = Console()
    for t in triggers:
        console.print(f"[bold]iss[/] {t.iss}   [bold]sub[/] {t.sub}   {'enabled' if t.enabled else '[red]disabled[/]'}")
        console.print(f"[bold]aud[/] {t.aud}\n[bold]webhook[/] {t.webhook_url}")
        if t.jwks_url:
            console.print(f"[bold]jwks[/] {t.jwks_url}")
        table = Table("kid", "alg", "source", "created", "expires", "revoked")
        for k in t.keys:
            created = k.created_at.isoformat(timespec="seconds") if k.created_at else ""
            # "never", as the console says: an empty cell reads as "unknown", and keys added before
            # IHUB_TRIGGER_KEY_MAX_AGE_DAYS was set are the ones an operator looks for here.
            expires = k.expires_at.isoformat(timespec="seconds") if k.expires_at else "never"
            if k.expired:
                expires = f"[red]{expires} (expired)[/]"
            table.add_row(k.kid, k.alg, k.source, created, expires, "yes" if k.revoked else "")
        console.print(table)
        if t.private_key:
            console.print("[yellow]Private key (shown once; store it now):[/]")
            print(t.private_key, end="")


def _deliver_private_key(out: TriggerOut, path: Path | None) -> TriggerOut:
    if out.private_key and path is not None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(out.private_key)
        err.print(f"private key written to {path}")
        return out.model_copy(update={"private_key": None})
    return out


def _source(public_key: Path | None, jwks_url: str | None) -> dict[str, Any]:
    if public_key is not None and jwks_url is not None:
        err.print("[red]give --public-key or --jwks-url, not both[/]")
        raise typer.Exit(2)
    if public_key is not None:
        return {"publicKey": public_key.read_text()}
    if jwks_url is not None:
        return {"jwksUrl": jwks_url}
    return {"generateKey": True}


def _expiry(days: int | None) -> dict[str, Any]:
    return {"expiresInDays": days} if days is not None else {}


def _add(flow_id: int | None, body: dict[str, Any], *, revoke_old: bool = False) -> TriggerOut:
    """A new client of flow `flow_id`, or (with `iss` in `body`) a new key of that client, which `revoke_old`
    makes its only unrevoked one. One unit of work: a rotation is one audit entry, and never half done."""
    settings = get_settings()

    async def work(session: Any) -> TriggerOut:
        flow = flow_id if flow_id is not None else (await service.get_client_by_iss(session, body["iss"])).flow_id
        loaded = await service.visible_flow(session, None, flow, manage=True)
        data = TriggerCreate.model_validate(body)
        added = await service.add_key(
            session, loaded, data, policy_from_settings(settings), max_age_days=settings.trigger_key_max_age_days
        )
        if revoke_old:
            for key in (await service.keys_of(session, [added.client.id]))[added.client.id]:
                if key.kid != added.kid and key.revoked_at is None:
                    await service.revoke_key(session, added.client, key.kid)
        keys = await service.keys_of(session, [added.client.id])
        return service.describe(added.client, keys[added.client.id], settings, added=added)

    return _run(work)


@trigger_app.command("create")
def create(
    flow: FlowOpt,
    public_key: PublicKeyOpt = None,
    jwks_url: Annotated[str | None, typer.Option("--jwks-url", help="https URL of the client's JWK Set.")] = None,
    alg: Annotated[str | None, typer.Option(help="PS256 to register an RSA key for PS256.")] = None,
    expires_in_days: ExpiresOpt = None,
    private_key_out: OutOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a trigger client for a flow; by default ihub generates the key pair."""
    body = {**_source(public_key, jwks_url), **({"alg": alg} if alg else {}), **_expiry(expires_in_days)}
    out = _add(parse_id(flow), body)
    _show([_deliver_private_key(out, private_key_out)], as_json)


@trigger_app.command("show")
def show(flow: FlowOpt, as_json: JsonFlag = False) -> None:
    """Show a flow's trigger clients: iss, sub, aud, webhook URL, keys."""
    settings = get_settings()

    async def work(session: Any) -> list[TriggerOut]:
        loaded = await service.visible_flow(session, None, parse_id(flow), manage=False)
        return await service.describe_all(session, loaded.flow.id, settings)

    _show(_run(work), as_json)


@trigger_app.command("rotate")
def rotate(
    client: ClientOpt,
    public_key: PublicKeyOpt = None,
    revoke_old: Annotated[bool, typer.Option("--revoke-old", help="Revoke the client's other keys.")] = False,
    expires_in_days: ExpiresOpt = None,
    private_key_out: OutOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Add a new key (new kid) to a client; old keys keep working until revoked (or until they expire)."""
    body = {**_source(public_key, None), "iss": client, **_expiry(expires_in_days)}
    out = _add(None, body, revoke_old=revoke_old)
    _show([_deliver_private_key(out, private_key_out)], as_json)


def _change(client: str, change: Callable[[Any, Any], Awaitable[None]], as_json: bool) -> None:
    settings = get_settings()

    async def work(session: Any) -> TriggerOut:
        record = await service.get_client_by_iss(session, client)
        await change(session, record)
        keys = await service.keys_of(session, [record.id])
        return service.describe(record, keys[record.id], settings)

    _show([_run(work)], as_json)


@trigger_app.command("revoke")
def revoke(
    client: ClientOpt,
    kid: Annotated[
        str | None, typer.Option("--kid", help="Revoke this key only; without it the client is disabled.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Revoke a key, or (without --kid) the whole client. Running servers notice within 5 seconds."""

    async def change(session: Any, record: Any) -> None:
        if kid is None:
            await service.set_enabled(session, record, False)
        else:
            await service.revoke_key(session, record, kid)

    _change(client, change, as_json)


@trigger_app.command("expire")
def expire(
    client: ClientOpt,
    kid: Annotated[str, typer.Option("--kid", help="The key whose expiry to set.")],
    in_days: Annotated[
        int | None, typer.Option("--in-days", min=1, max=3650, help="Expire this many days from now.")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the key's expiry.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Set (--in-days) or clear (--clear) a key's expiry; a new expiry re-arms the trigger.key_expiring event."""
    if (in_days is None) == (not clear):
        err.print("[red]give --in-days N or --clear[/]")
        raise typer.Exit(2)
    change = KeyUpdate.model_validate({"expiresInDays": in_days} if in_days is not None else {"expiresAt": None})
    max_age = get_settings().trigger_key_max_age_days

    async def work(session: Any, record: Any) -> None:
        await service.set_key_expiry(session, record, kid, change, max_age)

    _change(client, work, as_json)


@trigger_app.command("enable")
def enable(client: ClientOpt, as_json: JsonFlag = False) -> None:
    """Enable a disabled client."""
    _change(client, lambda session, record: service.set_enabled(session, record, True), as_json)


@trigger_app.command("disable")
def disable(client: ClientOpt, as_json: JsonFlag = False) -> None:
    """Disable a client: its assertions and access tokens are refused."""
    _change(client, lambda session, record: service.set_enabled(session, record, False), as_json)
