"""A Standard Webhooks receiver's side, written from the specification (standardwebhooks.com), independently
of ihub.events.signing: tests verify what the hub sends with it.

Spec: the key is the base64 after `whsec_`; the signed content is `{webhook-id}.{webhook-timestamp}.{raw body}`;
`webhook-signature` is a space-separated list of `v1,<base64 HMAC-SHA256>`, any one matching is enough; a
timestamp more than 5 minutes from the receiver's clock is refused (replays).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request

TOLERANCE_SECONDS = 5 * 60


class InvalidSignature(Exception):
    pass


def verify(secret: str, headers: Any, body: bytes, *, now: float | None = None) -> dict[str, Any]:
    """The parsed event if the request is authentic; InvalidSignature otherwise."""
    message_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (message_id and timestamp and signatures):
        raise InvalidSignature("missing webhook-* header")
    if abs((now if now is not None else time.time()) - int(timestamp)) > TOLERANCE_SECONDS:
        raise InvalidSignature("timestamp outside the tolerance")
    if not secret.startswith("whsec_"):
        raise InvalidSignature("not a whsec_ secret")
    key = base64.b64decode(secret[len("whsec_") :])
    expected = base64.b64encode(
        hmac.new(key, message_id.encode() + b"." + timestamp.encode() + b"." + body, hashlib.sha256).digest()
    ).decode()
    for entry in signatures.split(" "):
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return json.loads(body)
    raise InvalidSignature("no signature matches")


def received(server: HTTPServer, path: str = "/hook") -> list[Request]:
    return [request for request, _ in server.log if request.path == path]


async def wait_for(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll until `condition()` is truthy (a generous bound: a loaded machine is slow, not wrong)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def wait_for_async(condition: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
