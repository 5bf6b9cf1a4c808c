"""The step types a flow may use: one line per type. Adding a type is a module with its model and handler
(see ihub.flows.steps.map for a small one) plus one line in BUILTIN (docs/flows.md, "Adding a step type")."""

from __future__ import annotations

from pydantic import BaseModel

from ihub.flows.steps import delay, fail, foreach, http, if_, respond
from ihub.flows.steps import map as map_step
from ihub.flows.steps.base import REGISTERED, StepType

BUILTIN: tuple[StepType, ...] = (
    http.STEP,
    map_step.STEP,
    if_.STEP,
    foreach.STEP,
    delay.STEP,
    respond.STEP,
    fail.STEP,
)

# Models outside this package whose fields hold steps (the flow model): rebuilt when the table changes.
_HOLDERS: list[type[BaseModel]] = []


def step_type(name: str) -> StepType:
    return REGISTERED[name]


def step_types() -> tuple[str, ...]:
    return tuple(REGISTERED)


def register(kind: StepType) -> None:
    """Add a step type (its name is its model's `type` literal); flows may use it from now on."""
    if kind.name in REGISTERED:
        raise ValueError(f"step type {kind.name!r} is already registered")
    REGISTERED[kind.name] = kind
    _rebuild()


def unregister(name: str) -> None:
    del REGISTERED[name]
    _rebuild()


def rebuild_with_steps(model: type[BaseModel]) -> None:
    """Build `model` (which holds steps) against the table, and again whenever the table changes."""
    _HOLDERS.append(model)
    model.model_rebuild(force=True)


def _rebuild() -> None:
    # A model holding steps embeds the validators of every step type at build time; a composite embeds the
    # other composites, so one pass may leave a stale copy inside another: two passes settle it.
    for _ in range(2):
        for kind in REGISTERED.values():
            if kind.composite:
                kind.model.model_rebuild(force=True)
    for model in _HOLDERS:
        model.model_rebuild(force=True)


for _kind in BUILTIN:
    REGISTERED[_kind.name] = _kind
_rebuild()
