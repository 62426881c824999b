"""Leader election over one PostgreSQL session-level advisory lock.

A process that holds the lock is the leader for as long as its session lives: the
lock goes with the connection, so a leader that dies (SIGKILL, host lost, PostgreSQL
restarted) stops leading as soon as PostgreSQL notices, and another takes over. Only
SQL lives here; workers/beat.py uses it to make beat a singleton.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, text


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for `name` (pg_try_advisory_lock(bigint))."""
    digest = hashlib.sha256(f"settle-leader:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def try_lead(connection: Connection, key: int) -> bool:
    """Take the lock if nobody holds it; never waits. Run on an AUTOCOMMIT connection,
    so the session never sits idle in a transaction while it leads."""
    return bool(
        connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
    )


def still_leading(connection: Connection, key: int) -> bool:
    """Whether this session still holds the lock; raises if the session itself is gone."""
    # pg_locks shows a bigint key as its high and low 32 bits (classid, objid), objsubid 1.
    held = connection.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
            " AND pid = pg_backend_pid() AND granted AND objsubid = 1"
            " AND classid = CAST(:high AS oid) AND objid = CAST(:low AS oid))"
        ),
        {"high": (key >> 32) & 0xFFFFFFFF, "low": key & 0xFFFFFFFF},
    ).scalar()
    return bool(held)
