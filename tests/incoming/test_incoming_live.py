"""The seed's client samples, end to end against a real `ihub serve`: PyJWT + requests, and
jsonwebtoken + axios under Node. Only the host differs from what the seed's samples send."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from incoming_support import SEED_TICKET, template_definition
from pytest_httpserver import HTTPServer

pytestmark = pytest.mark.slow

JIRA_USER, JIRA_TOKEN = "bot@example.com", "jira-api-token"


def api_token(hub: Any) -> dict[str, str]:
    nonce = str(uuid.uuid1())
    digest = hashlib.sha256((hub.secret + nonce).encode()).hexdigest()
    response = requests.post(f"{hub.url}/api/v1/token", json={"userId": hub.user_id, "nonce": nonce, "hash": digest})
    assert response.status_code == 200, response.text
    return {"Authorization": response.json()["tokens"][0]["token"]}


def flow_with_trigger(hub: Any, jira_url: str, tmp_path: Path) -> dict[str, Any]:
    """Template, project, Jira connection and a generated key, through the API as an operator does it."""
    auth = api_token(hub)
    body = {"name": "ServiceNow to Jira", "description": "seed", "definition": template_definition()}
    response = requests.post(f"{hub.url}/api/v1/template/org/1", json=body, headers=auth)
    assert response.status_code == 200, response.text
    body = {"name": "Best Project Ever", "description": "", "templateId": response.json()["templates"][0]["id"]}
    response = requests.post(f"{hub.url}/api/v1/project/org/1", json=body, headers=auth)
    assert response.status_code == 200, response.text
    project = response.json()["projects"][0]
    connection = {"id": "jira", "type": "jira", "siteUrl": jira_url, "email": JIRA_USER, "apiToken": JIRA_TOKEN}
    response = requests.put(
        f"{hub.url}/api/v1/project/{project['id']}", json={"connections": [connection]}, headers=auth
    )
    assert response.status_code == 200, response.text
    flow_id = next(f["id"] for f in project["flows"] if f["key"] == "create-issue")
    response = requests.post(f"{hub.url}/api/v1/flow/{flow_id}/trigger/jwt", json={"generateKey": True}, headers=auth)
    assert response.status_code == 200, response.text
    trigger = response.json()["triggers"][0]
    # The seed keeps the key in privateKey.txt next to the test.
    (tmp_path / "privateKey.txt").write_text(trigger.pop("privateKey"))
    return {**trigger, "auth": auth}


def expect_jira(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/rest/api/3/issue", method="POST").respond_with_json(
        {"id": "10001", "key": "SUP-1", "self": httpserver.url_for("/rest/api/3/issue/10001")}, status=201
    )


def check_run_reached_jira(hub: Any, trigger: dict[str, Any], run_id: str, httpserver: HTTPServer) -> None:
    """When the flow engine and run API are present: the run succeeds and Jira got the mapped issue."""
    response = requests.get(f"{hub.url}/api/v1/run/{run_id}", headers=trigger["auth"])
    if response.status_code == 404 and response.json()["metadata"]["message"].startswith("no route"):
        pytest.skip("run API (flow engine issue) not merged yet: the webhook part passed")
    deadline = time.monotonic() + 20
    status = None
    while time.monotonic() < deadline:
        run = requests.get(f"{hub.url}/api/v1/run/{run_id}", headers=trigger["auth"]).json()
        status = (run.get("runs") or [run.get("run") or run])[0].get("status")
        if status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.2)
    assert status == "succeeded", run
    [(request, _)] = [entry for entry in httpserver.log if entry[0].path == "/rest/api/3/issue"]
    fields = request.get_json()["fields"]
    assert fields["summary"] == "Ticket from test case" and fields["description"] == "HEJ"
    assert fields["labels"] == ["SERVICENOW-1"]
    basic = base64.b64encode(f"{JIRA_USER}:{JIRA_TOKEN}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {basic}"


def test_seed_python_sample(live_hub: Any, httpserver: HTTPServer, tmp_path: Path) -> None:
    expect_jira(httpserver)
    trigger = flow_with_trigger(live_hub, httpserver.url_for("").rstrip("/"), tmp_path)
    assert trigger["aud"] == f"{live_hub.url}/prod/incoming/token"

    # As the seed's Python sample: PyJWT, RS256, typ JWT, iat now, exp now + 1200, no kid, no jti.
    headers = {"alg": "RS256", "typ": "JWT"}
    now = int(time.time())
    payload = {"iss": trigger["iss"], "sub": trigger["sub"], "aud": trigger["aud"], "iat": now, "exp": now + 1200}
    private_key = (tmp_path / "privateKey.txt").read_text()
    assertion = jwt.encode(payload, private_key, algorithm="RS256", headers=headers)
    response = requests.post(
        payload["aud"],
        json={"grant_type": "urn:ihub:jwt:bearer", "assertion": assertion},
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    access_token = response.json().get("access_token")
    assert access_token and response.json()["token_type"] == "Bearer"

    response = requests.post(
        f"{live_hub.url}/prod/incoming/webhook/jwt",
        json=SEED_TICKET,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {access_token}"},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued" and body["flowId"] == trigger["sub"]
    check_run_reached_jira(live_hub, trigger, body["runId"], httpserver)


NODE_SAMPLE = r"""
// The seed's JavaScript sample without mocha: jsonwebtoken signs, axios posts.
const jwt = require('jsonwebtoken');
const axios = require('axios');
const fs = require('fs');
const path = require('path');

