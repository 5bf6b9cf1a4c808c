"""The run list's query parameters: anything a client can type gets 200 or a 400 that says what is expected,
never a 500 (ids past the 32-bit id columns, Unicode digits, times outside the calendar once in UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from flowkit import jira_definition
from hypothesis import example, given
from hypothesis import strategies as st

from ihub.common.errors import ApiError
from ihub.common.ids import MAX_ID
from ihub.runs.schemas import parse_cursor, parse_flow, parse_since

ECHO = {"key": "echo", "trigger": "manual", "steps": [{"id": "out", "type": "respond", "body": {"ok": True}}]}

BAD = [
    ({"cursor": "99999999999999999999999"}, "cursor"),
    ({"cursor": str(2**31)}, "cursor"),
    ({"cursor": "²"}, "cursor"),
    ({"cursor": "-1"}, "cursor"),
    ({"flow": str(2**64)}, "flow"),
    ({"flow": str(2**63)}, "flow"),
    ({"flow": "²"}, "flow"),
    ({"flow": "١٢"}, "flow"),  # Arabic-Indic digits
    ({"flow": "a b"}, "flow"),
    ({"since": "9999-12-31T23:59:59-23:59"}, "since"),
    ({"since": "0001-01-01T00:00:00+23:59"}, "since"),
    ({"since": "0000-01-01T00:00:00Z"}, "since"),
    ({"since": "10000-01-01T00:00:00Z"}, "since"),
    ({"since": "2026-01-01T00:00:00"}, "since"),
    ({"limit": str(2**70)}, "limit"),
]


@pytest.mark.anyio
async def test_bad_parameters_get_a_400_that_names_them(kit) -> None:
    project = await kit.project(jira_definition([ECHO], slot_type="http"))
    run_id = await kit.trigger(kit.flow_id(project, "echo"), {})
    await kit.wait(run_id)
    url = f"/api/v1/project/{project['id']}/runs"
    for params, name in BAD:
        response = await kit.client.get(url, params=params, headers=kit.auth)
        assert response.status_code == 400, (params, response.text)
        assert name in response.json()["metadata"]["message"], (params, response.text)
    # The edges that are valid still work.
    for params in (
        {"cursor": str(MAX_ID)},
        {"flow": "echo"},
        {"flow": kit.flow_id(project, "echo")},
        {"since": "0001-01-01T00:00:00Z"},
        {"since": "9999-12-31T23:59:59+23:59"},
    ):
        response = await kit.client.get(url, params=params, headers=kit.auth)
        assert response.status_code == 200, (params, response.text)
    widest = {"cursor": str(MAX_ID), "since": "0001-01-01T00:00:00Z"}
    everything = await kit.client.get(url, params=widest, headers=kit.auth)
    assert [r["id"] for r in everything.json()["runs"]] == [run_id]


def _parsed_or_400(parse, value):  # noqa: ANN001, ANN202
    try:
        return parse(value)
    except ApiError as error:
        assert error.status == 400
        return None


@given(st.text(max_size=30))
@example("²")
@example(str(2**63))
def test_any_cursor_is_an_id_in_range_or_a_400(text: str) -> None:
    parsed = _parsed_or_400(parse_cursor, text)
    assert parsed is None or (1 <= parsed <= MAX_ID and str(parsed) == text.strip().lstrip("0"))


@given(st.text(max_size=30))
def test_any_flow_is_an_id_in_range_a_key_or_a_400(text: str) -> None:
    parsed = _parsed_or_400(parse_flow, text)
    if parsed is not None and parsed.isdigit():
        assert parsed.isascii() and 1 <= int(parsed) <= MAX_ID


@given(
    st.datetimes(),
    st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m))),
)
@example(datetime(9999, 12, 31, 23, 59), timezone(timedelta(hours=-23, minutes=-59)))
@example(datetime(1, 1, 1), timezone(timedelta(hours=23, minutes=59)))
def test_any_aware_time_converts_to_utc_or_is_a_400(moment: datetime, zone: timezone) -> None:
    parsed = _parsed_or_400(parse_since, moment.replace(tzinfo=zone))
    assert parsed is None or parsed.tzinfo == UTC
