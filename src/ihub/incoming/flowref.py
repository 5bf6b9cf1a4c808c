"""What this domain needs to know about a flow, read through `ihub.flows.service.load_flow`."""

from __future__ import annotations

from ihub.flows.service import LoadedFlow, load_flow

__all__ = ["LoadedFlow", "is_jwt_triggered", "is_sync", "load_flow", "sync_timeout"]

DEFAULT_SYNC_TIMEOUT = 30.0


def is_jwt_triggered(loaded: LoadedFlow) -> bool:
    trigger = loaded.spec.get("trigger")
    kind = trigger.get("type") if isinstance(trigger, dict) else trigger
    return loaded.active and kind == "jwt"


def is_sync(loaded: LoadedFlow) -> bool:
    return loaded.spec.get("mode") == "sync"


def sync_timeout(loaded: LoadedFlow) -> float:
    value = loaded.spec.get("timeout")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return DEFAULT_SYNC_TIMEOUT
