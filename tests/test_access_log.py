"""Credentials in request paths never reach the access log: one-time password links and OAuth callbacks."""

from __future__ import annotations

import logging
import logging.config

import pytest
from uvicorn.config import LOGGING_CONFIG

from ihub.logs import redact_access_log, redact_path


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/console/password/Yl0qaHLAwUDFHQYbn00QJp6t9WW", "/console/password/[redacted]"),
        ("/console/password/abc?x=1", "/console/password/[redacted]?x=1"),
        ("/oauth/callback?code=c0de&state=st4te", "/oauth/callback?code=[redacted]&state=[redacted]"),
        ("/oauth/callback?error=access_denied&state=s", "/oauth/callback?error=access_denied&state=[redacted]"),
        ("/console/org/1/runs?status=failed", "/console/org/1/runs?status=failed"),
    ],
)
def test_secret_parts_of_paths_are_redacted(path: str, logged: str) -> None:
    assert redact_path(path) == logged


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_the_filter_survives_uvicorns_logging_setup() -> None:
    redact_access_log()
    logging.config.dictConfig(LOGGING_CONFIG)  # what uvicorn.run does after ihub configured logging
    access = logging.getLogger("uvicorn.access")
    seen = Lines()
    access.addHandler(seen)
    try:
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/console/password/s3cr3t-token", "1.1", 200)
    finally:
        access.removeHandler(seen)
    assert seen.lines == ['127.0.0.1:1 - "GET /console/password/[redacted] HTTP/1.1" 200']
