"""The accept path's pool (gateway/accept_pool.py) on the real PostgreSQL.

- giving a connection back sends nothing: the backend's last statement is still the
  caller's, not asyncpg's reset (`... CLOSE ALL; UNLISTEN *; RESET ALL;`);
- a transaction left open is still rolled back on the way back, so nothing a broken
  request wrote reaches the next one or commits.
"""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import create_engine, text

from domain.db import asyncpg_dsn
from gateway.accept_pool import AcceptConnection, create_accept_pool


def _last_statement(server_url: str, pid: int) -> tuple[str, str]:
    engine = create_engine(server_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                text("SELECT state, query FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            ).one()
            return row.state, row.query
    finally:
        engine.dispose()


def test_giving_a_connection_back_sends_no_reset(services):
    marker = f"accept-pool-{uuid.uuid4().hex}"

    async def use_once() -> int:
        pool = await create_accept_pool(asyncpg_dsn(services.database_url), max_size=1)
        try:
            async with pool.acquire() as connection:
                assert isinstance(connection._con, AcceptConnection)
                await connection.fetchval(f"SELECT '{marker}'")
                pid: int = connection.get_server_pid()
            # Back in the pool, still connected: what did the backend run last?
            state, query = await asyncio.to_thread(_last_statement, services.server_url, pid)
            assert (state, query) == ("idle", f"SELECT '{marker}'")
            return pid
        finally:
            await pool.close()

    asyncio.run(use_once())


def test_a_transaction_left_open_is_rolled_back_on_the_way_back(services):
    async def leave_one_open() -> None:
        pool = await create_accept_pool(asyncpg_dsn(services.database_url), max_size=1)
        try:
            async with pool.acquire() as connection:
                await connection.execute("BEGIN")
                await connection.execute("CREATE TEMP TABLE left_open (x int)")
                pid = connection.get_server_pid()
            async with pool.acquire() as connection:
                assert connection.get_server_pid() == pid  # the same session, reused
                assert await connection.fetchval("SELECT to_regclass('left_open')") is None
                assert not connection.is_in_transaction()
        finally:
            await pool.close()

    asyncio.run(leave_one_open())
