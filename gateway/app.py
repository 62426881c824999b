"""The FastAPI application: wiring of settings, database, broker, routes and error handlers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from domain.db import make_engine, make_session_factory
from gateway import errors
from gateway.routes import accounts, admin, auth, health, money, transfers
from gateway.wakeups import WakeupPublisher
from settle.broker import redis_client
from settle.config import Settings, get_settings

DESCRIPTION = """
Settle accepts idempotency-keyed money movements and answers **202 Accepted** at once;
workers apply them serially per account as double-entry ledger entries.

* Amounts are integers in minor units (cents).
* Every POST that moves money needs an `Idempotency-Key` header.
* Errors are RFC 9457 `application/problem+json` with a stable `code`.
* Other users' resources answer 404.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if not settings.database_url or not settings.redis_url:
        raise RuntimeError("DATABASE_URL and REDIS_URL must be set (make run sets them for you)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )
        app.state.settings = settings
        app.state.session_factory = make_session_factory(engine)
        app.state.wakeups = WakeupPublisher(settings)
        app.state.redis = redis_client(settings)
        try:
            yield
        finally:
            app.state.wakeups.close()
            app.state.redis.close()
            engine.dispose()

    app = FastAPI(
        title="Settle",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    errors.install(app)
    for module in (auth, accounts, money, transfers, admin, health):
        app.include_router(module.router)
    return app


def app_factory() -> FastAPI:
    """Entry point for `uvicorn --factory gateway.app:app_factory`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return create_app()
