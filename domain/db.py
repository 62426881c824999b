"""Engine and session factories. Transactions belong to units of work (domain/uow.py)."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, make_url
from sqlalchemy.orm import Session, sessionmaker


def make_engine(
    database_url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 20,
    pre_ping: bool = True,
    application_name: str | None = None,
    idle_in_transaction_timeout_seconds: float | None = None,
) -> Engine:
    """`idle_in_transaction_timeout_seconds`: PostgreSQL ends a session that sits idle
    inside a transaction this long (the workers: see workers/resources.py). Set once per
    connection, so it costs no round trip per transaction."""
    # application_name shows in pg_stat_activity: which process holds which session.
    connect_args: dict[str, str] = {}
    if application_name:
        connect_args["application_name"] = application_name
    if idle_in_transaction_timeout_seconds:
        timeout_ms = max(1, round(idle_in_transaction_timeout_seconds * 1000))
        connect_args["options"] = f"-c idle_in_transaction_session_timeout={timeout_ms}"
    return create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=pre_ping,  # survive a PostgreSQL restart without a burst of errors
        pool_recycle=1800,
        connect_args=connect_args,
    )


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: objects stay readable after the boundary commits,
    # e.g. to render the 202 body or publish the wake-up.
    return sessionmaker(bind=engine, expire_on_commit=False)


def asyncpg_dsn(database_url: str, *, application_name: str | None = None) -> str:
    """The same database for asyncpg, which wants a plain postgresql:// URL (asyncpg
    sends query parameters it does not know, application_name here, as settings)."""
    url = make_url(database_url).set(drivername="postgresql")
    if application_name:
        url = url.update_query_dict({"application_name": application_name})
    return url.render_as_string(hide_password=False)
