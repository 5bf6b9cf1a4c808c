"""A cap on request bodies, enforced while reading so a lying or absent Content-Length cannot bypass it."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ihub.common.errors import ApiError


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body is larger than {limit} bytes", "payload_too_large")


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                # Refuse before reading, so a huge upload costs nothing.
                scope.setdefault("state", {})["body_too_large"] = True
                break
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            if scope.get("state", {}).get("body_too_large"):
                raise too_large(self.max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise too_large(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)
