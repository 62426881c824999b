"""All runtime configuration, read once from the environment (and `.env`).

One pydantic-settings class. Outside development it refuses to start with the
development JWT secret, so a forgotten variable cannot ship a forgeable token key.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.rules import Limits

RUN_ENV_FILE = "var/run.env"
DEV_JWT_SECRET = "settle-development-secret-do-not-use-in-production"  # noqa: S105


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
    # Prepended to every Redis key Settle writes (Celery queues included), so
    # several deployments or test runs can share one Redis without colliding.
    redis_prefix: str = "settle:"
    db_pool_size: int = 10
    db_max_overflow: int = 20

    jwt_secret: str = DEV_JWT_SECRET
    jwt_issuer: str = "settle"
    jwt_audience: str = "settle-api"
    access_token_ttl_seconds: int = 15 * 60
    refresh_token_ttl_seconds: int = 30 * 24 * 3600

    currencies: list[str] = ["USD", "EUR", "GBP", "CHF", "JPY"]
    max_transfer_amount: int = 100_000_000  # minor units; 1,000,000.00 in a 2-decimal currency
    # Default cap on what one customer account may send per UTC day; operators can
    # set a per-account value.
    daily_outgoing_limit: int = 1_000_000_000

    drain_batch_size: int = 100
    sweep_interval_seconds: float = 5.0
    sweep_stale_after_seconds: float = 3.0
    # A message delivered more often than this (e.g. it kills its worker every time)
    # is dropped; the sweeper re-wakes the account later with a fresh message.
    max_deliveries: int = 5
    verify_interval_seconds: float = 300.0

    @property
    def engine_limits(self) -> Limits:
        return Limits(
            max_amount=self.max_transfer_amount,
            default_daily_outgoing=self.daily_outgoing_limit,
        )

    @model_validator(mode="after")
    def _refuse_development_secret(self) -> Settings:
        if self.environment != "development" and self.jwt_secret == DEV_JWT_SECRET:
            raise ValueError(
                "SETTLE_JWT_SECRET must be set outside development "
                f"(SETTLE_ENVIRONMENT={self.environment})"
            )
        if len(self.jwt_secret) < 32:
            raise ValueError("SETTLE_JWT_SECRET must be at least 32 characters")
        self.currencies = [c.strip().upper() for c in self.currencies]
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
