"""A real OAuth2 authorization server for the tests, on 127.0.0.1: Authlib's AuthorizationServer (Flask) with
the authorization-code grant, PKCE (RFC 7636, S256, required) and the refresh-token grant with rotation, served
by werkzeug in a thread. Its tokens are checked by the test's target (`valid_access`), and its counters say what
reached it (code exchanges, refreshes)."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import Flask, request
from werkzeug.serving import make_server

CLIENT_ID = "ihub-test-client"
CLIENT_SECRET = "client-secret-0123456789"


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uri: str

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_allowed_scope(self, scope: str) -> str:
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri == self.redirect_uri

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    code_challenge: str | None
    code_challenge_method: str | None

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass
class Token:
    client_id: str
    access_token: str
    refresh_token: str | None
    scope: str
    user: str
    issued_at: float
    expires_in: int
    revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_revoked(self) -> bool:
        return self.revoked

    def is_expired(self) -> bool:
        return False  # refresh tokens do not expire here; revocation is what tests use

    def get_user(self) -> str:
        return self.user

    def get_client(self) -> Client:
        raise NotImplementedError


@dataclass
class AuthServer:
    redirect_uri: str
    base_url: str = ""
    # What the next token response says in expires_in; what the person answers at the consent screen.
    expires_in: int = 3600
    consent: bool = True
    # Some providers (or app settings) issue no refresh token: the connection then expires with its access token.
    issue_refresh_tokens: bool = True
    codes: dict[str, Code] = field(default_factory=dict)
    tokens: list[Token] = field(default_factory=list)
    exchanges: int = 0
    refreshes: int = 0
    challenges: list[tuple[str | None, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def valid_access(self, access: str) -> bool:
        with self.lock:
            return any(
                t.access_token == access and not t.revoked and t.issued_at + t.expires_in > time.time()
                for t in self.tokens
            )

    def revoke_access(self) -> None:
        """The access tokens stop working (as when revoked early); the refresh tokens still do."""
        with self.lock:
            for token in self.tokens:
                token.expires_in = -1

    def revoke_grant(self) -> None:
        """The person revoked the app at the provider: nothing they issued works any more."""
        with self.lock:
            for token in self.tokens:
                token.revoked = True
                token.expires_in = -1

    def url(self, path: str) -> str:
        return self.base_url + path


def build_app(state: AuthServer) -> Flask:
    app = Flask("authserver")
    client = Client(CLIENT_ID, CLIENT_SECRET, state.redirect_uri)

    def query_client(client_id: str) -> Client | None:
        return client if client_id == CLIENT_ID else None

    def save_token(token: dict[str, Any], oauth_request: Any) -> None:
        user = oauth_request.user or "person"
        with state.lock:
            state.tokens.append(
                Token(
                    CLIENT_ID,
                    token["access_token"],
                    token.get("refresh_token"),
                    token.get("scope", ""),
                    str(user),
                    time.time(),
                    int(token["expires_in"]),
                )
            )

    class CodeGrant(grants.AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

        def save_authorization_code(self, code: str, oauth_request: Any) -> None:
            data = oauth_request.payload.data
            state.challenges.append((data.get("code_challenge"), data.get("code_challenge_method")))
            state.codes[code] = Code(
                code,
                oauth_request.client.get_client_id(),
                oauth_request.payload.redirect_uri,
                oauth_request.payload.scope or "",
                str(oauth_request.user),
                data.get("code_challenge"),
                data.get("code_challenge_method"),
            )

        def query_authorization_code(self, code: str, client: Client) -> Code | None:
            with state.lock:
                state.exchanges += 1
            found = state.codes.get(code)
            return found if found is not None and found.client_id == client.get_client_id() else None

        def delete_authorization_code(self, authorization_code: Code) -> None:
            state.codes.pop(authorization_code.code, None)

        def authenticate_user(self, authorization_code: Code) -> str:
            return authorization_code.user

    class RefreshGrant(grants.RefreshTokenGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
        INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: every refresh spends the old refresh token

        def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
            with state.lock:
                state.refreshes += 1
                return next((t for t in state.tokens if t.refresh_token == refresh_token and not t.revoked), None)

        def authenticate_user(self, credential: Token) -> str:
            return credential.user

        def revoke_old_credential(self, credential: Token) -> None:
            with state.lock:
                credential.revoked = True

    server = AuthorizationServer(app, query_client=query_client, save_token=save_token)
    server.register_token_generator(
        "default",
        BearerTokenGenerator(
            lambda **_: "at-" + secrets.token_urlsafe(24),
            lambda **_: "rt-" + secrets.token_urlsafe(24) if state.issue_refresh_tokens else None,
            lambda _client, _grant_type: state.expires_in,
        ),
    )
    server.register_grant(CodeGrant, [CodeChallenge(required=True)])
    server.register_grant(RefreshGrant)

    @app.route("/authorize", methods=["GET"])
    def authorize() -> Any:
        # The person is signed in at the provider and answers the consent screen with `state.consent`.
        return server.create_authorization_response(grant_user="person" if state.consent else None)

    @app.route("/token", methods=["POST"])
    def issue_token() -> Any:
        return server.create_token_response()

    return app


class Running:
    def __init__(self, state: AuthServer) -> None:
        self.server = make_server("127.0.0.1", 0, build_app(state), threaded=True)
        state.base_url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


__all__ = ["CLIENT_ID", "CLIENT_SECRET", "AuthServer", "Running", "request"]
