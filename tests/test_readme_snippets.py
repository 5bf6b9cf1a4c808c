"""The README's API snippets run as written against a real `ihub serve`, and fail with the server's message.

Only the hub URL, user id and secret are replaced (by exact text, so a README that changes them fails here
rather than going untested); the Python snippets run in a process of their own with this interpreter, the
curl snippets under bash."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

LiveHub = Any  # the root conftest's live hub (url, user_id, secret); not imported: tests/*/conftest.py shadow the name

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"
PYTHON_CREDENTIALS = '"http://127.0.0.1:8080/api/v1/", "1", "<secret printed at first start>"'
SHELL_CREDENTIALS = "hub=http://127.0.0.1:8080/api/v1 user_id=1 secret='<secret printed at first start>'"
WRONG_SECRET = "not-the-secret-" + "z" * 20


def snippets(language: str) -> list[str]:
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", README.read_text(), flags=re.MULTILINE | re.DOTALL)
    return [code for lang, code in blocks if lang == language]


def api_snippets(language: str) -> list[str]:
    """The snippets that talk to the API (the python ones; the sh ones that call curl)."""
    found = [code for code in snippets(language) if language == "python" or "curl " in code]
    assert found, f"README.md has no {language} API snippet"
    return found


def python_snippet(code: str, hub: LiveHub, secret: str) -> str:
    assert PYTHON_CREDENTIALS in code, "the snippet's credentials line changed; update this test"
    return code.replace(PYTHON_CREDENTIALS, f'"{hub.url}/api/v1/", "{hub.user_id}", "{secret}"')


def shell_snippet(code: str, hub: LiveHub, secret: str, token: str) -> str:
    assert SHELL_CREDENTIALS in code, "the snippet's credentials line changed; update this test"
    code = code.replace(SHELL_CREDENTIALS, f"hub={hub.url}/api/v1 user_id={hub.user_id} secret='{secret}'")
    # The second call takes the token the reader copies from the first answer.
    return code.replace("<token>", token)


def login(hub: LiveHub, secret: str) -> httpx.Response:
    nonce = uuid.uuid4().hex
    digest = hashlib.sha256((secret + nonce).encode()).hexdigest()
    return httpx.post(f"{hub.url}/api/v1/token", json={"userId": hub.user_id, "nonce": nonce, "hash": digest})


def server_message(hub: LiveHub) -> str:
    """What the hub says to a wrong secret, asked directly."""
    response = login(hub, WRONG_SECRET)
    assert response.status_code == 401, response.text
    message = response.json()["metadata"]["message"]
    assert message
    return str(message)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def run_shell(code: str) -> subprocess.CompletedProcess[str]:
    # -e: a failing curl stops the snippet, as the reader would stop at its error.
    return subprocess.run(["bash", "-e", "-c", code], capture_output=True, text=True, timeout=60)


def test_python_snippets_run_as_written(live_hub: LiveHub) -> None:
    for code in api_snippets("python"):
        result = run_python(python_snippet(code, live_hub, live_hub.secret))
        assert result.returncode == 0, result.stderr
        assert "'id': '1'" in result.stdout, result.stdout  # the root organization


def test_python_snippets_raise_the_servers_message(live_hub: LiveHub) -> None:
    message = server_message(live_hub)
    for code in api_snippets("python"):
        result = run_python(python_snippet(code, live_hub, WRONG_SECRET))
        assert result.returncode != 0
        error = result.stderr.strip().splitlines()[-1]
        assert error.startswith("RuntimeError:") and message in error and "401" in error, result.stderr
        assert "KeyError" not in result.stderr


needs_shell_tools = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("bash", "curl", "openssl")), reason="needs bash, curl and openssl"
)


@needs_shell_tools
def test_curl_snippets_run_as_written(live_hub: LiveHub) -> None:
    token = login(live_hub, live_hub.secret).json()["tokens"][0]["token"]
    for code in api_snippets("sh"):
        result = run_shell(shell_snippet(code, live_hub, live_hub.secret, token))
        assert result.returncode == 0, result.stdout + result.stderr
        assert '"tokens"' in result.stdout and '"organizations"' in result.stdout, result.stdout


@needs_shell_tools
def test_curl_snippets_fail_with_the_servers_message(live_hub: LiveHub) -> None:
    message = server_message(live_hub)
    for code in api_snippets("sh"):
        result = run_shell(shell_snippet(code, live_hub, WRONG_SECRET, "no-token"))
        assert result.returncode == 22, result.stdout + result.stderr  # curl's "HTTP error" exit
        assert message in result.stdout, result.stdout
