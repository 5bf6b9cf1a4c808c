"""The template of the route a request matched, as declared with every prefix: `/console/org/{org_id}/rename`.

The audit log names actions by it and the HTTP latency metric labels by it. A route of a router included in
another router knows only its own part (`/org/{org_id}/rename`, FastAPI keeps the including router's prefix
apart), so the prefixes are read off the request's path: what it has in front of that part once the parameters
are filled in. Those prefixes are fixed strings of the code (`/console`), never ids. Imports nothing of ihub:
the metrics middleware, which must not, uses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def route_template(scope: Mapping[str, Any]) -> str | None:
    """The matched route's full template, or None when no route matched (read after the app ran)."""
    declared = getattr(scope.get("route"), "path", None)
    if not isinstance(declared, str):
        return None
    # Without the root path a proxy mounts the hub under: the template names the route, not the deployment.
    path = str(scope.get("path", "")).removeprefix(str(scope.get("root_path", "")))
    filled = declared
    for name, value in (scope.get("path_params") or {}).items():
        filled = filled.replace("{" + name + "}", str(value))
    if path.endswith(filled):
        return path[: len(path) - len(filled)] + declared
    return declared
