"""What this domain needs to know about a flow, read through `ihub.flows.service.load_flow`."""

from __future__ import annotations

from ihub.flows.service import LoadedFlow, load_flow

__all__ = ["LoadedFlow", "is_jwt_triggered", "is_sync", "load_flow", "sync_timeout"]

DEFAULT_SYNC_TIMEOUT = 30.0


def is_jwt_triggered(loaded: LoadedFlow) -> bool:
    return loaded.active and loaded.spec is not None and loaded.spec.trigger.type == "jwt"


def is_sync(loaded: LoadedFlow) -> bool:
    return loaded.spec is not None and loaded.spec.mode == "sync"


def sync_timeout(loaded: LoadedFlow) -> float:
    value = loaded.spec.timeout if loaded.spec is not None else None
    if value is not None and value > 0:
        return value
    return DEFAULT_SYNC_TIMEOUT
