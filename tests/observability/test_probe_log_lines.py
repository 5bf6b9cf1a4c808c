"""Probes and scrapes every few seconds would bury the access log: their successful lines are dropped, their
failures and every other path are kept."""

from __future__ import annotations

import logging

import pytest

from ihub.logs import ProbeNoise


def access_record(path: str, status: int) -> logging.LogRecord:
    # uvicorn's access record: '%s - "%s %s HTTP/%s" %d' with (client, method, path, http version, status).
    return logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", path, "1.1", status),
        None,
    )


@pytest.mark.parametrize(
    ("path", "status", "kept"),
    [
        ("/healthz", 200, False),
        ("/readyz", 200, False),
        ("/metrics", 200, False),
        ("/metrics?x=1", 200, False),
        ("/readyz", 503, True),
        ("/metrics", 401, True),
        ("/api/v1/run/7", 200, True),
        ("/healthz/extra", 200, True),
    ],
)
def test_successful_probe_lines_are_dropped(path: str, status: int, kept: bool) -> None:
    assert ProbeNoise().filter(access_record(path, status)) is kept
