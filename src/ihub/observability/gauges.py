"""Gauges read from the database when /metrics is scraped (never on a hot path).

Each is one aggregate over the runs index (status, next_attempt_at): the queued and running rows are a small,
contiguous range of it however many finished runs the table holds. A scrape that cannot read them within
QUERY_TIMEOUT reports `ihub_database_up 0` instead of hanging the scraper.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ihub.db.base import utcnow
from ihub.runs.models import Run
from ihub.runs.status import RunStatus

QUERY_TIMEOUT = 2.0


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes for aggregates: they are UTC.
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def _read(session: AsyncSession, now: datetime) -> dict[str, float]:
    due = (Run.status == RunStatus.QUEUED) & (Run.next_attempt_at <= now)
    queued, oldest = (await session.execute(select(func.count(), func.min(Run.next_attempt_at)).where(due))).one()
    scheduled = await session.scalar(
        select(func.count()).where(Run.status == RunStatus.QUEUED, Run.next_attempt_at > now)
    )
    running = await session.scalar(select(func.count()).where(Run.status == RunStatus.RUNNING))
    expired = await session.scalar(
        select(func.count()).where(Run.status == RunStatus.RUNNING, Run.lease_expires_at < now)
    )
    waiting = await session.scalar(select(func.count()).where(Run.status == RunStatus.WAITING_FOR_CONNECTION))
    oldest_at = _aware(oldest)
    return {
        "queued": float(queued or 0),
        "scheduled": float(scheduled or 0),
        "oldest": max(0.0, (now - oldest_at).total_seconds()) if oldest_at else 0.0,
        "running": float(running or 0),
        "expired": float(expired or 0),
        "waiting": float(waiting or 0),
    }


async def run_gauges(readers: async_sessionmaker[AsyncSession]) -> list[GaugeMetricFamily]:
    now = utcnow()
    up = GaugeMetricFamily("ihub_database_up", "1 if the scrape could read the run gauges from the database.")
    try:
        async with readers() as session:
            found = await asyncio.wait_for(_read(session, now), QUERY_TIMEOUT)
    except Exception:  # noqa: BLE001 - the scrape still serves the counters; this gauge says what failed
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    families = [up]
    queue = GaugeMetricFamily(
        "ihub_runs_queued",
        "Queued runs: due now (waiting for a worker) or scheduled later (retry, delay).",
        labels=["due"],
    )
    queue.add_metric(["now"], found["queued"])
    queue.add_metric(["later"], found["scheduled"])
    families.append(queue)
    families.append(
        GaugeMetricFamily(
            "ihub_runs_queued_oldest_age_seconds",
            "How long the longest-waiting due run has been due (0 when none waits).",
            value=found["oldest"],
        )
    )
    families.append(GaugeMetricFamily("ihub_runs_running", "Runs claimed by a worker.", value=found["running"]))
    families.append(
        GaugeMetricFamily(
            "ihub_runs_lease_expired",
            "Running runs whose lease ran out (their worker stopped renewing it); a reconciler takes them over.",
            value=found["expired"],
        )
    )
    families.append(
        GaugeMetricFamily(
            "ihub_runs_waiting_for_connection",
            "Runs parked until a person reconnects a connection.",
            value=found["waiting"],
        )
    )
    return families
