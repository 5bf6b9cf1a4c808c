"""What a sync flow's `respond` step may send back to the webhook caller.

The reply becomes an HTTP response written by ihub's server, so only what is the flow's to decide is allowed:
- a final status, 200-599 (1xx are interim answers the server manages; 204 and 304 carry no body);
- end-to-end headers with RFC 9110 token names: hop-by-hop headers (RFC 9110 §7.6.1) and the framing headers
  belong to the connection, and a flow that sets `Transfer-Encoding` beside the server's `Content-Length`
  would let the caller's proxies read the response two ways (response splitting / desync);
- header values without CR, LF or NUL (no injected header lines) and in latin-1 (what HTTP/1.1 can carry);
- a bounded number and size of headers, and a JSON body of finite numbers (JSON has no NaN or Infinity).
A reply that breaks one of these fails the run with a message naming the rule; the caller gets 502.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ihub.flows.storage import unstorable

MIN_STATUS, MAX_STATUS = 200, 599
BODYLESS = frozenset({204, 304})
MAX_HEADERS = 50
MAX_HEADER_BYTES = 8 * 1024
MAX_HEADERS_TOTAL_BYTES = 32 * 1024
# Set by the connection (RFC 9110 §7.6.1, RFC 9112 §6-7) or by ihub itself (Content-Type is always JSON).
CONNECTION_HEADERS = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "content-length", "host"}
)
IGNORED_HEADERS = frozenset({"content-type"})
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")


class InvalidReply(ValueError):
    pass


def check_header_name(name: str) -> None:
    if TOKEN.fullmatch(name) is None:
        raise InvalidReply(f"header name {name[:40]!r} is not an HTTP token (letters, digits and !#$%&'*+.^_`|~-)")
    lowered = name.lower()
    if lowered in CONNECTION_HEADERS or lowered.startswith("proxy-"):
        raise InvalidReply(f"header {name} belongs to the connection; a respond step may not set it")


def check_header_value(name: str, value: str) -> None:
    if any(char in value for char in "\r\n\x00"):
        raise InvalidReply(f"header {name} holds a line break or NUL")
    try:
        encoded = value.encode("latin-1")
    except UnicodeEncodeError:
        raise InvalidReply(f"header {name} is not latin-1 text (percent-encode other characters)") from None
    if len(encoded) > MAX_HEADER_BYTES:
        raise InvalidReply(f"header {name} is longer than {MAX_HEADER_BYTES} bytes")


def check_reply(reply: Any) -> dict[str, Any]:
    """The reply as it will be sent ({status, body, headers}), or InvalidReply naming what is wrong."""
    if not isinstance(reply, dict):
        raise InvalidReply("a reply is {status, body, headers}")
    status = reply.get("status")
    if isinstance(status, bool) or not isinstance(status, int) or not MIN_STATUS <= status <= MAX_STATUS:
        raise InvalidReply(f"status {str(status)[:20]} is not a final HTTP status ({MIN_STATUS}-{MAX_STATUS})")
    headers = reply.get("headers") or {}
    if not isinstance(headers, dict):
        raise InvalidReply("headers must be an object of names to text values")
    if len(headers) > MAX_HEADERS:
        raise InvalidReply(f"{len(headers)} headers: a reply has at most {MAX_HEADERS}")
    total = 0
    sent: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidReply("headers must be an object of names to text values")
        check_header_name(name)
        check_header_value(name, value)
        total += len(name) + len(value)
        if name.lower() not in IGNORED_HEADERS:
            sent[name] = value
    if total > MAX_HEADERS_TOTAL_BYTES:
        raise InvalidReply(f"headers add up to more than {MAX_HEADERS_TOTAL_BYTES} bytes")
    body = reply.get("body")
    if status in BODYLESS and body is not None:
        raise InvalidReply(f"status {status} carries no body: set body to null")
    reason = unstorable(body)
    if reason is not None:
        raise InvalidReply(f"body holds {reason}")
    try:
        json.dumps(body, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidReply(f"body is not JSON: {error}") from None
    return {"status": status, "body": body, "headers": sent}
