"""What is pending, asked cheaply: migrations 0013 and 0014 and the engine's lane read.

- `settle_accept`'s backpressure count probes the source's own pending transfers
  (`transfers_pending_by_source`), not every pending transfer of every lane, even
  when the planner's statistics are skewed: one source behind most rows, as a
  settlement account is; or most rows pending (0014: PL/pgSQL's generic plan then
  walked the whole table in `seq` order);
- the engine reads a lane slot by slot, so what it reads is bounded by the batch
  size, not by the backlog, also when the statistics say most transfers are pending
  (it then once walked the whole table in `seq` order instead); it still returns the
  lane's oldest due transfers in acceptance order; the drain's last look
  (`has_due_pending`) sees due pending transfers of its own lane only;
- 0013 goes down and up (and drops an index nothing reads); so does 0014.

Each test has a database of its own, filled by SQL (no engine, no other test's
transfers in its lanes).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.orm import Session

from domain.lanes import Lanes
from domain.repositories import acceptance
from domain.repositories import engine as engine_repo
from settle.harness import migrated_database
from tests.sql_ledger import (
    Ledger,
    accounts_in_lane,
    add_accounts,
    add_transfers,
    fresh_ledger,
    number,
)


@pytest.fixture
def ledger(services: Any) -> Iterator[Ledger]:
    with fresh_ledger(services.server_url, "settle_test_pending") as ledger:
        yield ledger


def _index_use(ledger: Ledger, what: str = "idx_scan") -> dict[str, int]:
    """Scans of (`idx_scan`) or entries read from (`idx_tup_read`) the two indexes of
    pending transfers and the one of all transfers in `seq` order, as PostgreSQL
    counts them (callers flush their counts first)."""
    with ledger.owner.connect() as connection:
        connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        return {
            row.name: row.used
            for row in connection.execute(
                text(
                    f"SELECT indexrelname AS name, {what} AS used"  # nosec B608: constant SQL
                    " FROM pg_stat_user_indexes WHERE indexrelname IN"
                    " ('transfers_pending_by_source', 'transfers_pending_by_lane',"
                    " 'transfers_seq_key')"
                )
            )
        }


def _accept(
    ledger: Ledger, source: uuid.UUID, destination: uuid.UUID, *, max_pending: int
) -> list[acceptance.Row]:
    """One transfer of 1 through `settle_accept`, in a transaction of its own; the
    index counts of that transaction are flushed, for `_index_use` to see."""
    with Session(ledger.owner) as session, session.begin():
        rows = acceptance.accept_in_session(
            session,
            acceptance.AcceptCall(
                user_id=ledger.user,
                key=f"k-{uuid.uuid4()}",
                fingerprint="f",
                kinds=["transfer"],
                accounts=[source],
                destinations=[number(destination)],
                amounts=[1],
                currencies=["USD"],
                descriptions=[None],
                batch_id=None,
                atomic=False,
                request_id=None,
                large_threshold=None,
                max_pending=max_pending,
            ),
        )
        session.execute(text("SELECT pg_stat_force_next_flush()"))
        return rows


def test_the_backpressure_count_probes_the_source_even_with_skewed_statistics(ledger):
    busy, sender, sink = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    add_accounts(ledger, [busy, sender, sink])
    # Most rows come from one account (as deposits come from a settlement account), and
    # the planner knows it: a plan for "some source" then guesses "most rows".
    add_transfers(ledger, busy, sink, 3000, status="succeeded")
    add_transfers(ledger, busy, sink, 500)
    add_transfers(ledger, sender, sink, 2)
    with ledger.owner.begin() as connection:
        connection.execute(text("ANALYZE transfers"))
    before = _index_use(ledger)
    # Six calls: PL/pgSQL plans with the values five times, then settles on a generic
    # plan (for "some source"); both kinds of plan are used here.
    for _ in range(6):
        rows = _accept(ledger, sender, sink, max_pending=10_000)
        assert [r.outcome for r in rows] == ["accepted"]
    after = _index_use(ledger)
    assert after["transfers_pending_by_source"] - before["transfers_pending_by_source"] >= 6
    assert after["transfers_pending_by_lane"] == before["transfers_pending_by_lane"]


def test_the_backpressure_count_stays_on_the_source_index_when_most_transfers_are_pending(
    ledger,
):
    _, sink, pending = _young_table_with_a_backlog(ledger)
    before = _index_use(ledger, "idx_tup_read")
    # Seven calls: five plans with the values, then PL/pgSQL's generic plan.
    for _ in range(7):
        rows = _accept(ledger, next(iter(pending)), sink, max_pending=10_000)
        assert [r.outcome for r in rows] == ["accepted"]
    after = _index_use(ledger, "idx_tup_read")
    assert after["transfers_seq_key"] == before["transfers_seq_key"]
    assert after["transfers_pending_by_source"] > before["transfers_pending_by_source"]


def test_the_backpressure_count_refuses_at_the_limit(ledger):
    sender, sink = uuid.uuid4(), uuid.uuid4()
    add_accounts(ledger, [sender, sink])
    add_transfers(ledger, sender, sink, 3)
    add_transfers(ledger, sender, sink, 5, status="succeeded")  # not pending: not counted

    refused = _accept(ledger, sender, sink, max_pending=3)
    assert [(r.outcome, r.detail) for r in refused] == [("account_backlog", f"3 {sender}")]
    assert [r.outcome for r in _accept(ledger, sender, sink, max_pending=4)] == ["accepted"]


def test_a_lane_is_read_slot_by_slot_oldest_first(ledger):
    lanes = Lanes(4)
    first, second, third = accounts_in_lane(lanes, 0, 3, distinct_slots=True)
    elsewhere = next(a for a in iter(uuid.uuid4, None) if lanes.of_account(a) == 1)
    sink = next(a for a in iter(uuid.uuid4, None) if lanes.of_account(a) == 2)
    add_accounts(ledger, [first, second, third, elsewhere, sink])
    add_transfers(ledger, first, sink, 4, status="succeeded")  # already applied
    add_transfers(ledger, second, sink, 1, execute_at="2999-01-01T00:00:00Z")  # not due yet
    order = []
    for source in (first, second, first, third, second, third, first):
        order += add_transfers(ledger, source, sink, 1)
        add_transfers(ledger, elsewhere, sink, 1)  # another lane's: never in lane 0's read
    with Session(ledger.owner) as session:
        for limit in (1, 3, 7, 100):
            rows = engine_repo.pending_in_lane(session, lanes.slots(0), limit=limit)
            assert [r.id for r in rows] == order[:limit]
            assert all(r.status == "pending" and r.lane in lanes.slots(0) for r in rows)
        locked = engine_repo.pending_in_lane(session, lanes.slots(0), limit=2, lock=True)
        assert [r.id for r in locked] == order[:2]


def test_the_drains_last_look_sees_only_due_pending_transfers_of_its_lane(ledger):
    lanes = Lanes(4)
    source = accounts_in_lane(lanes, 0, 1)[0]
    elsewhere = accounts_in_lane(lanes, 1, 1)[0]
    sink = accounts_in_lane(lanes, 2, 1)[0]
    add_accounts(ledger, [source, elsewhere, sink])

    def look(lane: int) -> bool:
        with Session(ledger.owner) as session:
            return engine_repo.has_due_pending(session, lanes.slots(lane))

    add_transfers(ledger, source, sink, 2, status="succeeded")
    add_transfers(ledger, source, sink, 1, execute_at="2999-01-01T00:00:00Z")
    add_transfers(ledger, elsewhere, sink, 1)
    assert not look(0)  # finished, not yet due, or another lane's
    assert look(1)
    add_transfers(ledger, source, sink, 1, execute_at="2000-01-01T00:00:00Z")  # due now
    assert look(0)


def test_a_lane_read_is_bounded_by_the_batch_not_the_backlog(ledger):
    lanes = Lanes(4)
    sources = accounts_in_lane(lanes, 0, 3, distinct_slots=True)
    sink = next(a for a in iter(uuid.uuid4, None) if lanes.of_account(a) == 2)
    add_accounts(ledger, [*sources, sink])
    oldest = [add_transfers(ledger, source, sink, 1)[0] for source in sources]
    for source in sources:
        add_transfers(ledger, source, sink, 300)  # the backlog behind them
    before = _index_use(ledger, "idx_tup_read")["transfers_pending_by_lane"]
    with Session(ledger.owner) as session:
        rows = engine_repo.pending_in_lane(session, lanes.slots(0), limit=3)
        assert [r.id for r in rows] == oldest
        session.execute(text("SELECT pg_stat_force_next_flush()"))
    read = _index_use(ledger, "idx_tup_read")["transfers_pending_by_lane"] - before
    # At most `limit` from each of the lane's 4 slots; one lane-wide scan read all 903.
    assert 0 < read <= 3 * len(lanes.slots(0))


def test_a_lane_read_stays_on_the_lane_index_when_most_transfers_are_pending(ledger):
    """Statistics taken during a backlog on a young table (as autovacuum's ANALYZE
    takes them) once made the planner walk `transfers_seq_key` from the oldest transfer
    of all, skipping every finished one: per slot, per batch, growing with the table."""
    lanes, _, pending = _young_table_with_a_backlog(ledger)
    lane_sources = [s for s in pending if lanes.of_account(s) == 0]
    expected = sorted((t for s in lane_sources for t in pending[s]), key=_seq(ledger))[:100]
    before = _index_use(ledger, "idx_tup_read")
    with Session(ledger.owner) as session:
        rows = engine_repo.pending_in_lane(session, lanes.slots(0), limit=100)
        assert [r.id for r in rows] == expected
        session.execute(text("SELECT pg_stat_force_next_flush()"))
    after = _index_use(ledger, "idx_tup_read")
    assert after["transfers_seq_key"] == before["transfers_seq_key"]
    read = after["transfers_pending_by_lane"] - before["transfers_pending_by_lane"]
    assert 0 < read <= 100 * len(lanes.slots(0))


def _young_table_with_a_backlog(
    ledger: Ledger,
) -> tuple[Lanes, uuid.UUID, dict[uuid.UUID, list[uuid.UUID]]]:
    """Two sources in each of 4 lanes, each with 250 finished then 1,000 pending
    transfers to one sink, and statistics taken then: most rows pending, as autovacuum's
    ANALYZE would see a young table with a backlog. The lanes, the sink, and each
    source's pending transfers, oldest first."""
    lanes = Lanes(4)
    sources = [a for lane in range(4) for a in accounts_in_lane(lanes, lane, 2)]
    sink = uuid.uuid4()
    add_accounts(ledger, [*sources, sink])
    for source in sources:
        add_transfers(ledger, source, sink, 250, status="succeeded")
    pending = {source: add_transfers(ledger, source, sink, 1000) for source in sources}
    with ledger.owner.begin() as connection:
        connection.execute(text("ANALYZE transfers"))
    return lanes, sink, pending


