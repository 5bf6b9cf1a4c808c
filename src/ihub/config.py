"""Settings, read from `IHUB_*` environment variables (and `.env`), validated at start."""

from __future__ import annotations

import secrets
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ihub.egress.policy import EgressPolicy

SECRET_KEY_FILE = "secret.key"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IHUB_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("ihub-data"), description="Where the SQLite file and generated key live.")
    database_url: str = Field(default="", description="sqlite:///path or postgresql://...; empty = SQLite in data_dir.")
    public_url: str = Field(
        default="",
        description="Externally visible base URL (token audiences, sign-in links, trigger pages); empty = "
        "http://<host>:<port> (127.0.0.1 for a wildcard host). Set it behind a proxy or on https.",
    )
    secret_key: str = Field(default="", repr=False, description="Master key; generated into data_dir when unset.")
    host: str = "127.0.0.1"
    port: int = 8080

    api_token_ttl_seconds: int = Field(default=3600, ge=60, le=86400)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    body_read_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Whole request body must arrive within this (408 otherwise), before any database work.",
    )
    db_lock_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Longest wait for a database connection or lock; past it the request answers 503.",
    )
    token_failures_per_user_and_client: int = Field(
        default=10, ge=1, description="Failed /token attempts per (userId, address) pair per window."
    )
    token_failures_per_client: int = Field(
        default=30, ge=1, description="Failed /token attempts per address per window."
    )
    token_failures_per_user: int = Field(
        default=300,
        ge=1,
        description="Failed /token attempts per userId per window, from all addresses together; past it only "
        "addresses without a failure in the window may still try.",
    )
    token_failure_window_seconds: int = Field(default=300, ge=1)
    console_session_idle_minutes: int = Field(
        default=60,
        ge=1,
        le=24 * 60,
        description="A console session unused for this long ends (a browser left open on a shared desk).",
    )
    console_session_max_hours: int = Field(
        default=12,
        ge=1,
        le=24 * 30,
        description="A console session ends this long after sign-in however active it is (a stolen cookie stops "
        "working by the next working day).",
    )
    signin_link_ttl_hours: int = Field(
        default=24,
        ge=1,
        le=24 * 14,
        description="How long an invitation or password-reset link works (once) before it must be sent again.",
    )
    password_min_length: int = Field(
        default=10,
        ge=8,
        le=128,
        description="Fewest characters a console password may have. Console sign-in failures are limited with "
        "the IHUB_TOKEN_FAILURES_* settings, counted apart from /api/v1/token.",
    )
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list,
        description="Reverse proxies (CIDRs, comma-separated) whose X-Forwarded-For is believed; empty = none.",
    )

    oauth_state_ttl_minutes: int = Field(
        default=10, ge=1, le=60, description="How long a Connect's authorization link (its state) stays usable."
    )
    incoming_envs: list[str] = Field(default_factory=lambda: ["prod", "test"])
    incoming_token_ttl_seconds: int = Field(default=3599, ge=60, le=86400)
    incoming_max_assertion_bytes: int = 8 * 1024
    incoming_token_failures_per_client_and_address: int = Field(
        default=10, ge=1, description="Failed /incoming/token requests per (iss, address) pair per window."
    )
    incoming_token_failures_per_address: int = Field(
        default=30, ge=1, description="Failed /incoming/token requests per address per window."
    )
    incoming_token_failures_per_client: int = Field(
        default=300,
        ge=1,
        description="Failed /incoming/token requests per iss per window, from all addresses together; past it "
        "only addresses without a failure in the window may still try.",
    )
    trigger_key_max_age_days: int = Field(
        default=0,
        ge=0,
        le=3650,
        description="When > 0, every trigger key registered or generated from now on expires this many days after "
        "it was added (a requested expiresAt may be earlier, not later). 0: keys expire only when asked to. Keys "
        "added before it was set keep their expiry (none) until one is set on them.",
    )
    trigger_key_expiry_notice_days: int = Field(
        default=14,
        ge=0,
        le=365,
        description="`trigger.key_expiring` is emitted once per key when its expiry is this many days away or "
        "less (checked hourly). 0: never emitted.",
    )

    executor: str = Field(default="local", description="local | procrastinate")
    worker_concurrency: int = Field(default=8, ge=1, le=256)
    worker_niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="CPU niceness of the worker processes of `ihub serve`, so API requests win the CPU over flows.",
    )
    workers: int = Field(
        default=1,
        ge=0,
        le=64,
        description="Worker processes `ihub serve` supervises (local executor); 0 executes flows inside the API "
        "process (tests and debugging only: a busy flow then delays every API call).",
    )
    run_time_budget_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Seconds of computation one execution of a run may use (waits for HTTP answers and delays "
        "excluded) before the run fails.",
    )
    run_retention_days: int = Field(default=30, ge=1)
    audit_retention_days: int = Field(
        default=365,
        ge=1,
        description="Days an audit log entry is kept; older ones are purged with old runs (hourly) or by "
        "`ihub audit purge`.",
    )
    connection_max_wait_hours: float = Field(
        default=72.0,
        gt=0,
        description="Hours a run waits for a connection that needs a reconnect (waiting_for_connection) before "
        "it fails.",
    )
    redis_url: str = ""
    egress_allow: list[str] = Field(
        default_factory=list,
        description="CIDRs and host names outgoing calls may reach although the egress policy refuses them by "
        'default (loopback, private, link-local...), as JSON: \'["10.1.0.0/16", "api.internal", "*.corp.example"]\'.',
    )
    run_lease_seconds: float = Field(
        default=60.0,
        ge=1,
        description="How long a claimed run stays with its worker without a heartbeat (renewed every third); "
        "a crashed worker's runs are picked up by others after this long.",
    )
    poll_interval: float = Field(
        default=1.0,
        ge=0.05,
        description="How often workers look for due or orphaned runs, in seconds (a trigger wakes them at once).",
    )
    event_delivery: bool = Field(
        default=True,
        description="Whether this process sends event webhooks (the outbox is filled either way; any hub process "
        "with it on delivers, safely in parallel).",
    )
    event_poll_interval: float = Field(
        default=1.0,
        ge=0.05,
        le=60,
        description="How often the event deliverer looks for due deliveries, in seconds (a commit that emitted an "
        "event in the same process wakes it at once).",
    )
    event_retry_base_seconds: float = Field(
        default=5.0,
        ge=0.01,
        le=3600,
        description="Wait before the first retry of a failed event delivery; each further retry waits twice as "
        "long (capped at an hour, ±20% jitter) until the delivery is 24 h old.",
    )
    http_max_response_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="Largest answer an http step or token endpoint may send."
    )
    replay_max_rate: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Highest rate (replays started per second) a bulk replay may ask for: every replay calls the "
        "target systems again, and a batch must not flood them or the hub's executor.",
    )
    replay_max_runs: int = Field(
        default=100_000, ge=1, description="Most runs one bulk replay may select (narrow the selection beyond)."
    )
    replay_max_active_per_org: int = Field(
        default=3,
        ge=1,
        description="Bulk replays a tenant (an organization directly under the root, with its sub-organizations) "
        "may have pending, running or paused at once.",
    )
    replay_lease_seconds: float = Field(
        default=60.0,
        ge=1,
        description="How long a hub process holds a bulk replay without progress before another one takes it over.",
    )
    replay_poll_interval: float = Field(
        default=2.0, ge=0.05, description="How often a hub process looks for bulk replays to work on, in seconds."
    )
    log_level: str = "INFO"
    metrics_enabled: bool = Field(
        default=True,
        description="Count runs, steps, requests and refreshes for GET /metrics; false makes every count a no-op "
        "(bench/: the overhead with and without).",
    )
    metrics_token: str = Field(
        default="",
        repr=False,
        description="Bearer token GET /metrics requires (Authorization: Bearer <token>). Empty = /metrics is not "
        "served (404): the hub faces the internet, and counts by flow and route tell an attacker what it runs.",
    )
    _public_url_derived: bool = PrivateAttr(default=False)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_networks(cls, value: Any) -> Any:
        """`10.0.0.0/8, 192.168.1.7` from the environment; a single address is a /32 (or /128)."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [ip_network(item, strict=False) if isinstance(item, str) else item for item in value]
        return value

    @field_validator("metrics_token")
    @classmethod
    def _long_enough(cls, value: str) -> str:
        if value and len(value) < 16:
            raise ValueError("IHUB_METRICS_TOKEN must be at least 16 characters (or empty: /metrics off)")
        return value

    @field_validator("public_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _derive_public_url(self) -> Settings:
        # The address it listens on, so links printed at first start work with IHUB_PORT alone.
        if not self.public_url:
            self.public_url = listening_url(self.host, self.port)
            self._public_url_derived = True
        return self

    def listening_on(self, host: str | None, port: int | None) -> Settings:
        """These settings with `serve --host/--port` applied; a derived public URL follows them."""
        host, port = host or self.host, port or self.port
        update: dict[str, Any] = {"host": host, "port": port}
        if self._public_url_derived:
            update["public_url"] = listening_url(host, port)
        copy = self.model_copy(update=update)
        copy._public_url_derived = self._public_url_derived
        return copy

    @field_validator("egress_allow")
    @classmethod
    def _valid_egress_entries(cls, value: list[str]) -> list[str]:
        EgressPolicy.from_entries(value)  # raises ValueError naming the bad entry
        return value

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'ihub.db').resolve()}"

    def resolved_secret_key(self) -> str:
        """The master key: from the environment, else from data_dir, else freshly generated there (mode 0600)."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / SECRET_KEY_FILE
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.touch(mode=0o600)
        path.write_text(key + "\n")
        return key


def listening_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104 - naming it, not binding it
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
