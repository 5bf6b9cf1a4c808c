"""`ihub template import` as an operator runs it: a subprocess against the database URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ihub.db.engine import sync_url

YAML_TEMPLATE = """\
name: ServiceNow to Jira
description: Incidents become Jira issues
definition:
  connections:
    - id: jira
      type: jira
      name: Jira Cloud
  flows:
    - key: create-issue
      name: Create issue
      trigger: jwt
      steps:
        - id: create
          type: http
          connection: jira
          method: POST
          path: /rest/api/3/issue
          json:
            fields:
              summary: "{{ trigger.body.summary }}"
"""


@pytest.fixture
def database(db_url: str) -> str:
    """The test database (tables made by the shared fixture) with the root organization in it."""
    engine = create_engine(sync_url(db_url))
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO organizations (id, name, parent_id, path, created_at) VALUES (1, 'Root', NULL, '/1/', :t)"
            ),
            {"t": "2026-01-01 00:00:00"},
        )
    engine.dispose()
    return db_url


def ihub(database: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "IHUB_DATABASE_URL": database,
        "IHUB_DATA_DIR": str(tmp_path / "data"),
        "IHUB_SECRET_KEY": "cli-test-key-" + "y" * 32,
    }
    return subprocess.run(
        [sys.executable, "-m", "ihub", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def templates_in(database: str) -> list[tuple]:
    engine = create_engine(sync_url(database))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT org_id, name, description, version, definition FROM templates")).all()
    engine.dispose()
    return [tuple(row) for row in rows]


def test_import_yaml_then_update_by_name(database, tmp_path):
    source = tmp_path / "template.yaml"
    source.write_text(YAML_TEMPLATE)
    result = ihub(database, tmp_path, "template", "import", str(source), "--org", "1", "--json")
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["created"] is True
    assert (output["orgId"], output["name"], output["version"]) == ("1", "ServiceNow to Jira", 1)
    assert (output["connections"], output["flows"]) == (["jira"], ["create-issue"])

    # The same name again updates that template (a new version) instead of making another.
    source.write_text(
        YAML_TEMPLATE.replace("Incidents become Jira issues", "v2").replace("key: create-issue", "key: k2")
    )
    result = ihub(database, tmp_path, "template", "import", str(source), "--org", "1", "--json")
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert (output["created"], output["version"], output["flows"]) == (False, 2, ["k2"])

    rows = templates_in(database)
    assert len(rows) == 1
    org_id, name, description, version, definition = rows[0]
    definition = json.loads(definition) if isinstance(definition, str) else definition
    assert (org_id, name, description, version) == (1, "ServiceNow to Jira", "v2", 2)
    # Stored normalized: the trigger shorthand became an object.
    assert definition["flows"][0]["trigger"] == {"type": "jwt"}


def test_import_json_file_and_human_output(database, tmp_path):
    source = tmp_path / "template.json"
    source.write_text(json.dumps({"name": "plain", "definition": {"connections": [{"id": "api", "type": "http"}]}}))
    result = ihub(database, tmp_path, "template", "import", str(source), "--org", "1")
    assert result.returncode == 0, result.stderr
    assert "created" in result.stderr and "plain" in result.stderr
    assert [row[1] for row in templates_in(database)] == ["plain"]


@pytest.mark.parametrize(
    "content,expected",
    [
        ("name: x\ndefinition:\n  connections:\n    - {id: a, type: foo}\n", "definition.connections[0].type"),
        ("name: x\n", "definition: required"),
        ("- just\n- a list\n", "expected a mapping"),
        ("name: [unclosed\n", "cannot read"),
    ],
)
def test_import_refuses_bad_files(database, tmp_path, content, expected):
    source = tmp_path / "bad.yaml"
    source.write_text(content)
    result = ihub(database, tmp_path, "template", "import", str(source), "--org", "1", "--json")
    assert result.returncode == 1
    assert expected in json.loads(result.stdout)["error"]
    assert templates_in(database) == []


def test_import_into_unknown_org(database, tmp_path):
    source = tmp_path / "template.yaml"
    source.write_text(YAML_TEMPLATE)
    result = ihub(database, tmp_path, "template", "import", str(source), "--org", "42", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout) == {"error": "organization 42 not found"}


def test_versions_and_project_upgrade_from_the_shell(database, tmp_path):
    source = tmp_path / "template.yaml"
    source.write_text(YAML_TEMPLATE)
    template_id = json.loads(
        ihub(database, tmp_path, "template", "import", str(source), "--org", "1", "--json").stdout
    )["id"]
    engine = create_engine(sync_url(database))
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO projects (id, org_id, template_id, template_version, name, description, settings, "
                "updated_at, created_at) VALUES (1, 1, :t, 1, 'p', '', '{}', :now, :now)"
            ),
            {"t": int(template_id), "now": "2026-01-01 00:00:00+00:00"},
        )
    engine.dispose()
    source.write_text(YAML_TEMPLATE.replace("key: create-issue", "key: k2"))
    assert ihub(database, tmp_path, "template", "import", str(source), "--org", "1").returncode == 0

    result = ihub(database, tmp_path, "template", "versions", template_id, "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert [(v["version"], v["flows"], v["createdBy"]) for v in listing["versions"]] == [
        (1, ["create-issue"], None),
        (2, ["k2"], None),
    ]
    result = ihub(database, tmp_path, "template", "version", template_id, "1", "--json")
    assert result.returncode == 0, result.stderr
    assert [f["key"] for f in json.loads(result.stdout)["definition"]["flows"]] == ["create-issue"]
    human = ihub(database, tmp_path, "template", "versions", template_id)
    assert human.returncode == 0 and "k2" in human.stdout

    result = ihub(database, tmp_path, "project", "upgrade", "1", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) | {"id": "1"} == {
        "id": "1",
        "templateId": template_id,
        "previousVersion": 1,
        "templateVersion": 2,
        "flows": ["k2"],
    }
    result = ihub(database, tmp_path, "project", "upgrade", "1", "--version", "1", "--json")
    assert (json.loads(result.stdout)["templateVersion"], json.loads(result.stdout)["flows"]) == (1, ["create-issue"])
    for args in (["project", "upgrade", "1", "--version", "9"], ["template", "version", template_id, "9"]):
        result = ihub(database, tmp_path, *args, "--json")
        assert result.returncode == 1 and "has no version 9" in json.loads(result.stdout)["error"], result.stdout
