"""The seed's Python sample clients, re-written here, against a real `ihub serve` with `requests`."""

from __future__ import annotations

import hashlib
import uuid

import pytest
import requests

pytestmark = pytest.mark.slow


def hash_secret(secret: str, nonce: str) -> str:
    return hashlib.sha256((secret + nonce).encode("utf-8")).hexdigest()


def check(response: requests.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def test_python3_sequence_json(live_hub, tmp_path):
    """token (JSON) → create an org under parent "1" → rename it → delete it."""
    api = live_hub.url + "/api/v1/"
    nonce = str(uuid.uuid1())
    credentials = {"userId": live_hub.user_id, "nonce": nonce, "hash": hash_secret(live_hub.secret, nonce)}
    token_body = check(
        requests.post(api + "token", headers={"Content-Type": "application/json"}, json=credentials, timeout=10)
    )
    token = token_body["tokens"][0]["token"]
    headers = {"Authorization": token}

    name = "neworg-" + str(uuid.uuid1())[:5]
    created = check(requests.post(api + "org", headers=headers, json={"name": name, "parentId": "1"}, timeout=10))
    new_org = created["organizations"][0]
    assert (new_org["name"], new_org["parentId"]) == (name, "1")

    new_name = "changed-" + str(uuid.uuid1())[:5]
    changed = check(requests.put(api + "org/" + new_org["id"], headers=headers, json={"name": new_name}, timeout=10))
    change_org = changed["organizations"][0]
    assert (change_org["id"], change_org["name"]) == (new_org["id"], new_name)

    deleted = check(requests.delete(api + "org/" + change_org["id"], headers=headers, timeout=10))
    assert deleted["organizations"][0]["id"] == new_org["id"]
    remaining = check(requests.get(api + "org", headers=headers, timeout=10))["organizations"]
    assert [org["id"] for org in remaining] == ["1"]

    # The same nonce a second time is refused, with a message a script can print.
    again = requests.post(api + "token", json=credentials, timeout=10)
    assert again.status_code == 401
    assert "nonce" in again.json()["metadata"]["message"]

    # The server's own log (access lines included) holds neither the secret, the hash nor the token.
    server_log = (tmp_path / "hub.log").read_text()
    assert "/api/v1/org" in server_log, "expected access log lines"
    for secret in (live_hub.secret, credentials["hash"], token):
        assert secret not in server_log


def test_older_python_sample_with_form_bodies(live_hub):
    """The older sample: form-encoded `data=` bodies, numeric parentId 1, listing orgs with their parentId."""
    url = live_hub.url + "/api/v1/"
    nonce = str(uuid.uuid1())
    credentials = {"userId": live_hub.user_id, "nonce": nonce, "hash": hash_secret(live_hub.secret, nonce)}
    token = dict(check(requests.post(url + "token", data=credentials, timeout=10)))["tokens"][0]["token"]

    orgs = dict(check(requests.get(url + "org", headers={"Authorization": token}, timeout=10)))["organizations"]
    rows = [f"{o['name']:>20}\t{o['id']:>20}\t{o['parentId']!s:>20}" for o in sorted(orgs, key=lambda k: k["id"])]
    assert len(rows) == 1 and rows[0].split() == ["Root", "1", "None"]

    response = requests.post(
        url + "org",
        headers={"Authorization": token},
        data={"name": "neworg-" + str(uuid.uuid1())[:5], "parentId": 1},
        timeout=10,
    )
    new_org = dict(check(response))["organizations"][0]
    assert new_org["parentId"] == "1"

    response = requests.put(
        url + "org/" + new_org["id"],
        headers={"Authorization": token},
        data={"name": "changed-" + str(uuid.uuid1())[:5]},
        timeout=10,
    )
    change_org = dict(check(response))["organizations"][0]
    assert change_org["id"] == new_org["id"] and change_org["name"].startswith("changed-")
    orgs.append(change_org)

    listed = check(requests.get(url + "org", headers={"Authorization": token}, timeout=10))["organizations"]
    assert {o["id"]: o["parentId"] for o in listed} == {"1": None, new_org["id"]: "1"}

    deleted = check(requests.delete(url + "org/" + change_org["id"], headers={"Authorization": token}, timeout=10))
    assert deleted["organizations"][0]["name"] == change_org["name"]


def test_errors_from_the_live_server(live_hub):
    """What a script sees from the real server (uvicorn in front): envelopes, also for the body cap."""
    url = live_hub.url + "/api/v1/"
    nonce = str(uuid.uuid1())
    credentials = {"userId": live_hub.user_id, "nonce": nonce, "hash": hash_secret(live_hub.secret, nonce)}
    token = check(requests.post(url + "token", json=credentials, timeout=10))["tokens"][0]["token"]
    headers = {"Authorization": "Bearer " + token}

    unknown = requests.get(url + "nothing", headers=headers, timeout=10)
    assert unknown.status_code == 404 and unknown.json()["metadata"]["status"] == 404
    too_big = requests.post(url + "org", headers=headers, json={"name": "x" * (1024 * 1024 + 1)}, timeout=30)
    assert too_big.status_code == 413 and too_big.json()["metadata"]["code"] == "payload_too_large"

    def chunks():
        for _ in range(20):
            yield b"x" * 65536

    streamed = requests.post(
        url + "org", headers={**headers, "Content-Type": "application/json"}, data=chunks(), timeout=30
    )
    assert streamed.status_code == 413, streamed.text
    bad_json = requests.post(url + "org", headers={**headers, "Content-Type": "application/json"}, data="{", timeout=10)
    assert bad_json.status_code == 400 and bad_json.json()["metadata"]["code"] == "invalid_json"
    # The server is still healthy afterwards.
    assert requests.get(live_hub.url + "/healthz", timeout=10).status_code == 200