def _seq(ledger: Ledger) -> Any:
    """A sort key: each transfer's `seq` (its place in acceptance order)."""
    with ledger.owner.connect() as connection:
        rows = connection.execute(text("SELECT id, seq FROM transfers"))
        seqs: dict[uuid.UUID, int] = {row.id: row.seq for row in rows}
    return seqs.__getitem__


def test_0013_goes_down_and_up(services):
    from alembic import command

    from domain.migrate import alembic_config

    def state(engine: Engine) -> tuple[set[str], bool]:
        """The two indexes 0013 creates and drops (valid ones only), and its function."""
        with engine.connect() as connection:
            indexes = connection.execute(
                text(
                    "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " WHERE i.indisvalid AND c.relname IN"
                    " ('transfers_pending_by_source', 'transfers_source_completed_idx')"
                )
            ).scalars()
            body = connection.execute(
                text("SELECT pg_get_functiondef('settle_accept'::regproc)")
            ).scalar()
        # 0013's ORDER BY, also as 0014 rewrote it.
        ordered = re.search(r"ORDER BY (t\.source_account_id, )?t\.seq LIMIT p_max_pending", body)
        return set(indexes), ordered is not None

    with migrated_database(services.server_url, "settle_test_0013") as (name, roles):
        owner = create_engine(roles.owner_url)
        config = alembic_config(roles.owner_url)
        after = ({"transfers_pending_by_source"}, True)
        assert state(owner) == after
        command.downgrade(config, "0012")
        assert state(owner) == ({"transfers_source_completed_idx"}, False)
        command.upgrade(config, "head")
        assert state(owner) == after

        # A first run interrupted in its concurrent build: the old index already gone,
        # the new one left invalid (as PostgreSQL leaves it), the revision unrecorded.
        command.downgrade(config, "0012")
        superuser = create_engine(make_url(services.server_url).set(database=name))
        with superuser.begin() as connection:
            connection.execute(text("DROP INDEX transfers_source_completed_idx"))
            connection.execute(
                text(
                    "CREATE INDEX transfers_pending_by_source ON transfers"
                    " (source_account_id, seq) WHERE status = 'pending'"
                )
            )
            connection.execute(
                text(
                    "UPDATE pg_index SET indisvalid = false"
                    " WHERE indexrelid = 'transfers_pending_by_source'::regclass"
                )
            )
        superuser.dispose()
        assert state(owner) == (set(), False)
        command.upgrade(config, "head")
        assert state(owner) == after
        owner.dispose()


def test_0014_goes_down_and_up(services):
    from alembic import command

    from domain.migrate import alembic_config

    def count(engine: Engine) -> str:
        """How `settle_accept` names the source in its backpressure count."""
        with engine.connect() as connection:
            body = connection.execute(
                text("SELECT pg_get_functiondef('settle_accept'::regproc)")
            ).scalar_one()
        if "source_account_id = ANY(ARRAY[v_src[cardinality(v_src)]])" in body:
            return "any"
        assert "source_account_id = v_src[cardinality(v_src)]" in body
        return "equals"

    with migrated_database(services.server_url, "settle_test_0014") as (_, roles):
        owner = create_engine(roles.owner_url)
        config = alembic_config(roles.owner_url)
        assert count(owner) == "any"
        command.downgrade(config, "0013")
        assert count(owner) == "equals"
        command.upgrade(config, "head")
        assert count(owner) == "any"
        owner.dispose()
