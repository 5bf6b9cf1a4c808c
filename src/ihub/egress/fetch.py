"""One outgoing request under a total deadline and a response size cap.

httpx's timeouts are per operation (connect, each read), so a target that sends one byte a second never
trips a 3 s read timeout; and `response.content` holds the whole answer in memory. Here the deadline covers
resolving, connecting, sending and receiving the whole body, and the body is streamed and counted, so
an answer above the cap fails as soon as it passes the cap (or at once when Content-Length says so).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx


class DeadlineExceeded(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"no complete answer within {seconds:g}s")
        self.seconds = seconds


class ResponseTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the answer is larger than {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class FetchLimits:
    """A total deadline (seconds) and a size cap (bytes) for one outgoing call."""

    deadline: float
    max_bytes: int


@dataclass(frozen=True)
class FetchedResponse:
    """A complete answer: status, headers, and the body as received (decoded from any content-encoding)."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    encoding: str = "utf-8"

    @property
    def text(self) -> str:
        try:
            return self.content.decode(self.encoding, "replace")
        except LookupError:
            return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


async def fetch(
    http: httpx.AsyncClient, method: str, url: str, *, deadline: float, max_bytes: int, **request: Any
) -> FetchedResponse:
    """Send one request and read the whole answer within `deadline` seconds and `max_bytes` bytes.

    Raises DeadlineExceeded, ResponseTooLarge, ihub.egress.policy.EgressRefused (before connecting), or
    httpx.HTTPError. Per-operation httpx timeouts are set to the deadline too, as a second line."""
    try:
        async with asyncio.timeout(deadline):
            async with http.stream(method, url, timeout=deadline, **request) as response:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise ResponseTooLarge(max_bytes)
                chunks: list[bytes] = []
                received = 0
                # Counted after content decoding: the cap is on what is held in memory.
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
                    if received > max_bytes:
                        raise ResponseTooLarge(max_bytes)
                    chunks.append(chunk)
                return FetchedResponse(
                    response.status_code, response.headers, b"".join(chunks), response.charset_encoding or "utf-8"
                )
    except TimeoutError:
        raise DeadlineExceeded(deadline) from None
    except httpx.TimeoutException:
        raise DeadlineExceeded(deadline) from None
