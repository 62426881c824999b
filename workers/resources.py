"""Per-process database engine for tasks, created lazily and reset after fork."""

from __future__ import annotations

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from domain.db import make_engine, make_session_factory
from domain.secret_box import SecretBox
from settle.broker import redis_client
from settle.config import get_settings
from workers.delivery_guard import DeliveryGuard

_engine: Engine | None = None
_factory: sessionmaker[Session] | None = None
_redis: redis.Redis[bytes] | None = None


def session_factory() -> sessionmaker[Session]:
    global _engine, _factory
    if _factory is None:
        settings = get_settings()
        _engine = make_engine(settings.database_url, pool_size=2, max_overflow=2)
        _factory = make_session_factory(_engine)
    return _factory


def delivery_guard(*, ttl_seconds: int) -> DeliveryGuard:
    global _redis
    settings = get_settings()
    if _redis is None:
        _redis = redis_client(settings)
    return DeliveryGuard(
        _redis,
        prefix=settings.redis_prefix,
        max_deliveries=settings.max_deliveries,
        ttl_seconds=ttl_seconds,
    )


def secret_box() -> SecretBox:
    return SecretBox(get_settings().webhook_encryption_key)


def reset() -> None:
    global _engine, _factory, _redis
    _redis = None
    if _engine is not None:
        _engine.dispose(close=False)
    _engine, _factory = None, None


def dispose() -> None:
    global _engine, _factory
    if _engine is not None:
        _engine.dispose()
    _engine, _factory = None, None
