"""One outgoing request under a total deadline and a response size cap.

httpx's timeouts are per operation (connect, each read), so a target that sends one byte a second never
trips a 3 s read timeout; and `response.content` holds the whole answer in memory. Here the deadline covers
resolving, connecting, sending and receiving the whole body, and the body is streamed and counted, so
an answer above the cap fails as soon as it passes the cap (or at once when Content-Length says so).
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Iterator
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


class BoundedDecoder:
    """Content-Encoding decoding (gzip, deflate: what httpx offers in Accept-Encoding) that never inflates
    more than the caller has room for. httpx's own decoders inflate a whole network read at once, and 64 KiB
    of gzip can hold 64 MiB; here each step yields at most `room + 1` bytes, so the cap check sees it first.
    Unknown encodings pass through as received, as httpx does."""

    def __init__(self, content_encoding: str) -> None:
        codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip().lower() not in ("", "identity")]
        if len(codings) > 1:
            raise httpx.DecodingError(f"stacked content encodings are not supported: {content_encoding[:100]}")
        self.coding = codings[0] if codings else ""
        self._inflater: Any = None
        if self.coding in ("gzip", "x-gzip"):
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif self.coding == "deflate":
            # "deflate" is meant to be zlib-wrapped, but some servers send raw deflate: decided on the first bytes.
            self._inflater = zlib.decompressobj()
        self._started = False

    def decode(self, data: bytes, room: int) -> Iterator[bytes]:
        if self._inflater is None:
            yield data
            return
        try:
            while data:
                piece = self._inflater.decompress(data, max(room, 0) + 1)
                self._started = True
                room -= len(piece)
                yield piece
                data = self._inflater.unconsumed_tail
        except zlib.error as error:
            if self.coding == "deflate" and not self._started:
                self._inflater, self.coding = zlib.decompressobj(-zlib.MAX_WBITS), "raw-deflate"
                yield from self.decode(data, room)
                return
            raise httpx.DecodingError(f"the answer's {self.coding} encoding is broken: {error}") from None

    def flush(self) -> bytes:
        if self._inflater is None:
            return b""
        try:
            return bytes(self._inflater.flush())
        except zlib.error as error:
            raise httpx.DecodingError(f"the answer's {self.coding} encoding is broken: {error}") from None


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
                decoder = BoundedDecoder(response.headers.get("content-encoding", ""))
                chunks: list[bytes] = []
                received = 0
                # Counted after content decoding: the cap is on what is held in memory.
                async for raw in response.aiter_raw():
                    for piece in decoder.decode(raw, room=max_bytes - received):
                        received += len(piece)
                        if received > max_bytes:
                            raise ResponseTooLarge(max_bytes)
                        chunks.append(piece)
                tail = decoder.flush()
                if received + len(tail) > max_bytes:
                    raise ResponseTooLarge(max_bytes)
                chunks.append(tail)
                return FetchedResponse(
                    response.status_code, response.headers, b"".join(chunks), response.charset_encoding or "utf-8"
                )
    except TimeoutError:
        raise DeadlineExceeded(deadline) from None
    except httpx.TimeoutException:
        raise DeadlineExceeded(deadline) from None
