"""What every step type is made of: a pydantic model (its part of the flow format), a handler (what it does
when a run reaches it), and traits the engine reads as data (when to write its record, whether it holds
child steps, what a finished record restores).

The engine never names a step type; it asks the step's `StepType` (ihub.flows.steps.registry) instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    SerializerFunctionWrapHandler,
    model_serializer,
)
from pydantic_core import CoreSchema, core_schema

from ihub.flows.steps.fields import Identifier, Integer, Number, Text, problem

if TYPE_CHECKING:
    import httpx

    from ihub.flows.connections import TokenCache
    from ihub.runs.models import StepRecord

RETRYABLE_ERRORS = ("timeout", "connect", "network", "expression", "status")
RetryableError = Literal["timeout", "connect", "network", "expression", "status"]


class StepError(Exception):
    """A step failed: `kind` decides whether its retry policy retries it (`timeout`, `status`, ...)."""

    def __init__(self, kind: str, message: str, status: int | None = None, state: dict[str, Any] | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.state = state


class RetryLater(Exception):
    """The run goes back to `queued` until `at` (a retry's backoff, a long delay): no worker waits."""

    def __init__(self, at: datetime) -> None:
        super().__init__(at.isoformat())
        self.at = at


class FormatModel(BaseModel):
    """A part of the flow format: unknown fields are refused, JSON names may differ from Python ones.

    Serialized (`model_dump(by_alias=True)`), a part is its normalized definition, the form templates store:
    defaults filled in, optional fields (default None) left out when they were not given, except those
    listed in `always_dumped`.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    # Optional fields written out even when not given (respond's `body`).
    always_dumped: ClassVar[frozenset[str]] = frozenset()
    # Optional fields for which an explicit null is a value, kept when given (http's `json: null`).
    null_is_a_value: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _normalized(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name, info in type(self).model_fields.items():
            key = info.alias or name
            if info.default is not None or data.get(key) is not None or key in self.always_dumped:
                continue
            if key in self.null_is_a_value and name in self.model_fields_set:
                continue
            data.pop(key, None)
        return data


def _check_errors(value: Any) -> Any:
    if not isinstance(value, list):
        raise problem("must be a list")
    for index, error in enumerate(value):
        if error not in RETRYABLE_ERRORS:
            raise problem(f"must be one of {', '.join(RETRYABLE_ERRORS)}", f"[{index}]")
    return value


def _check_statuses(value: Any) -> Any:
    if not isinstance(value, list):
        raise problem("must be a list of HTTP status codes")
    return value


def _default_errors() -> list[RetryableError]:
    return ["timeout", "connect", "network"]


class RetryOn(FormatModel):
    statuses: Annotated[list[Annotated[int, Integer(100, 599)]], BeforeValidator(_check_statuses)] = Field(
        default_factory=lambda: [408, 425, 429, 500, 502, 503, 504], description="HTTP statuses that are retried."
    )
    errors: Annotated[list[RetryableError], BeforeValidator(_check_errors)] = Field(
        default_factory=_default_errors,
        description="Kinds of failure that are retried (`status`: any unexpected HTTP status).",
    )


class RetryPolicy(FormatModel):
    """How often a failing step is tried, and how long the run waits (released, not holding a worker)."""

    max_attempts: Annotated[int, Integer(1, 100)] = Field(1, description="Attempts in all, the first included.")
    initial_delay: Annotated[float, Number(0, 3600)] = Field(1.0, description="Seconds before the second attempt.")
    max_delay: Annotated[float, Number(0, 86400)] = Field(60.0, description="Upper bound of any wait, in seconds.")
    multiplier: Annotated[float, Number(1, 10)] = Field(2.0, description="Each wait is the previous one times this.")
    retry_on: RetryOn = Field(default_factory=RetryOn, description="Which failures are retried.")

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failure."""
        delay = self.initial_delay * self.multiplier ** max(0, failures - 1)
        return min(delay, self.max_delay)

    def retries(self, error: StepError) -> bool:
        if error.kind == "status":
            return error.status in self.retry_on.statuses or "status" in self.retry_on.errors
        return error.kind in self.retry_on.errors


DEFAULT_RETRY = RetryPolicy.model_validate({})


def _check_on_error(value: Any) -> Any:
    if value not in ("fail", "continue"):
        raise problem("must be fail or continue")
    return value


class StepModel(FormatModel):
    """The fields every step has. A step type's model adds `type: Literal["<name>"]` and its own fields."""

    # Fields that name child step lists (JSON names), walked for ids, depth, step counts and connection slots.
    child_fields: ClassVar[tuple[str, ...]] = ()
    id: Identifier = Field(description="Unique in the flow (also inside branches and loops); `steps.<id>`.")
    type: str = Field(description="The step type.")
    name: Annotated[str | None, Text(200)] = Field(None, description="Shown in the console and run records.")
    on_error: Annotated[Literal["fail", "continue"], BeforeValidator(_check_on_error)] = Field(
        "fail", description="`continue`: a failed step does not fail the run (its state says failed)."
    )
    # Models are frozen: every step without a `retry` shares one policy (a plain default would be deep-copied
    # for every step, which was most of the time a flow took to compile).
    retry: RetryPolicy = Field(default_factory=lambda: DEFAULT_RETRY, description="Retries of a failing step.")

    def children(self) -> Iterator[tuple[str, Sequence[StepModel]]]:
        """(JSON field name, steps) of every child step list, in definition order."""
        for key in self.child_fields:
            name = next(n for n, info in type(self).model_fields.items() if (info.alias or n) == key)
            yield key, getattr(self, name)

    def connections(self) -> set[str]:
        """Connection slots this step itself uses (its children's are walked separately)."""
        return set()


class StepContext(Protocol):
    """What a handler may do while a run executes one of its steps (the engine implements it)."""

    @property
    def path(self) -> str:
        """The step's path in the run (`check`, `loop[2].call`): unique, stable across resumes."""

    @property
    def record(self) -> StepRecord:
        """The step's record in this attempt (a handler fills `request`/`response`, or `status`/`state`)."""

    @property
    def run_uid(self) -> str: ...

    def render(self, value: Any) -> Any:
        """`value` with its `{{ templates }}` rendered in the step's scope (trigger, steps, vars, config)."""

    def evaluate(self, expression: str) -> Any: ...

    async def run_steps(self, steps: Sequence[StepModel], suffix: str) -> None:
        """Run child steps in this step's scope (their results are visible to the steps after them)."""

    async def run_each(
        self, steps: Sequence[StepModel], iterations: Sequence[tuple[str, dict[str, Any]]], concurrency: int
    ) -> list[dict[str, Any]]:
        """Run child steps once per (path suffix, extra names) in a scope of its own, at most `concurrency` at a
        time; return each iteration's step states. The first failure that stops the run wins."""

    async def write_record(self) -> None:
        """Store the step's record now (with the lease check), e.g. before a long wait."""

    async def sleep(self, seconds: float) -> None: ...

    async def yield_to_writers(self) -> None:
        """Before CPU work: let a write transaction this process holds finish first (db/write_gate.py)."""

    async def connection(self, slot: str) -> dict[str, Any]:
        """The runtime (config and secrets) of the project's connection in `slot`."""

    @property
    def http(self) -> httpx.AsyncClient:
        """The worker's HTTP client (egress policy applied)."""

    @property
    def tokens(self) -> TokenCache: ...

    @property
    def max_response_bytes(self) -> int: ...

    def add_secrets(self, secrets: Sequence[str]) -> None:
        """Values redacted from everything stored about the run from now on."""

    def redact(self, text: str) -> str: ...

    def redacted(self, value: Any) -> Any: ...

    def waiting(self) -> AbstractAsyncContextManager[None]:
        """Time spent inside is not charged to the run's time budget (waiting for an answer)."""


Handler = Callable[[Any, StepContext], Awaitable[dict[str, Any]]]


class RunEffects(Protocol):
    """What a succeeded step may change beyond its own state (restored again on resume)."""

    @property
    def vars(self) -> dict[str, Any]:
        """The scope's variables (`vars.*`)."""

    def set_result(self, value: Any) -> None: ...


def no_effects(state: Mapping[str, Any], effects: RunEffects) -> None:
    return None


@dataclass(frozen=True)
class StepType:
    """A step type: its model, its handler, and how the engine treats its records."""

    model: type[StepModel]
    handler: Handler
    description: str
    # Calls the outside world: its record is written before it runs (an interrupted attempt stays visible and
    # counts) and when it ends, on its own. Steps without side effects are recomputed after a crash.
    side_effects: bool = False
    # Waits across executions: a `waiting` record is picked up again on resume instead of starting over.
    resumable_wait: bool = False
    # Waits for the outside world (an answer, a timer): not charged to the run's time budget.
    waits: bool = False
    # What a succeeded step's state changes in the run: called when it succeeds and when restored.
    on_success: Callable[[Mapping[str, Any], RunEffects], None] = no_effects

    @property
    def name(self) -> str:
        tag = self.model.model_fields["type"].annotation
        args: tuple[Any, ...] = getattr(tag, "__args__", ())
        if len(args) != 1 or not isinstance(args[0], str):
            raise TypeError(f"{self.model.__name__}.type must be Literal['<step type>']")
        name: str = args[0]
        return name

    @property
    def composite(self) -> bool:
        """Holds child steps: a succeeded one is walked again on resume to restore its children's results."""
        return bool(self.model.child_fields)

    @property
    def written_alone(self) -> bool:
        return self.side_effects or self.resumable_wait


# The live table, filled by ihub.flows.steps.registry (read when models holding steps are (re)built).
REGISTERED: dict[str, StepType] = {}


class _StepUnion:
    """Validates a step as the model its `type` names, among the registered types (a tagged union)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        if not REGISTERED:  # while the step modules themselves are being defined
            return handler(source)
        choices = {name: handler.generate_schema(kind.model) for name, kind in REGISTERED.items()}
        return core_schema.tagged_union_schema(choices, discriminator="type")


AnyStep = Annotated[StepModel, _StepUnion()]
Steps = Annotated[list[AnyStep], BeforeValidator(lambda value: _check_steps(value))]


def _check_steps(value: Any) -> Any:
    if not isinstance(value, list):
        raise problem("must be a list of steps")
    return value
