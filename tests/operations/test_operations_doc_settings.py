"""The settings tables of docs/operations.md and the README name real settings with their real defaults: an
operator copies these values into deployments, so a renamed setting or a changed default must fail here."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ihub.config import Settings

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\|\s*`(IHUB_[A-Z0-9_]+)`((?:,\s*`IHUB_[A-Z0-9_]+`)*)\s*\|\s*([^|]+?)\s*\|")
# Defaults that are derived or generated, not a value to compare.
DESCRIBED = {"IHUB_DATA_DIR", "IHUB_DATABASE_URL", "IHUB_PUBLIC_URL", "IHUB_SECRET_KEY"}


def documented(doc: str) -> list[tuple[str, str]]:
    """(setting, default as written) for every table row naming settings; `A`, `B` | `1`, `2` pairs them up."""
    rows = []
    for line in (ROOT / doc).read_text().splitlines():
        match = ROW.match(line)
        if not match:
            continue
        names = [match.group(1), *re.findall(r"`(IHUB_[A-Z0-9_]+)`", match.group(2))]
        defaults = [part.strip() for part in match.group(3).split(",")] if len(names) > 1 else [match.group(3)]
        rows.extend(zip(names, defaults, strict=True))
    return rows


def same(shown: str, value: Any) -> bool:
    """`1.0` and `1` are one number, `[]` and empty one empty list, `["prod","test"]` the list it spells."""
    if shown in ("empty", "[]"):
        return value in ("", [], None)
    if isinstance(value, bool):
        return shown == str(value).lower()
    if isinstance(value, int | float):
        return float(shown) == float(value)
    if isinstance(value, list):
        return bool(json.loads(shown) == [str(item) for item in value])
    return shown == str(value)


@pytest.mark.parametrize("doc", ["docs/operations.md", "README.md"])
def test_documented_defaults_are_the_code_defaults(doc: str) -> None:
    rows = documented(doc)
    assert rows, f"no settings table found in {doc}"
    fields = Settings.model_fields
    for name, default in rows:
        field = name.removeprefix("IHUB_").lower()
        assert field in fields, f"{doc}: {name} is not a setting of ihub.config.Settings"
        if name in DESCRIBED:
            continue
        value = fields[field].get_default(call_default_factory=True)
        assert same(default.strip("`"), value), f"{doc}: {name} documented as {default}, code default {value!r}"
