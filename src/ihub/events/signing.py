"""The Standard Webhooks signature scheme (https://www.standardwebhooks.com, "Verifying webhook authenticity").

- The secret is `whsec_` followed by base64 of 24-64 random bytes; the HMAC key is those bytes.
- The signed content is `{webhook-id}.{webhook-timestamp}.{body}`, the timestamp in whole seconds since the epoch.
- `webhook-signature` is a space-separated list of `v1,<base64 HMAC-SHA256>`: during a secret rotation the
  message is signed with the new and the old secret, and a receiver accepts it when any signature matches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<signature>` entry."""
    content = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets: Sequence[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every secret given (current first)."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(secret, message_id, timestamp, body) for secret in secrets),
    }