(async () => {
  const headers = { alg: 'RS256', typ: 'JWT' };
  const currentTime = Math.floor(Date.now() / 1000);
  const payload = {
    iss: process.env.TRIGGER_ISS,
    sub: process.env.TRIGGER_SUB,
    aud: process.env.TRIGGER_AUD,
    iat: currentTime,
    exp: currentTime + 1200,
  };
  const privateKey = fs.readFileSync(path.join(process.env.KEY_DIR, 'privateKey.txt'), 'utf8');
  const token = jwt.sign(payload, privateKey, { algorithm: 'RS256', header: headers });
  const out = {};
  try {
    const response = await axios.post(payload.aud, { grant_type: 'urn:ihub:jwt:bearer', assertion: token },
      { headers: { 'Content-Type': 'application/json' } });
    out.token = response.data;
    const hook = await axios.post(process.env.WEBHOOK_URL,
      { issueKey: 'SERVICENOW-1', description: 'HEJ', summary: 'Ticket from test case' },
      { headers: { 'Content-Type': 'application/json', 'Authorization': 'Bearer ' + response.data.access_token } });
    out.webhook = { status: hook.status, data: hook.data };
  } catch (error) {
    out.error = error.response ? { status: error.response.status, data: error.response.data } : String(error);
  }
  console.log(JSON.stringify(out));
})();
"""


@pytest.fixture(scope="session")
def node_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("node/npm are not installed here: the JavaScript sample cannot run")
    where = tmp_path_factory.mktemp("node-sample")
    (where / "package.json").write_text(json.dumps({"name": "ihub-seed-sample", "private": True}))
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "jsonwebtoken@9", "axios@1"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"npm install failed:\n{result.stderr}"
    return where


def test_seed_javascript_sample(live_hub: Any, httpserver: HTTPServer, tmp_path: Path, node_modules: Path) -> None:
    expect_jira(httpserver)
    trigger = flow_with_trigger(live_hub, httpserver.url_for("").rstrip("/"), tmp_path)
    script = node_modules / "sample.js"
    script.write_text(NODE_SAMPLE)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "TRIGGER_ISS": trigger["iss"],
        "TRIGGER_SUB": trigger["sub"],
        "TRIGGER_AUD": trigger["aud"],
        "WEBHOOK_URL": trigger["webhookUrl"],
        "KEY_DIR": str(tmp_path),
    }
    result = subprocess.run(
        ["node", str(script)], cwd=node_modules, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert "error" not in out, out
    assert out["token"]["token_type"] == "Bearer" and out["token"]["expires_in"] == 3599
    assert out["webhook"]["status"] == 202 and out["webhook"]["data"]["status"] == "queued"
    check_run_reached_jira(live_hub, trigger, out["webhook"]["data"]["runId"], httpserver)
