"""The fixed-window counters behind the /token failure limits, with the clock passed in."""

from __future__ import annotations

import pytest

from ihub.ratelimit.service import Limit, record, retry_after

pytestmark = pytest.mark.anyio

T0 = 1_800_000_000.0  # a window boundary for a 100 s window


async def test_limit_trips_at_max_and_resets_with_the_window(app):
    limit = Limit("test:a", max_events=2, window_seconds=100)
    async with app.state.context.sessions() as session:
        assert await retry_after(session, [limit], now=T0) is None
        await record(session, [limit], now=T0 + 1)
        assert await retry_after(session, [limit], now=T0 + 2) is None
        await record(session, [limit], now=T0 + 3)
        await session.commit()
        assert await retry_after(session, [limit], now=T0 + 10) == 90
        assert await retry_after(session, [limit], now=T0 + 99.5) == 1
        # The next window starts empty.
        assert await retry_after(session, [limit], now=T0 + 100) is None


async def test_longest_wait_wins_and_keys_are_separate(app):
    short = Limit("test:short", max_events=1, window_seconds=10)
    long = Limit("test:long", max_events=1, window_seconds=100)
    other = Limit("test:other", max_events=1, window_seconds=100)
    async with app.state.context.sessions() as session:
        await record(session, [short, long], now=T0)
        await session.commit()
        assert await retry_after(session, [short, long], now=T0 + 5) == 95
        assert await retry_after(session, [short], now=T0 + 5) == 5
        assert await retry_after(session, [other], now=T0 + 5) is None


async def test_counts_accumulate_across_sessions(app):
    """Every API node shares the counters: separate sessions add to the same row."""
    limit = Limit("test:shared", max_events=3, window_seconds=100)
    for _ in range(3):
        async with app.state.context.sessions() as session:
            await record(session, [limit], now=T0 + 1)
            await session.commit()
    async with app.state.context.sessions() as session:
        assert await retry_after(session, [limit], now=T0 + 2) == 98


async def test_failure_keys_hold_any_client_text(app):
    """An iss or address a client chose (NUL, very long) still makes a key both databases can store."""
    from ihub.ratelimit.service import failure_limits

    for subject in ("client\x00id", "x" * 5000, "ü\u2028"):
        limits = failure_limits("test", subject, "10.0.0.1", per_pair=1, per_address=5, per_subject=5, window=100)
        async with app.state.context.sessions() as session:
            await limits.record(session, now=T0)
            await session.commit()
            assert await limits.retry_after(session, now=T0 + 1) == 99
    # Distinct long subjects stay distinct.
    one = failure_limits("t", "x" * 5000, "a", per_pair=1, per_address=1, per_subject=1, window=1)
    two = failure_limits("t", "x" * 4999 + "y", "a", per_pair=1, per_address=1, per_subject=1, window=1)
    assert one.subject.key != two.subject.key and len(one.pair.key) <= 300
