"""The statuses a run and a step record can have, and which of them are final.

Both enums are `StrEnum`s whose values are the strings stored in `runs.status` and `run_steps.status` and shown
by the API, so rows written before the enums existed read the same. The columns stay `String(16)` rather than a
database enum type: on PostgreSQL every new state would need an `ALTER TYPE` migration, on SQLite the type does
not exist, and the transition guards in `ihub.runs.lifecycle` already decide which values get written. A member
is a `str`, so it binds as its value wherever a plain string did (SQL parameters, JSON, comparisons with rows
read back as plain strings).
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Parked: a step's connection needs a person to reconnect it (refresh refused, grant revoked). Holds no
    # worker and spends no retry; `ihub.projects.health.mark_reconnected` queues it again, and past its
    # `parked_until` the poller claims it only to fail it (see ihub.runs.lifecycle).
    WAITING_FOR_CONNECTION = "waiting_for_connection"

    @property
    def terminal(self) -> bool:
        """A run in a terminal status is never changed again (see ihub.runs.lifecycle)."""
        return self in TERMINAL_RUN_STATUSES


class StepStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    # Final: the run fails, unless the step's on_error is `continue`.
    FAILED = "failed"
    # This attempt failed and a later attempt follows (after the retry's backoff).
    RETRYING = "retrying"
    # A `delay` step waiting for its time (the run is queued meanwhile).
    WAITING = "waiting"
    # An `http` attempt recorded as `running` whose worker stopped before the answer was recorded.
    INTERRUPTED = "interrupted"
    # This attempt could not authenticate until the connection is reconnected: the run is parked
    # (waiting_for_connection) and the step runs again after the reconnect. Not a failure: no retry is spent.
    PARKED = "parked"

    @property
    def final(self) -> bool:
        """A step with a final record is restored from it, never executed again."""
        return self in FINAL_STEP_STATUSES


TERMINAL_RUN_STATUSES: frozenset[RunStatus] = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
FINAL_STEP_STATUSES: frozenset[StepStatus] = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED})
