"""The engine under concurrent drains, in threads, on the real database."""

from __future__ import annotations

import threading
import uuid

from sqlalchemy import func, select

from domain.models import Account, LedgerEntry, Transfer
from tests.factories import (
    lane_of,
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
)
from workers.tasks import drain


def _run_in_threads(targets):
    errors = []
    barrier = threading.Barrier(len(targets))

    def wrap(fn):
        try:
            barrier.wait()
            fn()
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(fn,)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_opposite_drains_in_threads_complete_without_deadlock(
    client, session_factory, drain_pending
):
    operator = operator_headers(client, session_factory)
    alice, bob = register_and_login(client), register_and_login(client)
    a, b = open_account(client, alice), open_account(client, bob)
    post_deposit(client, operator, a["id"], 1_000_000)
    post_deposit(client, operator, b["id"], 1_000_000)
    drain_pending()
    for i in range(300):
        if i % 2:
            assert post_transfer(client, alice, a["id"], b["number"], 7).status_code == 202
        else:
            assert post_transfer(client, bob, b["id"], a["number"], 5).status_code == 202

    a_id, b_id = uuid.UUID(a["id"]), uuid.UUID(b["id"])
    errors = _run_in_threads([lambda: drain(lane_of(a_id)), lambda: drain(lane_of(b_id))] * 3)
    assert errors == []
    drain_pending()  # a drain hands a long lane on after its time slice: finish it
    with session_factory() as session:
        pending = session.scalar(
            select(func.count())
            .select_from(Transfer)
            .where(Transfer.source_account_id.in_([a_id, b_id]), Transfer.status == "pending")
        )
        assert pending == 0
        balance_a = session.get(Account, a_id).balance
        assert balance_a == 1_000_000 - 150 * 7 + 150 * 5
        ledger_a = session.scalar(
            select(func.sum(LedgerEntry.amount)).where(LedgerEntry.account_id == a_id)
        )
        assert ledger_a == balance_a


def test_duplicate_concurrent_drains_apply_each_transfer_once(
    client, session_factory, drain_pending
):
    operator = operator_headers(client, session_factory)
    alice, bob = register_and_login(client), register_and_login(client)
    a, b = open_account(client, alice), open_account(client, bob)
    post_deposit(client, operator, a["id"], 1_000)
    drain_pending()
    ids = [post_transfer(client, alice, a["id"], b["number"], 100).json()["id"] for _ in range(15)]

    a_id = uuid.UUID(a["id"])
    assert _run_in_threads([lambda: drain(lane_of(a_id))] * 4) == []
    with session_factory() as session:
        statuses = [session.get(Transfer, uuid.UUID(i)).status for i in ids]
        assert statuses == ["succeeded"] * 10 + ["failed"] * 5  # acceptance order kept
        entries = session.scalar(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.transfer_id.in_([uuid.UUID(i) for i in ids]))
        )
        assert entries == 20
