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
- `no_collection_while`: no automatic collection while a write lock is held; one that came due runs right
  after the lock is released, so nothing accumulates.
"""

from __future__ import annotations

import gc

_holders = 0


def freeze_startup_objects() -> None:
    """Call once, in a long-lived process, when start-up is over (never in a library or per test)."""
    gc.collect()
    gc.freeze()


def pause_collection() -> None:
    global _holders
    if _holders == 0 and gc.isenabled():
        gc.disable()
        _holders = 1
    elif _holders:
        _holders += 1


def resume_collection() -> None:
    global _holders
    if _holders:
        _holders -= 1
        if _holders == 0:
            gc.enable()
