"""Properties of the one redaction (ihub.flows.connections.redact_text / redact_value), checked by hypothesis
over arbitrary secrets and surrounding text: no form of a secret survives, and redacting twice changes nothing."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

from hypothesis import given
from hypothesis import strategies as st

from ihub.flows.connections import REDACTED, redact_text, redact_value

secrets = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=8, max_size=40)
texts = st.text(max_size=30)


@given(secret=secrets, before=texts, after=texts)
def test_no_textual_form_survives(secret: str, before: str, after: str) -> None:
    for form in (secret, json.dumps(secret)[1:-1], quote(secret, safe=""), quote(secret), quote_plus(secret)):
        redacted = redact_text(before + form + after, [secret])
        assert form not in redacted


@given(secret=secrets, before=st.binary(max_size=20), after=st.binary(max_size=20))
def test_base64_of_a_blob_holding_the_secret_is_redacted_at_any_alignment(
    secret: str, before: bytes, after: bytes
) -> None:
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        blob = encode(before + secret.encode() + after).decode()
        redacted = redact_text(blob, [secret])
        assert REDACTED in redacted
        # At most two characters on each side of the secret's bits can remain.
        kept = redacted.split(REDACTED)
        assert len("".join(kept)) <= len(blob) - len(secret.encode()) * 4 // 3 + 4


@given(secret=secrets, value=st.recursive(st.text() | st.integers(), lambda inner: st.lists(inner, max_size=3)))
def test_redacting_twice_changes_nothing(secret: str, value: object) -> None:
    once = redact_value([value, secret, {secret: secret}], [secret, "dact"])
    assert redact_value(once, [secret, "dact"]) == once
    assert secret not in json.dumps(once, ensure_ascii=False)


def test_a_secret_inside_another_is_replaced_whole() -> None:
    assert redact_text("x-long-secret-value-y", ["secret", "long-secret-value"]) == f"x-{REDACTED}-y"


def test_short_values_are_not_redacted() -> None:
    """A 3-character 'secret' would erase ordinary text everywhere; it is left alone (see docs/security.md)."""
    assert redact_text("the abc of it", ["abc"]) == "the abc of it"
