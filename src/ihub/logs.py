"""Structured JSON logs (structlog) for operators; secrets never reach a log line."""

from __future__ import annotations

import logging
import re
import sys

import structlog

# Libraries that print what passes through them: httpx logs every request's full URL at INFO (an API key
# in a query string, a Slack webhook URL that is the whole credential), httpcore logs hosts and headers at
# DEBUG, and aiosqlite / SQLAlchemy print SQL parameters (connection settings, step data) at DEBUG / INFO.
# They stay at WARNING whatever IHUB_LOG_LEVEL says; none of them warns with request contents.
QUIET_LOGGERS = ("httpx", "httpcore", "aiosqlite", "sqlalchemy.engine")


def silence_sensitive_loggers() -> None:
    """Idempotent; also called where outgoing clients are made, for processes that never configure logging."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


# Request paths and query strings that carry a credential: a one-time password link's token (in the path), and
# an OAuth callback's `code` and `state`, or any `token` parameter. The access log keeps the rest of the line.
SECRET_PATH = re.compile(r"(/console/password/)[^/?#\s]+")
SECRET_QUERY = re.compile(r"([?&](?:code|state|token|access_token|refresh_token)=)[^&#\s]*", re.IGNORECASE)


def redact_path(path: str) -> str:
    return SECRET_QUERY.sub(r"\1[redacted]", SECRET_PATH.sub(r"\1[redacted]", path))


class AccessLogRedaction(logging.Filter):
    """uvicorn's access log prints every request's full path; credentials in paths are replaced first."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_path(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


# Probes and scrapes arrive every few seconds and say nothing while they succeed: their 2xx lines are dropped.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class ProbeNoise(logging.Filter):
    """uvicorn's access record args are (client, method, path, http version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 5 and isinstance(args[2], str):
            path = args[2].split("?", 1)[0]
            if path in QUIET_PATHS and isinstance(args[4], int) and 200 <= args[4] < 300:
                return False
        return True


def redact_access_log() -> None:
    """Idempotent. A filter on the logger itself survives uvicorn's own logging set-up (it adds handlers and
    levels, never removes a logger's filters)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessLogRedaction) for f in access.filters):
        access.addFilter(AccessLogRedaction())
    if not any(isinstance(f, ProbeNoise) for f in access.filters):
        access.addFilter(ProbeNoise())


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level.upper())
    # Alembic narrates every migration step at INFO; operators only need to hear about problems.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    silence_sensitive_loggers()
    redact_access_log()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
    )
