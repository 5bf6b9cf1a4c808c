"""A clock tests can move forward, for settings whose effect is time (token lifetimes).

The hub reads the time through module attributes (`utcnow` in the provisioning service, `time.time` in the
incoming access tokens); pointing those at a shifted clock lets a test age a token past its lifetime in no
real time, instead of waiting the minimum 60 s a lifetime setting allows.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from ihub.db.base import utcnow


class MovableClock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = 0.0
        self.frozen: float | None = None
        clock = self

        class ShiftedTime:
            """Stands in for the `time` module: wall-clock time moves, monotonic time does not."""

            monotonic = staticmethod(time.monotonic)
            perf_counter = staticmethod(time.perf_counter)
            sleep = staticmethod(time.sleep)

            @staticmethod
            def time() -> float:
                return clock.now()

        def shifted_utcnow() -> datetime:
            if clock.frozen is None:
                return utcnow() + timedelta(seconds=clock.offset)
            return datetime.fromtimestamp(clock.now(), UTC)

        monkeypatch.setattr("ihub.provisioning.service.utcnow", shifted_utcnow)
        monkeypatch.setattr("ihub.incoming.access.time", ShiftedTime)
        monkeypatch.setattr("ihub.incoming.grant.time", ShiftedTime)
        monkeypatch.setattr("ihub.incoming.single_use.utcnow", shifted_utcnow)

    def now(self) -> float:
        return (time.time() if self.frozen is None else self.frozen) + self.offset

    def freeze(self) -> None:
        """Stop the clock (on a whole second), so a test can stand exactly on an expiry instant."""
        self.frozen = float(int(time.time()))

    def advance_to(self, seconds: float) -> None:
        """Set the clock `seconds` after the real time (or after the instant it was frozen at)."""
        self.offset = seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> MovableClock:
    return MovableClock(monkeypatch)
