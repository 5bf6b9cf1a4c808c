"""Structured JSON logs (structlog) for operators; secrets never reach a log line."""

from __future__ import annotations

import logging
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


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level.upper())
    # Alembic narrates every migration step at INFO; operators only need to hear about problems.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    silence_sensitive_loggers()
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
