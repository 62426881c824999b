"""Lanes agree between Python and PostgreSQL; a transfer that breaks an invariant is quarantined."""

from __future__ import annotations

import uuid

from sqlalchemy import select, text

from domain.lanes import SLOTS, slot_of
from domain.models import AuditEvent, LedgerEntry, Transfer
from tests.factories import (
    lane_of,
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
)
from workers.tasks import drain

POISON_AMOUNT = 4242


def test_python_and_postgres_agree_on_every_lane(session_factory):
    ids = [uuid.uuid4() for _ in range(500)]
    with session_factory() as session:
        lanes = session.execute(
            text("SELECT settle_lane(id) FROM unnest(CAST(:ids AS uuid[])) AS id"),
            {"ids": [str(i) for i in ids]},
        ).scalars()
        assert list(lanes) == [slot_of(i) for i in ids]
    assert {slot_of(i) for i in ids} == set(range(SLOTS))


def test_a_transfer_a_trigger_always_rejects_is_quarantined_and_the_lane_goes_on(
    client, session_factory, owner_session_factory, drain_pending
):
    operator = operator_headers(client, session_factory)
    alice = register_and_login(client)
    source = open_account(client, alice)
    sink = open_account(client, register_and_login(client))
    post_deposit(client, operator, source["id"], 100_000)
    drain_pending()
    amounts = [100, POISON_AMOUNT, 200, 300]
    ids = [
        post_transfer(client, alice, source["id"], sink["number"], a).json()["id"] for a in amounts
    ]

    with owner_session_factory() as session, session.begin():  # DDL: the owner's
        session.execute(
            text(
                f"""
                CREATE FUNCTION test_poison() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    RAISE EXCEPTION 'poisoned entry' USING ERRCODE = 'check_violation';
                END $$;
                CREATE TRIGGER test_poison BEFORE INSERT ON ledger_entries FOR EACH ROW
                    WHEN (abs(NEW.amount) = {POISON_AMOUNT}) EXECUTE FUNCTION test_poison();
                """
            )
        )
    try:
        drain(lane_of(uuid.UUID(source["id"])))
    finally:
        with owner_session_factory() as session, session.begin():
            session.execute(text("DROP TRIGGER test_poison ON ledger_entries"))
            session.execute(text("DROP FUNCTION test_poison()"))

    with session_factory() as session:
        transfers = {
            t.amount: t
            for t in session.scalars(
                select(Transfer).where(Transfer.id.in_([uuid.UUID(i) for i in ids]))
            )
        }
        assert [transfers[a].status for a in amounts] == [
            "succeeded",
            "failed",
            "succeeded",
            "succeeded",
        ]
        assert transfers[POISON_AMOUNT].failure_code == "internal_error"
        debits = session.scalars(
            select(LedgerEntry.amount)
            .where(LedgerEntry.account_id == uuid.UUID(source["id"]), LedgerEntry.amount < 0)
            .order_by(LedgerEntry.sequence)
        ).all()
        assert debits == [-100, -200, -300]  # order kept around the quarantined one
        audited = session.scalars(
            select(AuditEvent).where(AuditEvent.subject_id == str(transfers[POISON_AMOUNT].id))
        ).all()
        assert any(
            e.event_type == "transfer.failed" and e.data["failure_code"] == "internal_error"
            for e in audited
        )
    metrics = client.get("/metrics").text
    [line] = [m for m in metrics.splitlines() if m.startswith("settle_transfers_quarantined ")]
    assert float(line.split()[1]) >= 1
