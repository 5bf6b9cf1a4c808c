"""Which columns never reach an entry: every column whose name suggests a secret is either kept out by the
recorder's rule or named here as not secret, so a new secret column cannot slip into the log unnoticed."""

from __future__ import annotations

import re

from ihub.audit.recorder import OMITTED, SECRET, common_ancestor, is_secret, shown
from ihub.db.registry import metadata

SUSPICIOUS = re.compile(r"secret|sealed|hash|digest|token|password|csrf|verifier|private")

# Suspicious names that hold no secret, with what they hold.
NOT_SECRET = {
    ("connections", "secret_fields"): "the names of the secret fields that are set, never their values",
    ("oauth_apps", "token_url"): "the provider's token endpoint",
    ("event_endpoints", "previous_secret_until"): "when a rotated-out signing secret stops signing, not the secret",
}


def test_every_column_that_looks_secret_is_kept_out_or_explained() -> None:
    unexplained = [
        f"{table.name}.{column.name}"
        for table in metadata.sorted_tables
        for column in table.columns
        if SUSPICIOUS.search(column.name) and not is_secret(column) and (table.name, column.name) not in NOT_SECRET
    ]
    assert not unexplained, f"mark these info={{'secret': True}} or explain them in NOT_SECRET: {unexplained}"


def test_secrets_payloads_and_large_values_are_replaced() -> None:
    connections = metadata.tables["connections"]
    assert shown("connections", connections.c.secrets_sealed, "sealed-bytes") == SECRET
    assert shown("connections", connections.c.secrets_sealed, None) is None
    assert shown("connections", connections.c.config, {"siteUrl": "https://x"}) == {"siteUrl": "https://x"}
    runs = metadata.tables["runs"]
    assert shown("runs", runs.c.trigger, {"headers": {"authorization": "Bearer abc"}}) == OMITTED
    templates = metadata.tables["templates"]
    assert shown("templates", templates.c.description, "x" * 9000) == "[9000 characters omitted]"


def test_the_entry_belongs_to_the_deepest_organization_holding_every_change() -> None:
    assert common_ancestor(["/1/5/9/", "/1/5/"]) == "/1/5/"
    assert common_ancestor(["/1/5/9/", "/1/6/"]) == "/1/"
    assert common_ancestor(["/1/5/9/"]) == "/1/5/9/"
    assert common_ancestor([]) is None
