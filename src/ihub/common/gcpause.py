"""Keep the garbage collector's pauses off the paths other tenants wait on.

CPython's full (generation 2) collection walks every tracked object of the process. Measured during
bench/isolation.py's cpu-foreach scenario (a run holding 20,000 step records in memory):
- a worker's full collections took 227 ms (p50) and up to 851 ms; one that started inside a write
  transaction held SQLite's only write lock that long, and the API's token endpoint waited for it;
- the API process's own full collections took 50-115 ms, most of it walking the modules, routes, models and
  schemas built at start-up, which never die; every request caught by one waited that long.

The remedy: `freeze_startup_objects`. After start-up, everything alive moves into the permanent generation
(`gc.freeze`, made for this); full collections then walk only what was created since.

Deferring collections while a write lock is held was tried and taken out: a transaction abandoned by a
cancelled task holds its gate until SQLAlchemy invalidates the connection, and collections stayed off for the
whole process meanwhile.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Call once, in a long-lived process, when start-up is over (never in a library or per test)."""
    gc.collect()
    gc.freeze()
