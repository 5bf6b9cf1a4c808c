"""Documented error responses for OpenAPI."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorMetadata(BaseModel):
    status: int
    code: str
    message: str


class ErrorResponse(BaseModel):
    metadata: ErrorMetadata


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}
