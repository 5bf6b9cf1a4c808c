"""The shipped example, examples/servicenow-to-jira.yaml, against a Jira stand-in (the README walkthrough)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml
from flowkit import jira_connection
from pytest_httpserver import HTTPServer

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parents[2] / "examples/servicenow-to-jira.yaml"


async def test_example_creates_issue_and_escalates_urgent_incidents(kit, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/rest/api/2/issue", method="POST").respond_with_json(
        {"id": "1", "key": "SUP-7", "self": "https://jira/rest/api/2/issue/1"}, status=201
    )
    httpserver.expect_request("/rest/api/2/issue/SUP-7/comment", method="POST").respond_with_json({}, status=201)
    data = yaml.safe_load(EXAMPLE.read_text())
    project = await kit.project(
        data["definition"],
        [jira_connection(httpserver.url_for("/").rstrip("/"), email="sn@acme.test", token="tok")],
        settings={"jiraProject": "SUP"},
    )
    flow_id = kit.flow_id(project, "incident-to-issue")
    incident = {"issueKey": "INC0010042", "summary": "VPN down", "description": "All users", "priority": "1"}
    run = await kit.wait(await kit.trigger(flow_id, incident))

    assert run["status"] == "succeeded", run
    assert run["result"] == {
        "status": 201,
        "body": {"jiraKey": "SUP-7", "jiraUrl": "https://jira/rest/api/2/issue/1", "incident": "INC0010042"},
    }
    create, _ = httpserver.log[0]
    assert create.get_json()["fields"] == {
        "project": {"key": "SUP"},
        "issuetype": {"name": "Task"},
        "summary": "[INC0010042] VPN down",
        "description": "All users",
        "labels": ["servicenow", "inc0010042"],
    }
    assert create.headers["Authorization"] == "Basic " + base64.b64encode(b"sn@acme.test:tok").decode()
    comment, _ = httpserver.log[1]
    assert comment.get_json() == {"body": "Urgent incident INC0010042: please pick this up now."}

    run = await kit.wait(await kit.trigger(flow_id, {**incident, "priority": "4"}))
    assert run["status"] == "succeeded"
    assert len(httpserver.log) == 3  # no comment for a low-priority incident
