"""Request bodies are read whole, capped and under a deadline, before the app sees the request.

Why before: a handler that opened a database transaction and then awaited the body would hold the
connection (on SQLite, the only write connection) for as long as the client cared to drip bytes or lie
about its Content-Length. Buffered here, the body costs the app nothing to read: no request reaches a
handler, a dependency or the database until its last byte has arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ihub.common.errors import ApiError

# Renders an ApiError as a response in the error format of the request's path (app.error_response).
Render = Callable[[Scope, ApiError], ASGIApp]

# The connection is dropped after these answers: the rest of the body may never come, or is not wanted.
_CLOSE = {"Connection": "close"}


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body is larger than {limit} bytes", "payload_too_large", dict(_CLOSE))


def too_slow(timeout: float) -> ApiError:
    return ApiError(
        408,
        f"the request body did not arrive within {timeout:g} seconds (is Content-Length larger than the body?)",
        "request_timeout",
        dict(_CLOSE),
    )


class _Disconnected(Exception):
    """The client went away before its body was complete: nobody is left to answer."""


def declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout: float = 10.0, render: Render | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = declared_length(scope)
        try:
            if length is not None and length > self.max_bytes:
                # Refuse before reading, so a huge upload costs nothing.
                raise too_large(self.max_bytes)
            body = await self._read(receive)
        except _Disconnected:
            return
        except ApiError as error:
            await self._answer(scope, error, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes:
        """The whole body, within `read_timeout` seconds in total (not per chunk: a drip of one byte a second
        must not reset the clock) and at most `max_bytes` long whatever Content-Length said."""
        chunks: list[bytes] = []
        seen = 0
        try:
            async with asyncio.timeout(self.read_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _Disconnected
                    chunk = message.get("body", b"")
                    seen += len(chunk)
                    if seen > self.max_bytes:
                        raise too_large(self.max_bytes)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise too_slow(self.read_timeout) from None

    async def _answer(self, scope: Scope, error: ApiError, receive: Receive, send: Send) -> None:
        if self.render is None:
            from starlette.responses import JSONResponse

            response: ASGIApp = JSONResponse({"error": error.code}, status_code=error.status, headers=error.headers)
        else:
            response = self.render(scope, error)
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The buffered body as one message, then the server's own messages (a later `http.disconnect`)."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
