"""Keep the garbage collector's pauses off the paths other tenants wait on.

CPython's full (generation 2) collection walks every tracked object of the process. Measured during
bench/isolation.py's cpu-foreach scenario (a run holding 20,000 step records in memory):
- a worker's full collections took 227 ms (p50) and up to 851 ms; one that started inside a write
  transaction held SQLite's only write lock that long, and the API's token endpoint waited for it;
- the API process's own full collections took 50-115 ms, most of it walking the modules, routes, models and
  schemas built at start-up, which never die; every request caught by one waited that long.

Two remedies, each where it is cheap:
- `freeze_startup_objects`: after start-up, move everything alive into the permanent generation
  (`gc.freeze`, made for this); full collections then walk only what was created since.
- `pause_collection` / `resume_collection`: no automatic collection while a write lock is held; one that came
  due runs right after. Without it, cpu-foreach's token p99 reached 4x quiet in one run of three.
  A pause lasts at most `MAX_PAUSE_SECONDS`: a transaction abandoned by a cancelled task keeps its lock until
  SQLAlchemy closes the connection, and an unbounded pause kept collections off for the process meanwhile.
"""

from __future__ import annotations

import asyncio
import gc
import time

# Write transactions take milliseconds; one still open after this long is abandoned or unusually long, and
# either way collections come back rather than letting memory grow.
MAX_PAUSE_SECONDS = 1.0


class _Pause:
    holders = 0
    since = 0.0
    expiry: asyncio.TimerHandle | None = None


_pause = _Pause()


def freeze_startup_objects() -> None:
    """Call once, in a long-lived process, when start-up is over (never in a library or per test)."""
    gc.collect()
    gc.freeze()


def pause_collection() -> None:
    """Collections off until the matching `resume_collection`, or `MAX_PAUSE_SECONDS` at most."""
    if _pause.holders == 0:
        if not gc.isenabled():
            return  # turned off by someone else: not ours to turn back on
        gc.disable()
        _pause.since = time.monotonic()
        _pause.expiry = _schedule_expiry()
    elif time.monotonic() - _pause.since > MAX_PAUSE_SECONDS:
        _end_pause()  # outside an event loop nothing expires a pause: the next one does
        pause_collection()
        return
    _pause.holders += 1


def resume_collection() -> None:
    if _pause.holders:
        _pause.holders -= 1
        if _pause.holders == 0:
            _end_pause()


def _schedule_expiry() -> asyncio.TimerHandle | None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop.call_later(MAX_PAUSE_SECONDS, _end_pause)


def _end_pause() -> None:
    # Holders still open when a pause expires resume into nothing: their count is dropped with it.
    _pause.holders = 0
    if _pause.expiry is not None:
        _pause.expiry.cancel()
        _pause.expiry = None
    gc.enable()
