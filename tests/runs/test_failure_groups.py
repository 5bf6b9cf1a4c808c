"""Failure groups (ihub.runs.failures): runs that failed the same way share a group key, and each failure is
counted in its organization's row of the group in the transaction that failed the run."""

from __future__ import annotations

import pytest
from flowkit import jira_definition
from sqlalchemy import select

from ihub.runs.failures import signature, step_of
from ihub.runs.models import FailureGroup, Run

pytestmark = pytest.mark.anyio

# Fails inside a loop with a message that names the record: every record's failure is one failure.
LOOP = {
    "key": "sync",
    "trigger": "manual",
    "steps": [
        {
            "id": "each",
            "type": "foreach",
            "items": "{{ trigger.body.ids }}",
            "steps": [{"id": "create", "type": "fail", "message": "record {{ item }} rejected: HTTP 422"}],
        }
    ],
}
OTHER = {"key": "other", "trigger": "manual", "steps": [{"id": "stop", "type": "fail", "message": "quota exceeded"}]}


def test_signature_replaces_what_varies_and_keeps_what_tells_failures_apart() -> None:
    first = signature("step each[0].create: record 7731 of 'Acme Corp' rejected by https://x.test/a?id=5: HTTP 422")
    second = signature('step each[3].create: record 12 of "Globex" rejected by https://x.test/a?id=9: HTTP 422')
    assert first == second
    assert "HTTP 422" in first and "7731" not in first and "Acme" not in first
    assert signature("HTTP 401 unauthorized") != signature("HTTP 403 forbidden")
    assert signature("token 3f2a9c0d1e2b3a4f5e6d7c8b9a0f1e2d expired") == signature("token ffffffffffffffff expired")
    assert signature("OAuth2 refresh refused") == "OAuth2 refresh refused"
    assert step_of("each[2].inner[10].create") == "each[].inner[].create"


async def test_runs_failing_the_same_way_share_a_group_counted_per_organization(kit) -> None:
    project = await kit.project(jira_definition([LOOP, OTHER], slot_type="http"))
    sync, other = kit.flow_id(project, "sync"), kit.flow_id(project, "other")
    failed = [await kit.trigger(sync, {"ids": [n, n + 1]}) for n in (1, 50, 900)]
    different = await kit.trigger(other, {})
    succeeded = await kit.trigger(sync, {"ids": []})
    for run_id in [*failed, different, succeeded]:
        await kit.wait(run_id)

    async with kit.app.state.context.sessions() as session:
        runs = {str(r.id): r for r in (await session.scalars(select(Run))).all()}
        groups = (await session.scalars(select(FailureGroup))).all()
    keys = {runs[run_id].failure_key for run_id in failed}
    assert len(keys) == 1 and None not in keys
    assert {runs[run_id].failed_step for run_id in failed} == {"each[].create"}
    assert runs[different].failure_key not in keys and runs[different].failed_step == "stop"
    assert runs[succeeded].status == "succeeded" and runs[succeeded].failure_key is None

    by_key = {group.failure_key: group for group in groups}
    assert set(by_key) == {*keys, runs[different].failure_key}
    group = by_key[keys.pop()]
    assert group.count == 3
    assert group.org_id == 1  # the root organization, where kit.project made the project
    assert group.flow_key == "sync" and group.step == "each[].create"
    assert "record" in group.signature and "900" not in group.signature
    assert group.sample_error in {runs[run_id].error for run_id in failed}  # the latest one, as the run shows it
    assert group.first_seen <= group.last_seen
    assert by_key[runs[different].failure_key].count == 1
