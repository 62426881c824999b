"""Drains skip the accounts another lane's drain holds, instead of waiting for them.

engine.apply_next_batch(skip_locked_from=N), in a batch of N transfers or more, takes
only the accounts nobody holds and defers the transfers that need the others, with the
later transfers of their sources (FIFO per source); draining.drain_lane follows a batch
that deferred the first transfer it could have applied with one that waits for the
locks, so within a drain nothing is passed over twice and a drain never spins. Smaller
batches wait. Each test has a database of its own (tests/sql_ledger.py).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from domain.lanes import Lanes
from domain.rules import Limits
from domain.services import draining, engine
from domain.uow import UnitOfWork, unit_of_work
from tests.sql_ledger import Ledger, accounts_in_lane, add_accounts, add_transfers, fresh_ledger

LANES = Lanes(4)
LIMITS = Limits(max_amount=10**12, default_daily_outgoing=10**15)


@pytest.fixture
def ledger(services: Any) -> Iterator[Ledger]:
    with fresh_ledger(services.server_url, "settle_test_skip_locked") as ledger:
        yield ledger


def _units(ledger: Ledger, opened: list[int] | None = None) -> draining.Units:
    factory = sessionmaker(bind=ledger.owner)

    def units() -> AbstractContextManager[UnitOfWork]:
        if opened is not None:
            opened.append(1)
        return unit_of_work(factory)

    return units


class Claims:
    """The lane markers as a drain sees them, with nobody else around."""

    def refresh(self, lane: int) -> None: ...
    def release(self, lane: int) -> None: ...
    def hand_on(self, lane: int) -> None: ...

    def claim(self, lane: int) -> bool:
        return True

    def wait_for_bell(self, lane: int, timeout: float) -> bool:
        return False

    def others_waiting(self) -> bool:
        return False


@contextmanager
def _held(ledger: Ledger, account: uuid.UUID) -> Iterator[None]:
    """Another transaction (another lane's drain, say) holds the account's row lock."""
    with ledger.owner.connect() as connection, connection.begin():
        connection.execute(
            text("SELECT 1 FROM accounts WHERE id = :id FOR NO KEY UPDATE"), {"id": account}
        )
        yield


@contextmanager
def _held_for(ledger: Ledger, account: uuid.UUID, seconds: float) -> Iterator[None]:
    """Another transaction holds the account's lock for `seconds` from entering this."""
    locked = threading.Event()

    def hold() -> None:
        with _held(ledger, account):
            locked.set()
            time.sleep(seconds)

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(10)
    try:
        yield
    finally:
        holder.join()


def _statuses(ledger: Ledger, ids: list[uuid.UUID]) -> list[str]:
    with ledger.owner.connect() as connection:
        found = dict(
            connection.execute(
                text("SELECT id, status FROM transfers WHERE id = ANY(:ids)"), {"ids": ids}
            ).all()
        )
    return [found[i] for i in ids]


def _debits_in_ledger_order(ledger: Ledger) -> dict[uuid.UUID, list[int]]:
    """Per source account, the `seq` of the transfers it paid, in its entries' order."""
    debits: dict[uuid.UUID, list[int]] = {}
    with ledger.owner.connect() as connection:
        for account, seq in connection.execute(
            text(
                "SELECT e.account_id, t.seq FROM ledger_entries e"
                " JOIN transfers t ON t.id = e.transfer_id"
                " WHERE e.amount < 0 ORDER BY e.account_id, e.sequence"
            )
        ):
            debits.setdefault(account, []).append(seq)
    return debits


def test_a_batch_defers_what_needs_an_account_another_drain_holds(ledger):
    first, second = accounts_in_lane(LANES, 0, 2)
    busy, other, third = accounts_in_lane(LANES, 1, 3)
    add_accounts(ledger, [first, second, busy, other, third])
    to_busy = add_transfers(ledger, first, busy, 1)[0]
    elsewhere = add_transfers(ledger, second, other, 1)[0]
    behind = add_transfers(ledger, first, third, 1)[0]  # FIFO: waits behind `to_busy`
    # Waits behind it too, whatever its own accounts: waiting, not deferred (a unit is
    # deferred only if it could otherwise have been applied now).
    behind_to_busy = add_transfers(ledger, first, busy, 1)[0]
    units = _units(ledger)

    with _held(ledger, busy), units() as uow:
        result = engine.apply_next_batch(
            uow=uow, slots=LANES.slots(0), batch_size=100, limits=LIMITS, skip_locked_from=1
        )
    assert result.succeeded == [elsewhere]
    assert (result.deferred, result.waiting, result.deferred_oldest) == (1, 2, True)
    assert result.more
    assert _statuses(ledger, [to_busy, elsewhere, behind, behind_to_busy]) == [
        "pending",
        "succeeded",
        "pending",
        "pending",
    ]

    with units() as uow:
        result = engine.apply_next_batch(
            uow=uow, slots=LANES.slots(0), batch_size=100, limits=LIMITS, skip_locked_from=1
        )
    assert result.succeeded == [to_busy, behind, behind_to_busy]
    assert (result.deferred, result.more) == (0, False)
    assert _debits_in_ledger_order(ledger)[first] == sorted(_debits_in_ledger_order(ledger)[first])


def test_after_deferring_the_oldest_transfer_the_drain_waits_for_the_lock(ledger):
    (payer,) = accounts_in_lane(LANES, 0, 1)
    (busy,) = accounts_in_lane(LANES, 1, 1)
    add_accounts(ledger, [payer, busy])
    ids = add_transfers(ledger, payer, busy, 3)
    opened: list[int] = []
    with _held_for(ledger, busy, 1.0):
        started = time.monotonic()
        applied = draining.drain_lane(
            lane=0,
            lanes=LANES,
            units=_units(ledger, opened),
            claims=Claims(),
            policy=draining.DrainPolicy(batch_size=100, limits=LIMITS, skip_locked_from=1),
        )
        waited = time.monotonic() - started

    assert applied == 3
    assert _statuses(ledger, ids) == ["succeeded"] * 3
    # One batch that could apply nothing (it deferred everything, holding no account),
    # then one that waited for the lock and applied all three: no spinning meanwhile.
    assert len(opened) == 2
    assert waited >= 0.5


def test_two_lanes_sharing_every_account_drain_at_once_without_deadlock_in_fifo_order(ledger):
    accounts = accounts_in_lane(LANES, 0, 4) + accounts_in_lane(LANES, 1, 4)
    add_accounts(ledger, accounts)
    rng = random.Random(7)
    ids = []
    for _ in range(240):
        source, destination = rng.sample(accounts, 2)
        ids += add_transfers(ledger, source, destination, 1)
    errors: list[BaseException] = []
    deferred: list[int] = []

    def drain(lane: int) -> Callable[[], None]:
        def run() -> None:
            try:
                for _ in range(200):
                    draining.drain_lane(
                        lane=lane,
                        lanes=LANES,
                        units=_units(ledger),
                        claims=Claims(),
                        # Small batches: many transactions, each holding a few of the
                        # eight accounts, so the two lanes keep running into each other.
                        policy=draining.DrainPolicy(
                            batch_size=5, limits=LIMITS, skip_locked_from=1
                        ),
                        report=lambda result: deferred.append(result.deferred),
                    )
                    if "pending" not in _statuses(ledger, ids):
                        return
            except BaseException as exc:  # a deadlock would surface here
                errors.append(exc)

        return run

    threads = [threading.Thread(target=drain(lane)) for lane in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert _statuses(ledger, ids) == ["succeeded"] * len(ids)
    for account, seqs in _debits_in_ledger_order(ledger).items():
        assert seqs == sorted(seqs), f"account {account} paid out of order"
    print(f"transfers deferred along the way: {sum(deferred)}")


def test_a_batch_smaller_than_the_threshold_waits_for_the_lock(ledger):
    (payer,) = accounts_in_lane(LANES, 0, 1)
    (busy,) = accounts_in_lane(LANES, 1, 1)
    add_accounts(ledger, [payer, busy])
    ids = add_transfers(ledger, payer, busy, 3)
    with _held_for(ledger, busy, 0.5), _units(ledger)() as uow:
        started = time.monotonic()
        result = engine.apply_next_batch(
            uow=uow, slots=LANES.slots(0), batch_size=100, limits=LIMITS, skip_locked_from=4
        )
        waited = time.monotonic() - started
    assert (result.succeeded, result.deferred) == (ids, 0)
    assert waited >= 0.3
