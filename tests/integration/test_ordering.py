"""Per source account, transfers are applied in exactly the order they were accepted."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from domain.models import LedgerEntry, Transfer
from tests.factories import (
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
)


def test_fifty_transfers_apply_in_acceptance_order_with_failures_between(
    client, session_factory, drain_pending, settings, monkeypatch
):
    # Small batches, so the order must also hold across batch boundaries.
    monkeypatch.setattr(settings, "drain_batch_size", 7)
    operator = operator_headers(client, session_factory)
    alice, bob = register_and_login(client), register_and_login(client)
    a, b = open_account(client, alice), open_account(client, bob)
    post_deposit(client, operator, a["id"], 1_000)
    drain_pending()

    # Amounts chosen so the balance runs out and some later, smaller ones still fit.
    amounts = [(i % 7 + 1) * 10 for i in range(50)]
    ids = []
    for amount in amounts:
        response = post_transfer(client, alice, a["id"], b["number"], amount)
        assert response.status_code == 202
        ids.append(uuid.UUID(response.json()["id"]))
    drain_pending()

    balance, expected = 1_000, []
    for amount in amounts:  # the order a correct engine must follow
        if amount <= balance:
            balance -= amount
            expected.append("succeeded")
        else:
            expected.append("failed")
    assert "failed" in expected and expected.count("succeeded") > expected.index("failed")

    with session_factory() as session:
        transfers = {t.id: t for t in session.scalars(select(Transfer).where(Transfer.id.in_(ids)))}
        assert [transfers[i].status for i in ids] == expected
        debits = session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.account_id == uuid.UUID(a["id"]), LedgerEntry.amount < 0)
            .order_by(LedgerEntry.sequence)
        ).all()
    applied_order = [e.transfer_id for e in debits]
    assert applied_order == [
        i for i, status in zip(ids, expected, strict=True) if status == "succeeded"
    ]
    assert client.get(f"/v1/accounts/{a['id']}", headers=alice).json()["balance"] == balance
