"""Every /api/v1 error is `{"metadata": {status, code, message}}`, and nothing answers 500 with internals."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi import APIRouter

from ihub.app import create_app

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024


def assert_envelope(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"metadata"}, body
    metadata = body["metadata"]
    assert {"status", "code", "message"} <= set(metadata)
    assert metadata["status"] == status
    assert isinstance(metadata["message"], str) and metadata["message"]
    if code is not None:
        assert metadata["code"] == code, metadata
    return metadata


async def test_unknown_route_is_404(client, auth):
    for path in ("/api/v1/nothing-here", "/api/v1/org/1/nothing", "/api/v2/org", "/nowhere"):
        for headers in (auth, {}):
            assert_envelope(await client.get(path, headers=headers), 404, "not_found")


async def test_wrong_method_is_405(client, auth):
    for method, path in (("PATCH", "/api/v1/org"), ("GET", "/api/v1/token"), ("PATCH", "/api/v1/user/1")):
        response = await client.request(method, path, headers=auth)
        metadata = assert_envelope(response, 405, "method_not_allowed")
        assert method in metadata["message"]
        assert response.headers["allow"]


async def test_unsupported_content_type_is_415(client, auth):
    for content_type in ("text/plain", "application/xml", "image/png", "application/octet-stream"):
        for path in ("/api/v1/org", "/api/v1/token", "/api/v1/user/org/1"):
            headers = {**auth, "Content-Type": content_type}
            response = await client.post(path, content=b'{"name": "x"}', headers=headers)
            metadata = assert_envelope(response, 415, "unsupported_media_type")
            assert content_type in metadata["message"]


INVALID_JSON = [
    b'{"name": ',
    b"{'name': 'single quotes'}",
    b"\xff\xfe\x00garbage",
    b"[" * 100_000,
    b'{"a":' * 50_000,
    b"1" * 5000,
]


async def test_invalid_json_is_400(client, auth):
    for raw in INVALID_JSON:
        for path in ("/api/v1/org", "/api/v1/user/org/1"):
            response = await client.post(path, content=raw, headers={**auth, "Content-Type": "application/json"})
            assert_envelope(response, 400, "invalid_json")


async def test_json_errors_speak_to_the_client_not_of_python(client, auth):
    huge = b'{"name": ' + b"9" * 5000 + b"}"
    response = await client.post("/api/v1/org", content=huge, headers={**auth, "Content-Type": "application/json"})
    metadata = assert_envelope(response, 400, "invalid_json")
    assert "a number has more than 4300 digits" in metadata["message"]
    assert "sys." not in response.text
    # A path id is quoted back cut short, not a 5,000-digit echo.
    response = await client.get("/api/v1/org/" + "9" * 5000, headers=auth)
    metadata = assert_envelope(response, 404, "not_found")
    assert len(metadata["message"]) < 100, metadata["message"]


async def test_validation_names_each_field(client, auth):
    response = await client.post("/api/v1/user/org/1", json=[{"name": "", "email": "nope", "role": "x"}], headers=auth)
    metadata = assert_envelope(response, 400, "validation_error")
    assert {error["field"] for error in metadata["errors"]} == {"users[0].name", "users[0].email", "users[0].role"}
    for error in metadata["errors"]:
        assert error["field"] in metadata["message"] and error["message"]


async def test_query_and_path_validation_is_400_in_the_envelope(client, auth):
    response = await client.delete("/api/v1/org/5?cascade=perhaps", headers=auth)
    metadata = assert_envelope(response, 400, "validation_error")
    assert [error["field"] for error in metadata["errors"]] == ["cascade"]


async def test_body_over_the_cap_with_content_length(client, auth):
    body = json.dumps({"name": "x" * MIB}).encode()
    response = await client.post("/api/v1/org", content=body, headers={**auth, "Content-Type": "application/json"})
    assert_envelope(response, 413, "payload_too_large")


async def test_body_over_the_cap_without_content_length(client, auth):
    async def chunks():
        yield b'{"name": "'
        for _ in range(20):
            yield b"x" * 64 * 1024
        yield b'"}'

    request = client.build_request("POST", "/api/v1/org", content=chunks(), headers=auth)
    assert "content-length" not in request.headers and request.headers["transfer-encoding"] == "chunked"
    response = await client.send(request)
    assert_envelope(response, 413, "payload_too_large")


async def test_body_just_under_the_cap_is_read(client, auth):
    body = json.dumps({"name": "x" * 300, "padding": "y" * (MIB - 400)}).encode()
    assert len(body) <= MIB
    response = await client.post("/api/v1/org", content=body, headers={**auth, "Content-Type": "application/json"})
    assert_envelope(response, 400, "validation_error")  # the name is too long, so the body was read


async def test_lying_content_length_cannot_bypass_the_cap(client, auth):
    async def chunks():
        for _ in range(20):
            yield b"x" * 64 * 1024

    request = client.build_request("POST", "/api/v1/org", content=chunks(), headers={**auth, "Content-Length": "10"})
    response = await client.send(request)
    assert_envelope(response, 413, "payload_too_large")


async def test_conflict_is_409(client, auth):
    assert (await client.post("/api/v1/org", json={"name": "twin"}, headers=auth)).status_code == 200
    assert_envelope(await client.post("/api/v1/org", json={"name": "twin"}, headers=auth), 409, "conflict")


async def test_unauthorized_is_401(client):
    assert_envelope(await client.get("/api/v1/org"), 401, "unauthorized")
    assert_envelope(await client.get("/api/v1/org", headers={"Authorization": "nope"}), 401, "invalid_token")


async def test_malformed_multipart_is_400(client, auth):
    response = await client.post(
        "/api/v1/org",
        content=b"--b\r\nContent-Disposition: form-data\r\n\r\nbroken",
        headers={**auth, "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 400, response.text
    assert_envelope(response, 400)


async def test_multipart_form_is_accepted(client, auth):
    response = await client.post("/api/v1/org", files={"name": (None, "from-multipart")}, headers=auth)
    assert response.status_code == 200, response.text


ODD_BODIES = [None, [], {}, "text", 0, -1, 1e308, True, [None], [{}], {"name": None}, {"name": {"nested": [1]}}]


BODY_ROUTES = [
    ("POST", "/api/v1/token"),
    ("POST", "/api/v1/org"),
    ("PUT", "/api/v1/org/1"),
    ("POST", "/api/v1/user/org/1"),
    ("PUT", "/api/v1/user/1"),
]
ODD_FORMS = [b"", b"=", b"&&&", b"name", b"name=%ZZ", b"name=%00", b"name=a&name=b", b"parentId=1e9&name=x"]


async def test_odd_bodies_never_cause_500(client, auth):
    for method, path in BODY_ROUTES:
        for body in ODD_BODIES:
            headers = {**auth, "Content-Type": "application/json"}
            response = await client.request(method, path, content=json.dumps(body), headers=headers)
            assert response.status_code < 500, (method, path, body, response.text)
            if response.status_code >= 400:
                assert_envelope(response, response.status_code)
        for raw in ODD_FORMS:
            headers = {**auth, "Content-Type": "application/x-www-form-urlencoded"}
            response = await client.request(method, path, content=raw, headers=headers)
            assert response.status_code < 500, (method, path, raw, response.text)
            if response.status_code >= 400:
                assert_envelope(response, response.status_code)


async def test_internal_error_is_a_500_envelope_without_internals(settings):
    app = create_app(settings)
    boom = APIRouter()

    @boom.get("/api/v1/test-only/boom")
    async def explode() -> None:
        raise RuntimeError("internal detail: connection string postgres://secret@db")

    app.include_router(boom)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.get("/api/v1/test-only/boom")
    metadata = assert_envelope(response, 500, "internal_error")
    assert "Traceback" not in response.text
    assert "secret" not in response.text and "RuntimeError" not in response.text
    assert metadata["message"] == "internal error; the server log has the details"


async def test_deeply_nested_json_is_a_client_error(client, auth):
    for depth in (900, 5000):
        for path in ("/api/v1/org", "/api/v1/user/org/1", "/api/v1/token"):
            for raw in (b"[" * depth + b"]" * depth, b'{"name":' * depth + b"1" + b"}" * depth):
                headers = {**auth, "Content-Type": "application/json"}
                response = await client.post(path, content=raw, headers=headers)
                assert 400 <= response.status_code < 500, (depth, path, response.text[:300])
                assert_envelope(response, response.status_code)


async def test_recursion_anywhere_in_a_request_is_a_400(settings):
    """A parser deeper in some domain (JSON text in a form field, say) hitting the recursion limit."""
    app = create_app(settings)
    deep = APIRouter()

    @deep.post("/api/v1/test-only/deep")
    async def parse_deep() -> None:
        json.loads("[" * 100_000)

    @deep.post("/incoming/test-only/deep")
    async def parse_deep_oauth() -> None:
        json.loads("[" * 100_000)

    app.include_router(deep)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        api = await http.post("/api/v1/test-only/deep")
        oauth = await http.post("/incoming/test-only/deep")
    assert_envelope(api, 400, "invalid_request")
    assert oauth.status_code == 400
    assert oauth.json()["error"] == "invalid_request" and oauth.headers["cache-control"] == "no-store"
