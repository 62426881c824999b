"""Per-process database engine for tasks, created lazily and reset after fork."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from domain.db import make_engine, make_session_factory
from settle.config import get_settings

_engine: Engine | None = None
_factory: sessionmaker[Session] | None = None


def session_factory() -> sessionmaker[Session]:
    global _engine, _factory
    if _factory is None:
        settings = get_settings()
        _engine = make_engine(settings.database_url, pool_size=2, max_overflow=2)
        _factory = make_session_factory(_engine)
    return _factory


def reset() -> None:
    global _engine, _factory
    if _engine is not None:
        _engine.dispose(close=False)
    _engine, _factory = None, None


def dispose() -> None:
    global _engine, _factory
    if _engine is not None:
        _engine.dispose()
    _engine, _factory = None, None
