"""PostgreSQL unreachable is a 503 with Retry-After that says to retry with the same key.

Found by the fault matrix (tests/e2e/test_faults.py): while PostgreSQL restarted, the
money routes answered 500 `internal_error`, which tells a client nothing about
whether, or how, to retry. The errors here are the ones the drivers really raise:
a connection lost mid-statement, and connecting to a server that is gone.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import asyncpg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from gateway.errors import database_unavailable, install


def _connect_to_nothing() -> BaseException:
    """What asyncpg raises connecting to a unix socket no server listens on."""
    socket_dir = Path(tempfile.mkdtemp(prefix="settle-no-pg-"))

    async def connect() -> None:
        await asyncpg.connect(host=str(socket_dir), port=5432, user="x", database="x")

    try:
        asyncio.run(connect())
    except BaseException as exc:  # the very exception the gateway would see
        return exc
    raise AssertionError("connected to a server that does not exist")


def _app(error: BaseException) -> TestClient:
    app = FastAPI()
    install(app)

    @app.post("/v1/transfers")
    async def accept() -> None:
        raise error

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.ConnectionDoesNotExistError(
            "connection was closed in the middle of operation"
        ),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator"),
        OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly")),
        _connect_to_nothing(),
    ],
    ids=["lost", "starting-up", "shut-down", "sqlalchemy", "gone"],
)
def test_database_unreachable_is_503_with_retry_after(error: BaseException) -> None:
    response = _app(error).post("/v1/transfers")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "database_unavailable"
    assert "same Idempotency-Key" in body["detail"]


def test_other_errors_stay_500() -> None:
    assert not database_unavailable(FileNotFoundError(2, "not from a database driver"))
    assert not database_unavailable(ValueError("a bug"))
    response = _app(FileNotFoundError(2, "no such file")).post("/v1/transfers")
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
