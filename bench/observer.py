"""Watching transfers reach a terminal state, in the database itself.

"Settled" means observed terminal in PostgreSQL, not answered by the API: the bench is
the only writer of its database, so every transfer with `seq` above a scenario's
starting point belongs to that scenario. Per-transfer observation (for latency) reads
only the events committed since its previous poll, so it stays cheap at any backlog.
Between scenarios the broker's queues are watched too: wake-ups that outlive their
transfers would otherwise delay the next scenario.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import redis
from sqlalchemy import make_url

POLL_SECONDS = 0.2
LATENCY_POLL_SECONDS = 0.01


def dsn(database_url: str) -> str:
    """psycopg2 speaks plain libpq URLs, without SQLAlchemy's driver suffix."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


# The bench's own sessions, told apart from Settle's in pg_stat_activity (the soak
# counts Settle's connections).
BENCH_APPLICATION_NAME = "settle-bench"


def connect(database_url: str) -> Any:
    conn = psycopg2.connect(dsn(database_url), application_name=BENCH_APPLICATION_NAME)
    conn.autocommit = True
    return conn


def max_seq(database_url: str) -> int:
    conn = connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT coalesce(max(seq), 0) FROM transfers")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def vacuum_analyze(owner_url: str) -> None:
    """VACUUM ANALYZE the bench database, as autovacuum does on a running system.

    A database created seconds ago has no planner statistics, and a server with
    autovacuum off (CI's) would never get any: plans for an empty table, applied to
    tens of thousands of rows, then measure the planner's guess rather than Settle.
    pgbench vacuums before each run for the same reason. As the tables' owner
    (`SETTLE_MIGRATION_DATABASE_URL`): for anyone else PostgreSQL skips every table
    with a mere warning, so a warning here is an error."""
    conn = connect(owner_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT string_agg(format('%I', tablename), ', ') FROM pg_tables"
                " WHERE schemaname = 'public'"
            )
            tables = cur.fetchone()[0]
            cur.execute(f"VACUUM (ANALYZE) {tables}")  # nosec B608: names quoted by format('%I')
        skipped = [notice.strip() for notice in conn.notices if "skipping" in notice]
        if skipped:
            raise RuntimeError(f"VACUUM ANALYZE skipped tables: {skipped[:3]}")
    finally:
        conn.close()


def stage_times(database_url: str, transfer_ids: list[str]) -> dict[str, tuple[float, float]]:
    """When each transfer was accepted (`created_at`: the accept transaction's start) and
    applied (`completed_at`: the engine batch's moment, after its locks), as epoch
    seconds by the database server's clock."""
    conn = connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT id::text, extract(epoch FROM created_at)::float8,"
                " extract(epoch FROM completed_at)::float8 FROM transfers"
                " WHERE id = ANY(%s::uuid[]) AND completed_at IS NOT NULL",
                (transfer_ids,),
            )
            return {row[0]: (row[1], row[2]) for row in cur.fetchall()}
    finally:
        conn.close()


def status_counts(database_url: str, after_seq: int) -> dict[str, int]:
    conn = connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT status, count(*) FROM transfers WHERE seq > %s GROUP BY status",
                (after_seq,),
            )
            return {str(status): int(count) for status, count in cur.fetchall()}
    finally:
        conn.close()


