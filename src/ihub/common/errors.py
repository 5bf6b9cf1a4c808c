"""The `/api/v1` error envelope: `{"metadata": {"status", "code", "message"}}`."""

from __future__ import annotations

from http import HTTPStatus


class ApiError(Exception):
    """An error a client caused or may act on; routes and services raise it, the app renders it."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or status_slug(status)
        self.headers = headers or {}
        # Per-field detail of a validation error (`[{"field", "message"}]`), rendered as metadata.errors.
        self.fields: list[dict[str, str]] | None = None


def status_slug(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def envelope(status: int, code: str, message: str) -> dict[str, dict[str, object]]:
    return {"metadata": {"status": status, "code": code, "message": message}}


def bad_request(message: str, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, code)


def forbidden(message: str) -> ApiError:
    return ApiError(403, message, "forbidden")


def not_found(kind: str, object_id: object) -> ApiError:
    return ApiError(404, f"{kind} {object_id} not found", "not_found")


def conflict(message: str, code: str = "conflict") -> ApiError:
    return ApiError(409, message, code)
