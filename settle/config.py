"""All runtime configuration, read once from the environment (and `.env`).

One pydantic-settings class. Outside development it refuses to start with the
development JWT or webhook keys, so a forgotten variable cannot ship a forgeable
token key; in production it also needs a /metrics token and turns /docs off unless
asked. The image sets SETTLE_ENVIRONMENT=production (Dockerfile), so a container
started with nothing but the database URLs refuses to start.
"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.audit_anchor import CheckpointFile
from domain.lanes import SLOTS
from domain.rules import Limits
from domain.services.approvals import ApprovalPolicy
from domain.services.audit import AuditKeys
from domain.services.webhooks import WebhookPolicy
from domain.webhook_urls import DEFAULT_PORTS

RUN_ENV_FILE = "var/run.env"
# What SETTLE_BROKER_URL may name: Redis (as REDIS_URL does) or RabbitMQ.
AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})
BROKER_SCHEMES = AMQP_SCHEMES | {"redis", "rediss", "unix", "redis+socket"}
DEV_WEBHOOK_KEY = "settle-development-webhook-key-do-not-use-in-production"
DEV_JWT_SECRET = "settle-development-secret-do-not-use-in-production"  # noqa: S105
# No setting can make access tokens live longer; tokens claiming more are refused.
MAX_ACCESS_TOKEN_TTL_SECONDS = 3600
DEV_AUDIT_KEY = "settle-development-audit-key-do-not-use-in-production"


def cpu_count() -> int:
    """Cores this process may run on: the affinity mask honours `taskset` and cpusets,
    which os.cpu_count() (every core of the host) does not."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def default_lanes(worker_processes: int) -> int:
    """One lane per transfer-worker process, rounded down to a power of two (at most
    `SLOTS`). More lanes than processes leaves lanes queued behind each other: at
    moderate load every drain then ends by handing its lane to the back of the queue,
    a broker round trip and a wait per batch (the bench's latency p99 went from
    172-350 ms with 4 lanes to 121-144 ms with 2, on 2 worker processes)."""
    lanes = 1
    while lanes * 2 <= min(worker_processes, SLOTS):
        lanes *= 2
    return lanes


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SETTLE_",
        # var/run.env is written by `make run` while it runs, so that `settle ...`
        # in another terminal finds the embedded PostgreSQL and Redis.
        env_file=(RUN_ENV_FILE, ".env"),
        extra="ignore",
        populate_by_name=True,
    )

    environment: Literal["development", "test", "production"] = "development"

    # Connection strings keep their conventional unprefixed names.
    database_url: str = Field(
        default="", validation_alias=AliasChoices("DATABASE_URL", "SETTLE_DATABASE_URL")
    )
    redis_url: str = Field(
        default="", validation_alias=AliasChoices("REDIS_URL", "SETTLE_REDIS_URL")
    )
    # The Celery broker. Empty: REDIS_URL (Redis is the broker). `amqp://user:pw@host/vhost`
    # makes RabbitMQ the broker (durable quorum queues, publisher confirms); Redis then
    # keeps only rate limits, lockouts and the lane markers. See settle/broker.py.
    broker_url: str = ""
    # The table owner's connection, for `settle migrate` only (and `make run`'s startup
    # migration). DATABASE_URL names the app role, which owns nothing and may only do
    # what domain/db_roles.py grants it. Empty: DATABASE_URL migrates too (one role for
    # everything; `settle migrate` then warns, and refuses in production).
    migration_database_url: str = Field(
        default="",
        validation_alias=AliasChoices("SETTLE_MIGRATION_DATABASE_URL", "MIGRATION_DATABASE_URL"),
    )
    # Prepended to every Redis key Settle writes (Celery queues included), so
    # several deployments or test runs can share one Redis without colliding.
    redis_prefix: str = "settle:"
    db_pool_size: int = 10
    db_max_overflow: int = 20

    jwt_secret: str = DEV_JWT_SECRET
    # Key rotation: a JSON object {kid: secret}. Tokens are signed with the key named
    # by jwt_active_kid and accepted with any key in the set, chosen by their `kid`.
    # Empty: the single key jwt_secret, kid "default".
    jwt_keys: dict[str, str] = {}
    jwt_active_kid: str = "default"
    jwt_issuer: str = "settle"
    jwt_audience: str = "settle-api"
    access_token_ttl_seconds: int = Field(default=15 * 60, ge=1, le=MAX_ACCESS_TOKEN_TTL_SECONDS)
    refresh_token_ttl_seconds: int = 30 * 24 * 3600

    # The audit chain's HMAC key (not in the database). Rotation: a JSON object
    # {kid: key}; new seals use audit_active_kid, verify accepts every key of the set.
    # Empty: the single key audit_key, kid "default". Old keys must stay in the set for
    # as long as the rows they sealed are verified.
    audit_key: str = DEV_AUDIT_KEY
    audit_keys: dict[str, str] = {}
    audit_active_kid: str = "default"
    # Signed checkpoints of the chain, appended by `settle verify` and the periodic
    # verify; keep this file off the database host (append-only storage if you can).
    # Empty: no checkpoints (the chain is still keyed).
    audit_checkpoint_path: str = "var/audit-checkpoints.jsonl"

    currencies: list[str] = ["USD", "EUR", "GBP", "CHF", "JPY"]
    max_transfer_amount: int = 100_000_000  # minor units; 1,000,000.00 in a 2-decimal currency
    # Default cap on what one customer account may send per UTC day; operators can
    # set a per-account value.
    daily_outgoing_limit: int = 1_000_000_000

    drain_batch_size: int = 100
    # After a batch that was not full, a drain waits this long for a wake-up's bell
    # before letting go of its lane (settle/wakeups.py): at moderate load the lane stays
    # with one drain instead of a broker message per batch. 0: let go at once.
    drain_linger_seconds: float = Field(default=0.05, ge=0, le=1.0)
    # ...and once rung, this long before its next batch, which then takes whatever else
    # arrived meanwhile (fewer, fuller batches; README "Performance").
    drain_gather_seconds: float = Field(default=0.01, ge=0, le=0.5)
    # PostgreSQL ends a drain's transaction that sits idle this long (its worker frozen
    # or stuck), releasing the account locks the other drains wait for.
    drain_idle_timeout_seconds: float = Field(default=10.0, gt=0)
    # How many lanes the gateway spreads pending transfers over (domain/lanes.py):
    # 1, 2, 4, 8 or 16. Fewer lanes: bigger batches and shorter queues; more lanes:
    # more drains in parallel. 0 (the default): as many as this host's transfer-worker
    # processes, rounded down to a power of two (`default_lanes`).
    lanes: int = Field(default=0, ge=0, le=16)
    # Sweeps are a safety net (wake-ups are published after commit), so a few a minute:
    # more would bury the real work in Flower's task history.
    sweep_interval_seconds: float = 15.0
    sweep_stale_after_seconds: float = 3.0
    # Backpressure: a debit from an account that already has this many pending debits
    # is refused (429 account_backlog); 0 turns it off. Counted within settle_accept
    # (no extra round trip), up to this many index entries.
    max_pending_per_account: int = Field(default=10_000, ge=0)
    # A message delivered more often than this (e.g. it kills its worker every time)
    # is dropped; the sweeper re-wakes the account later with a fresh message.
    max_deliveries: int = 5
    verify_interval_seconds: float = 300.0
    # Beat queues one verify as it starts, so /metrics reports the ledger from the
    # first minutes on, not after a whole interval.
    verify_at_start: bool = True
    # Celery's hard time limit per task (the soft limit, which raises inside the task,
    # is two thirds of it). Far below the Redis visibility timeout (settle/broker.py),
    # so Redis never hands a message to a second worker while the first still runs it.
    task_time_limit_seconds: int = Field(default=180, ge=3, le=1800)

    idempotency_retention_seconds: float = 24 * 3600
    # Concurrent ?wait= long-polls one user may hold open (per gateway process); 429 past it.
    max_waits_per_user: int = 20
    # Accounts one user may open (POST /v1/accounts answers 422 too_many_accounts past it).
    max_accounts_per_user: int = Field(default=20, ge=1)

    # Rate limits ("count/seconds" windows), enforced in Redis per key.
    rate_limit_login_per_ip: str = "30/60"
    rate_limit_login_per_account: str = "10/60"
    rate_limit_register_per_ip: str = "20/3600"
    rate_limit_money_per_user: str = "600/60"
    # Lockout after this many consecutive failed logins (per account and client),
    # doubling each time from lockout_base_seconds up to lockout_max_seconds.
    lockout_threshold: int = 5
    lockout_base_seconds: int = 30
    lockout_max_seconds: int = 900

    # Anomaly flags, recorded as audit events and counted in /metrics.
    large_transfer_threshold: int = 10_000_000
    daily_velocity_threshold: int = 200  # money requests per user per UTC day

    # Four eyes (domain/services/approvals.py): deposits at or above this amount, and
    # every limit change, wait for a second operator's approval. (Above
    # max_transfer_amount, no deposit does; there is no switch to turn it off.)
    approval_threshold: int = Field(default=10_000_000, ge=1)
    approval_ttl_seconds: int = Field(default=72 * 3600, ge=60)

    # Webhooks. The encryption key protects endpoint secrets at rest; like the JWT
    # secret it must be set outside development.
    webhook_encryption_key: str = DEV_WEBHOOK_KEY
    webhook_allow_private: bool = False  # UNSAFE outside development: lifts the SSRF guard
    # Ports webhook URLs may use (JSON list); the SSRF guard refuses any other.
    webhook_allowed_ports: list[int] = sorted(DEFAULT_PORTS)
    webhook_timeout_seconds: float = 10.0
    # Seconds before attempt 1, 2, ...: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    webhook_retry_schedule: list[float] = [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
    webhook_disable_after_seconds: float = 5 * 24 * 3600
    webhook_secret_grace_seconds: float = 24 * 3600
    # The webhook dispatcher (workers/dispatcher.py) is woken by NOTIFY and by the next
    # due time; this bounds its sleep, i.e. how late a lost immediate send is retried.
    webhook_dispatch_max_wait_seconds: float = Field(default=30.0, gt=0)

    # HTTP hardening.
    cors_origins: list[str] = []
    max_body_bytes: int = 64 * 1024
    max_batch_body_bytes: int = 1024 * 1024  # 1,000 transfers with descriptions
    # /docs, /redoc, /openapi.json. Unset: on, except in production.
    expose_docs: bool | None = None
    # When set, /metrics needs "Authorization: Bearer <token>"; required in production.
    metrics_token: str = ""
    hsts: bool = False  # send Strict-Transport-Security (only behind TLS)
    # Peers (addresses or networks, e.g. ["10.0.0.2", "10.1.0.0/16"]) whose
    # X-Forwarded-For/-Proto the gateway believes. Default none: the TCP peer is the client.
    trusted_proxies: list[str] = []

    # Processes (`settle serve NAME`, settle/processes.py). None: one per core.
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    # One line per request is a lot at hundreds of requests a second (and every line
    # crosses the log relay): off by default; errors are logged either way.
    http_access_log: bool = False
    web_processes: int | None = Field(default=None, ge=1)
    worker_concurrency: int | None = Field(default=None, ge=1)
    # Concurrent webhook sends (threads of the webhooks worker).
    webhook_concurrency: int = Field(default=32, ge=1)
    beat_schedule: str = "var/celerybeat-schedule"
    flower_address: str = "127.0.0.1"
    flower_port: int = Field(default=5555, ge=1, le=65535)
    log_level: str = "INFO"
    # "json": one JSON object per line, for a log pipeline; "text": for people (settle/logs.py).
    log_format: Literal["text", "json"] = "text"
    # One INFO line per transfer outcome from the engine. Like the access log, at
    # thousands of transfers a second the lines cost real CPU; metrics count them anyway.
    log_transfer_outcomes: bool = True

    @field_validator("web_processes", "worker_concurrency", mode="before")
    @classmethod
    def _empty_means_default(cls, value: object) -> object:
        # docker-compose passes `${VAR:-}` through as an empty string: "use the default".
        return None if value == "" else value

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, value: str) -> str:
        scheme = value.partition("://")[0].lower()
        if value and scheme not in BROKER_SCHEMES:
            raise ValueError(
                f"SETTLE_BROKER_URL must start with one of {', '.join(sorted(BROKER_SCHEMES))}"
                " (or be empty to use REDIS_URL)"
            )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)  # ValueError: refused at start
        return value

    @field_validator("webhook_allowed_ports")
    @classmethod
    def _ports_in_range(cls, ports: list[int]) -> list[int]:
        if not ports or any(not 1 <= port <= 65535 for port in ports):
            raise ValueError("SETTLE_WEBHOOK_ALLOWED_PORTS must list ports between 1 and 65535")
        return ports

    @property
    def engine_limits(self) -> Limits:
        return Limits(
            max_amount=self.max_transfer_amount,
            default_daily_outgoing=self.daily_outgoing_limit,
        )

    @property
    def approval_policy(self) -> ApprovalPolicy:
        return ApprovalPolicy(
            deposit_threshold=self.approval_threshold, ttl_seconds=self.approval_ttl_seconds
        )

    @property
    def webhook_policy(self) -> WebhookPolicy:
        return WebhookPolicy(
            allow_private=self.webhook_allow_private,
            retry_schedule=self.webhook_retry_schedule,
            disable_after_seconds=self.webhook_disable_after_seconds,
            secret_grace_seconds=self.webhook_secret_grace_seconds,
            allowed_ports=frozenset(self.webhook_allowed_ports),
            explain_private=self.environment == "development",
        )

    @property
    def audit_keyring(self) -> AuditKeys:
        return AuditKeys(
            active=self.audit_active_kid,
            keys={kid: key.encode() for kid, key in self.audit_keys.items()},
        )

    @property
    def audit_checkpoints(self) -> CheckpointFile | None:
        return (
            CheckpointFile(Path(self.audit_checkpoint_path)) if self.audit_checkpoint_path else None
        )

    @property
    def uses_rabbitmq(self) -> bool:
        return self.broker_url.partition("://")[0].lower() in AMQP_SCHEMES

    @property
    def owner_database_url(self) -> str:
        return self.migration_database_url or self.database_url

    @model_validator(mode="after")
    def _resolve_lanes(self) -> Settings:
        if not self.lanes:
            self.lanes = default_lanes(self.worker_concurrency or cpu_count())
        elif SLOTS % self.lanes:
            raise ValueError(f"SETTLE_LANES must be 1, 2, 4, 8 or 16 (got {self.lanes})")
        return self

    @model_validator(mode="after")
    def _refuse_development_secret(self) -> Settings:
        if not self.jwt_keys:
            if self.environment != "development" and self.jwt_secret == DEV_JWT_SECRET:
                raise ValueError(
                    "SETTLE_JWT_SECRET must be set outside development "
                    f"(SETTLE_ENVIRONMENT={self.environment})"
                )
            self.jwt_keys = {self.jwt_active_kid: self.jwt_secret}
        if self.jwt_active_kid not in self.jwt_keys:
            raise ValueError("SETTLE_JWT_ACTIVE_KID must name a key of SETTLE_JWT_KEYS")
        for kid, secret in self.jwt_keys.items():
            if len(secret) < 32:
                raise ValueError(f"JWT key {kid!r} must be at least 32 characters")
            if self.environment != "development" and secret == DEV_JWT_SECRET:
                raise ValueError("the development JWT secret cannot be used here")
        if not self.audit_keys:
            self.audit_keys = {self.audit_active_kid: self.audit_key}
        if self.audit_active_kid not in self.audit_keys:
            raise ValueError("SETTLE_AUDIT_ACTIVE_KID must name a key of SETTLE_AUDIT_KEYS")
        for kid, key in self.audit_keys.items():
            if len(key) < 32:
                raise ValueError(f"audit key {kid!r} must be at least 32 characters")
            if self.environment != "development" and key == DEV_AUDIT_KEY:
                raise ValueError(
                    "SETTLE_AUDIT_KEY must be set outside development "
                    f"(SETTLE_ENVIRONMENT={self.environment})"
                )
        if self.environment != "development" and self.webhook_encryption_key == DEV_WEBHOOK_KEY:
            raise ValueError("SETTLE_WEBHOOK_ENCRYPTION_KEY must be set outside development")
        if len(self.webhook_encryption_key) < 32:
            raise ValueError("SETTLE_WEBHOOK_ENCRYPTION_KEY must be at least 32 characters")
        if self.environment == "production" and len(self.metrics_token) < 32:
            raise ValueError(
                "SETTLE_METRICS_TOKEN (at least 32 characters) must be set in production: "
                "/metrics is never open there"
            )
        if self.expose_docs is None:
            self.expose_docs = self.environment != "production"
        self.currencies = [c.strip().upper() for c in self.currencies]
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
