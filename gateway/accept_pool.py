"""The accept path's asyncpg pool, without a reset round trip per request.

The pool's connections run one thing: `settle_accept`, one prepared statement in
autocommit (domain/repositories/acceptance.py). They never SET a setting, LISTEN,
open a cursor or take an advisory lock, so there is no session state to reset. asyncpg
nevertheless sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;`
every time a connection goes back to the pool: a round trip per accepted request and
four statements for PostgreSQL (8 % of a gateway process's CPU under the bench's
uniform load, py-spy `--gil`). `AcceptConnection` sends none; asyncpg still rolls back
a transaction left open (it knows locally whether one is), so a broken request cannot
leak one into the next.

Long-polls LISTEN on connections of their own (gateway/completions.py), never on these.
"""

from __future__ import annotations

import asyncpg


class AcceptConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg has no stubs
    """A pooled connection whose release costs no round trip (see the module docstring)."""

    def get_reset_query(self) -> str:
        return ""


async def create_accept_pool(dsn: str, *, max_size: int) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn, min_size=1, max_size=max_size, connection_class=AcceptConnection
    )
