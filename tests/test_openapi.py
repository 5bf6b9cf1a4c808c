"""/openapi.json documents every /api/v1 route with its body schema (JSON and form) and an example; /docs serves."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute

from ihub.app import ROUTERS, create_app
from ihub.config import Settings

pytestmark = pytest.mark.anyio

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The document does not depend on the database: one app, no lifespan, no backend parametrization."""
    settings = Settings(
        data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'unused.db'}", secret_key="o" * 48, _env_file=None
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
async def openapi(client) -> dict:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def all_routes() -> list[APIRoute]:
    """Every /api/v1 route of every router the app includes, found from the routers themselves rather
    than from the OpenAPI generator under test."""
    return [
        route
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute) and route.path.startswith("/api/v1/") and route.include_in_schema
    ]


def api_routes() -> list[tuple[str, str]]:  # noqa: ANN001
    return sorted((method, route.path) for route in all_routes() for method in route.methods)


def _reads_body(dependant) -> bool:  # noqa: ANN001
    """Whether a dependency of the route is the shared body reader (`json_or_form`)."""
    for dependency in dependant.dependencies:
        if getattr(dependency.call, "__module__", "") == "ihub.common.body" or _reads_body(dependency):
            return True
    return False


def body_routes() -> list[tuple[str, str]]:
    """Routes that take a body: documented as such, or reading one through `json_or_form`."""
    return sorted(
        (method, route.path)
        for route in all_routes()
        if (route.openapi_extra or {}).get("requestBody")
        or route.body_field is not None
        or _reads_body(route.dependant)
        for method in route.methods
    )


def resolve(openapi: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


async def test_every_api_route_is_documented(openapi):
    routes = api_routes()
    assert ("POST", "/api/v1/token") in routes and ("DELETE", "/api/v1/org/{org_id}") in routes
    for method, path in routes:
        assert method.lower() in openapi["paths"].get(path, {}), f"{method} {path} missing from /openapi.json"


async def test_bodies_have_json_and_form_schemas_and_examples(openapi):
    """Every endpoint accepts JSON and form-encoded bodies (issue 2), so both are documented, with examples."""
    problems, checked = [], 0
    for method, path in body_routes():
        checked += 1
        operation = openapi["paths"][path][method.lower()]
        content = operation.get("requestBody", {}).get("content", {})
        for media in ("application/json", FORM):
            if media not in content:
                problems.append(f"{method} {path}: no {media} body")
                continue
            if not isinstance(content[media].get("schema"), dict):
                problems.append(f"{method} {path}: no {media} schema")
            else:
                resolve(openapi, content[media]["schema"])  # every $ref must resolve
            if content[media].get("example") is None and not content[media].get("examples"):
                problems.append(f"{method} {path}: no {media} example")
    assert not problems, "\n".join(problems)
    assert checked >= 5


async def test_token_body_schema_names_the_fields(openapi):
    content = openapi["paths"]["/api/v1/token"]["post"]["requestBody"]["content"]
    schema = resolve(openapi, content["application/json"]["schema"])
    assert {"userId", "nonce", "hash"} <= set(schema["properties"])
    assert set(content["application/json"]["example"]) == {"userId", "nonce", "hash"}
    user_schema = resolve(
        openapi, openapi["paths"]["/api/v1/user/org/{org_id}"]["post"]["requestBody"]["content"][FORM]["schema"]
    )
    assert "anyOf" in user_schema  # an array of users or one user


async def test_errors_are_documented_as_envelopes_never_422(openapi):
    for method, path in api_routes():
        responses = openapi["paths"][path][method.lower()]["responses"]
        assert "422" not in responses, f"{method} {path} documents a 422 the API never sends"
        if path != "/api/v1/token":
            assert "401" in responses, f"{method} {path}"
    error = openapi["components"]["schemas"]["ErrorResponse"]
    assert error["properties"]["metadata"]
    assert "HTTPValidationError" not in openapi["components"]["schemas"]


async def test_protected_routes_declare_the_authorization_header(openapi):
    schemes = openapi["components"]["securitySchemes"]
    assert any(s.get("in") == "header" and s.get("name") == "Authorization" for s in schemes.values())
    for method, path in api_routes():
        operation = openapi["paths"][path][method.lower()]
        if path == "/api/v1/token":
            assert not operation.get("security")
        else:
            assert operation.get("security"), f"{method} {path} does not declare the Authorization header"


async def test_docs_page(client):
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text


DOC_PAGES = ("/docs", "/redoc")


def referenced_assets(html: str) -> list[str]:
    """Every script `src` and stylesheet/icon `href` of a page."""
    return re.findall(r'<script[^>]*\ssrc="([^"]+)"', html) + re.findall(r'<link[^>]*\shref="([^"]+)"', html)


@pytest.mark.parametrize("page", DOC_PAGES)
async def test_doc_pages_load_nothing_from_other_hosts(client, page):
    """Offline or behind a strict proxy a CDN script leaves the page blank: every asset comes from the hub."""
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text
    assets = referenced_assets(response.text)
    assert any(url.endswith(".js") for url in assets), assets
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", response.text), response.text
    for url in assets:
        assert url.startswith("/"), url
        answer = await client.get(url)
        assert answer.status_code == 200, url
        kind = answer.headers["content-type"]
        if url.endswith(".js"):
            assert "javascript" in kind, (url, kind)
        elif url.endswith(".css"):
            assert kind.startswith("text/css"), (url, kind)
        else:
            assert kind.startswith("image/"), (url, kind)
        assert len(answer.content) > 1000, url


async def test_swagger_ui_page_has_its_stylesheet(client):
    assets = referenced_assets((await client.get("/docs")).text)
    assert any(url.endswith(".css") for url in assets), assets


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_root_sends_people_to_the_console(client, method):
    response = await client.request(method, "/")
    assert response.status_code in (302, 307)
    assert response.headers["location"] == "/console/"


async def test_root_and_docs_pages_are_not_in_the_schema(openapi):
    assert not {"/", "/docs", "/redoc"} & set(openapi["paths"])
    assert not any(path.startswith("/docs-assets") for path in openapi["paths"])
