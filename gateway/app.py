"""The FastAPI application: wiring of settings, database, broker, routes, middleware, errors."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from celery.signals import before_task_publish
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from domain.db import asyncpg_dsn, make_engine, make_session_factory
from domain.secret_box import SecretBox
from domain.services import acceptance, accounts, logins
from domain.uow import Ports, unit_of_work
from gateway import docs as api_docs
from gateway import errors, openapi
from gateway.accept_pool import create_accept_pool
from gateway.completions import Completions
from gateway.guards import BucketLimits, Guards
from gateway.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from gateway.query_params import reject_unknown_query_parameters
from gateway.ratelimit import AsyncRateLimiter, Lockout, RateLimiter, TokenCutoffs
from gateway.routes import accounts as accounts_routes
from gateway.routes import (
    admin,
    alerts,
    approvals,
    auth,
    events,
    health,
    money,
    people,
    transfers,
    webhooks,
)
from gateway.security_events import SecurityLog
from gateway.tokens import VerifiedTokens
from settle import logs
from settle.broker import async_redis_client, redis_client, redis_client_name
from settle.config import Settings, get_settings
from settle.wakeups import AsyncLaneWaker, LanePublisher, LaneWaker

DESCRIPTION = """
Settle accepts idempotency-keyed money movements and answers **202 Accepted** at once;
workers apply them serially per account as double-entry ledger entries.

* Amounts are integers in minor units (cents).
* Every POST that moves money needs an `Idempotency-Key` header.
* Errors are RFC 9457 `application/problem+json` with a stable `code`.
* Other users' resources answer 404.
* Unknown body fields and unknown query parameters are refused with 422.
* Lists take `?cursor=&limit=` and answer `{data, next_cursor}`.
* Every response carries `X-Request-ID` (yours, if you sent a sane one).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if not settings.database_url or not settings.redis_url:
        raise RuntimeError("DATABASE_URL and REDIS_URL must be set (make run sets them for you)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Named per process in pg_stat_activity, like the workers' sessions.
        application_name = f"settle-gateway {os.getpid()}"
        engine = make_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            application_name=application_name,
        )
        app.state.settings = settings
        app.state.tokens = VerifiedTokens(settings)
        app.state.session_factory = make_session_factory(engine)
        with unit_of_work(app.state.session_factory) as uow:
            accounts.ensure_settlement_accounts(session=uow.session, currencies=settings.currencies)
        app.state.redis = redis_client(settings, name=redis_client_name("gateway"))
        app.state.async_redis = async_redis_client(settings, name=redis_client_name("gateway"))
        publisher = app.state.publisher = LanePublisher(settings)
        app.state.ports = Ports(
            waker=LaneWaker(app.state.redis, publisher, prefix=settings.redis_prefix)
        )
        app.state.async_waker = AsyncLaneWaker(
            app.state.async_redis, publisher, prefix=settings.redis_prefix
        )
        app.state.async_limiter = AsyncRateLimiter(
            app.state.async_redis, prefix=settings.redis_prefix
        )
        app.state.money_limits = acceptance.MoneyLimits(
            currencies=settings.currencies,
            max_amount=settings.max_transfer_amount,
            large_transfer_threshold=settings.large_transfer_threshold,
            max_pending_per_account=settings.max_pending_per_account or None,
        )
        app.state.approval_policy = settings.approval_policy
        dsn = asyncpg_dsn(settings.database_url, application_name=application_name)
        app.state.db_pool = await create_accept_pool(dsn, max_size=settings.db_pool_size)
        app.state.completions = Completions(dsn, max_waits_per_user=settings.max_waits_per_user)
        await app.state.completions.start()
        app.state.secret_box = SecretBox(settings.webhook_encryption_key)
        app.state.guards = Guards(
            limiter=RateLimiter(app.state.redis, prefix=settings.redis_prefix)
        )
        app.state.token_cutoffs = TokenCutoffs(app.state.redis, prefix=settings.redis_prefix)
        app.state.logins = logins.Logins(
            rate_limits=BucketLimits(
                app.state.guards,
                {
                    logins.PER_CLIENT: settings.rate_limit_login_per_ip,
                    logins.PER_ACCOUNT: settings.rate_limit_login_per_account,
                },
            ),
            lockouts=Lockout(app.state.redis, prefix=settings.redis_prefix),
            monitor=SecurityLog(app.state.session_factory),
            policy=logins.LockoutPolicy(
                threshold=settings.lockout_threshold,
                base_seconds=settings.lockout_base_seconds,
                max_seconds=settings.lockout_max_seconds,
            ),
            refresh_ttl_seconds=settings.refresh_token_ttl_seconds,
        )
        try:
            yield
        finally:
            await app.state.completions.stop()
            await app.state.db_pool.close()
            publisher.close()
            app.state.redis.close()
            await app.state.async_redis.aclose()
            engine.dispose()

    docs = settings.expose_docs
    app = FastAPI(
        title="Settle",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # FastAPI's own pages load their assets from CDNs: gateway/docs.py serves them.
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
        dependencies=[Depends(reject_unknown_query_parameters)],
    )
    errors.install(app)
    openapi.install(app)
    if docs:
        api_docs.install(app, openapi_url="/openapi.json", title=app.title)
    for module in (
        auth,
        accounts_routes,
        alerts,
        money,
        transfers,
        webhooks,
        events,
        admin,
        approvals,
        people,
        health,
    ):
        app.include_router(module.router)
    # Added last = outermost: ids and headers apply even to 413s and CORS answers.
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=["Location", "Idempotent-Replayed", "Retry-After", "X-Request-ID"],
        )
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        exceptions={"/v1/transfer-batches": settings.max_batch_body_bytes},
    )
    app.add_middleware(RequestContextMiddleware, hsts=settings.hsts)
    return app


def app_factory() -> FastAPI:
    """Entry point for `uvicorn --factory gateway.app:app_factory`."""
    settings = get_settings()
    logs.configure(log_format=settings.log_format, level=settings.log_level)
    # Tasks published while serving a request carry its id (settle/logs.py).
    before_task_publish.connect(_request_id_header, weak=False)
    return create_app(settings)


def _request_id_header(headers: dict[str, Any] | None = None, **_: Any) -> None:
    logs.add_request_id_header(headers)