@dataclass
class Progress:
    """Samples of (seconds since start, settled, in the database) for one scenario."""

    started: float
    samples: list[tuple[float, int, int]] = field(default_factory=list)

    @property
    def settled(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    @property
    def last_change(self) -> float:
        """Seconds since start at which `settled` last grew (for stall detection)."""
        last = 0.0
        previous = -1
        for at, settled, _ in self.samples:
            if settled != previous:
                last, previous = at, settled
        return last


class SettledCounter(threading.Thread):
    """Counts terminal transfers above `after_seq` every POLL_SECONDS."""

    def __init__(self, database_url: str, after_seq: int) -> None:
        super().__init__(name="bench-settled-counter", daemon=True)
        self.database_url, self.after_seq = database_url, after_seq
        self.progress = Progress(started=time.monotonic())
        self._stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = connect(self.database_url)
            with conn.cursor() as cur:
                while not self._stop_event.is_set():
                    cur.execute(
                        "SELECT count(*) FILTER (WHERE status <> 'pending'), count(*) "
                        "FROM transfers WHERE seq > %s",
                        (self.after_seq,),
                    )
                    settled, total = cur.fetchone()
                    at = time.monotonic() - self.progress.started
                    self.progress.samples.append((at, int(settled), int(total)))
                    self._stop_event.wait(POLL_SECONDS)
            conn.close()
        except BaseException as exc:  # reported by the scenario, not lost in a thread
            self.error = exc

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


class TerminalWatcher(threading.Thread):
    """Records the wall-clock time at which each watched transfer is first seen terminal.

    It reads the user's event stream, not the transfers: Settle writes a
    `transfer.succeeded`/`transfer.failed` event for the initiator in the very
    transaction that makes a transfer terminal (the transactional outbox), so the
    event becomes visible at the same commit. A poll returns only events of
    transactions that had not finished at the previous poll: its cost follows the
    settle rate, not the backlog (asking for every outstanding id cost milliseconds
    of PostgreSQL per poll once thousands were outstanding, and slowed the very
    system being measured). Each poll's snapshot also gives the horizon below which
    every transaction has finished; the next poll starts there, so a transaction
    that commits late is still read.

    The time recorded is when the poll that saw it started (the snapshot's moment), so
    the resolution is LATENCY_POLL_SECONDS plus one indexed query.
    """

    POLL = (
        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text,"
        " ARRAY(SELECT payload #>> '{data,transfer,id}' FROM events"
        "       WHERE user_id = %s AND xid >= %s::xid8"
        "         AND type IN ('transfer.succeeded', 'transfer.failed'))"
    )

    def __init__(self, database_url: str, user_id: str) -> None:
        super().__init__(name="bench-terminal-watcher", daemon=True)
        self.database_url, self.user_id = database_url, user_id
        self.terminal_at: dict[str, float] = {}
        self._outstanding: set[str] = set()
        # Seen terminal before watch() was called (the event can beat the 202 here).
        self._early: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None

    def start(self) -> None:
        """Returns once the stream's starting point is read: nothing accepted after
        this returns can be missed."""
        super().start()
        self._ready.wait()

    def watch(self, transfer_id: str) -> None:
        with self._lock:
            seen = self._early.pop(transfer_id, None)
            if seen is None:
                self._outstanding.add(transfer_id)
            else:
                self.terminal_at[transfer_id] = seen

    @property
    def outstanding(self) -> int:
        with self._lock:
            return len(self._outstanding)

    def run(self) -> None:
        try:
            conn = connect(self.database_url)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
                horizon = cur.fetchone()[0]
                self._ready.set()
                while not self._stop_event.is_set():
                    if not self.outstanding:  # e.g. waiting for webhooks: nothing to see
                        self._stop_event.wait(LATENCY_POLL_SECONDS)
                        continue
                    polled_at = time.time()
                    cur.execute(self.POLL, (self.user_id, horizon))
                    horizon, transfer_ids = cur.fetchone()
                    with self._lock:
                        for transfer_id in transfer_ids:
                            if transfer_id in self.terminal_at:
                                continue  # read again: its transaction was in flight before
                            if transfer_id in self._outstanding:
                                self._outstanding.discard(transfer_id)
                                self.terminal_at[transfer_id] = polled_at
                            else:
                                self._early.setdefault(transfer_id, polled_at)
                    self._stop_event.wait(LATENCY_POLL_SECONDS)
            conn.close()
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def webhook_stats(database_url: str) -> dict[str, Any]:
    """Deliveries and attempts so far: tells a slow receiver or retries apart from a
    slow path to the first attempt."""
    conn = connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*), coalesce(sum(attempts), 0), count(*) FILTER "
                "(WHERE attempts > 1) FROM webhook_deliveries"
            )
            deliveries, attempts, retried = cur.fetchone()
            cur.execute(
                "SELECT count(*) FILTER (WHERE status_code IS NULL OR status_code >= 300), "
                "coalesce(avg(duration_ms), 0) FROM webhook_attempts"
            )
            failed, mean_ms = cur.fetchone()
        return {
            "deliveries": int(deliveries),
            "attempts": int(attempts),
            "retried_deliveries": int(retried),
            "failed_attempts": int(failed),
            "mean_attempt_ms": round(float(mean_ms), 1),
        }
    finally:
        conn.close()


def queued_messages(redis_url: str, prefix: str, queues: tuple[str, ...]) -> int:
    """Messages waiting in (or delivered but unacknowledged from) Settle's queues."""
    client = redis.Redis.from_url(redis_url)
    try:
        total = 0
        for queue in queues:
            # Kombu keeps one list per priority level: `name`, `name\x06\x163`, ...
            for key in client.scan_iter(match=f"{prefix}{queue}*", count=1000):
                try:
                    total += int(client.llen(key))
                except redis.ResponseError:  # not a list: not a queue
                    continue
        return total + int(client.hlen(f"{prefix}unacked"))
    finally:
        client.close()
