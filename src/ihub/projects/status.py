"""The health of a connection, as stored in `connections.status` and shown by the API, the CLI and the console.

A `StrEnum` over a plain `String(16)` column, like the run statuses (ihub.runs.status): no database enum type
to migrate when a state is added. ihub.projects.health is what writes it.
"""

from __future__ import annotations

from enum import StrEnum


class ConnectionStatus(StrEnum):
    # Usable, as far as the hub knows (the default: a connection nobody has tested or used yet).
    CONNECTED = "connected"
    # Usable now, but its grant ends soon and cannot be renewed without a person (set by the OAuth2 code).
    EXPIRING = "expiring"
    # Unusable until a person reconnects it (refresh refused, grant revoked); runs that need it are parked.
    NEEDS_RECONNECT = "needs_reconnect"
    # The last check or use failed (the provider's message in `status_message`); a later success clears it.
    ERROR = "error"
