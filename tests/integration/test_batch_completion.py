"""`batch.completed`: exactly once per batch, when its last transfer is terminal.

Finished by the engine (over several lanes, or in one atomic transaction) or by a
cancel; concurrent lanes finishing the last items; and the database's guard on the
batch row's count.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from domain.services import batch_completion
from tests.factories import (
    accounts_in_two_lanes,
    idem,
    lane_of,
    open_account,
    operator_headers,
    post_deposit,
    register_and_login,
)
from workers.tasks import drain


def _item(source: dict[str, Any], sink: dict[str, Any], amount: int) -> dict[str, Any]:
    return {
        "source_account_id": source["id"],
        "destination_account_number": sink["number"],
        "amount": amount,
        "currency": "USD",
    }


def _sources_in_two_lanes(client, session_factory, drain_pending, amount: int):
    """A customer with two funded accounts drained by different lanes."""
    operator = operator_headers(client, session_factory)
    owner = register_and_login(client)
    first, second = accounts_in_two_lanes(client, owner)
    for account in (first, second):
        post_deposit(client, operator, account["id"], amount)
    drain_pending()
    return owner, first, second


def _batch(client, owner, items, *, atomic: bool = False, metadata=None) -> dict[str, Any]:
    body: dict[str, Any] = {"atomic": atomic, "transfers": items}
    if metadata:
        body["metadata"] = metadata
    response = client.post("/v1/transfer-batches", json=body, headers={**owner, **idem()})
    assert response.status_code == 202, response.text
    return response.json()


def _completions(client, headers) -> list[dict[str, Any]]:
    response = client.get(
        "/v1/events", params={"types": "batch.completed", "limit": 500}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_the_last_lane_to_finish_an_item_completes_the_batch_once(
    client, session_factory, drain_pending
):
    owner, first, second = _sources_in_two_lanes(client, session_factory, drain_pending, 1_000)
    sink_owner = register_and_login(client)
    sink = open_account(client, sink_owner)
    batch = _batch(
        client,
        owner,
        [_item(first, sink, 300), _item(second, sink, 5_000), _item(second, sink, 200)],
        metadata={"payroll": "2026-11"},
    )

    assert drain(lane_of(uuid.UUID(first["id"]))) == 1
    assert _completions(client, owner) == []  # two of three still pending
    drain(lane_of(uuid.UUID(second["id"])))
    drain_pending()  # nothing left: draining again must not complete it twice

    [event] = _completions(client, owner)
    data = event["data"]
    assert data["id"] == batch["id"] and data["atomic"] is False
    assert (data["item_count"], data["succeeded"], data["failed"], data["canceled"]) == (3, 2, 1, 0)
    assert data["metadata"] == {"payroll": "2026-11"}
    assert data["completed_at"].endswith("Z") and data["created_at"].endswith("Z")
    # Only the initiator hears of the batch; the payee has each transfer's event.
    assert _completions(client, sink_owner) == []
    done = client.get(f"/v1/transfer-batches/{batch['id']}", headers=owner).json()
    assert done["status"] == "completed"
    # The same event is in the unfiltered stream, after the transfers' own events.
    stream = client.get("/v1/events", params={"limit": 500}, headers=owner).json()["data"]
    assert stream[-1]["type"] == "batch.completed"


def test_an_atomic_batch_completes_in_its_one_transaction(client, session_factory, drain_pending):
    owner, first, second = _sources_in_two_lanes(client, session_factory, drain_pending, 1_000)
    sink = open_account(client, register_and_login(client))
    refused = _batch(
        client, owner, [_item(first, sink, 100), _item(second, sink, 9_000)], atomic=True
    )
    drain_pending()
    [event] = _completions(client, owner)
    assert event["data"]["id"] == refused["id"] and event["data"]["atomic"] is True
    assert (event["data"]["succeeded"], event["data"]["failed"]) == (0, 2)


def test_canceling_the_last_pending_item_completes_the_batch(
    client, session_factory, drain_pending
):
    owner, first, second = _sources_in_two_lanes(client, session_factory, drain_pending, 1_000)
    sink = open_account(client, register_and_login(client))
    batch = _batch(client, owner, [_item(first, sink, 100), _item(second, sink, 100)])
    drain(lane_of(uuid.UUID(first["id"])))
    last = batch["transfers"][1]["id"]
    canceled = client.post(f"/v1/transfers/{last}/cancel", headers=owner)
    assert canceled.status_code == 200, canceled.text
    [event] = _completions(client, owner)
    assert (event["data"]["succeeded"], event["data"]["canceled"]) == (1, 1)
    drain_pending()
    assert len(_completions(client, owner)) == 1


def test_lanes_draining_at_once_complete_each_batch_exactly_once(
    client, session_factory, drain_pending, settings
):
    owner, first, second = _sources_in_two_lanes(client, session_factory, drain_pending, 100_000)
    third = open_account(client, owner)
    post_deposit(client, operator_headers(client, session_factory), third["id"], 100_000)
    drain_pending()
    sink = open_account(client, register_and_login(client))
    batches = [
        _batch(client, owner, [_item(source, sink, 10) for source in (first, second, third)] * 3)
        for _ in range(12)
    ]
    lanes = sorted({lane_of(uuid.UUID(a["id"])) for a in (first, second, third)})
    threads = [threading.Thread(target=drain, args=(lane,)) for lane in lanes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    drain_pending()
    completed = Counter(e["data"]["id"] for e in _completions(client, owner))
    assert completed == Counter({b["id"]: 1 for b in batches})


def _pending_batch(client, session_factory, drain_pending) -> tuple[uuid.UUID, list[uuid.UUID]]:
    owner, first, second = _sources_in_two_lanes(client, session_factory, drain_pending, 1_000)
    sink = open_account(client, register_and_login(client))
    batch = _batch(client, owner, [_item(first, sink, 1), _item(second, sink, 1)])
    return uuid.UUID(batch["id"]), [uuid.UUID(t["id"]) for t in batch["transfers"]]


def _finish(session: Session, transfer_id: uuid.UUID, batch_id: uuid.UUID) -> list[Any]:
    """What a transaction finishing one item does: the item terminal, then the count."""
    session.execute(
        text(
            "UPDATE transfers SET status = 'failed', failure_code = 'insufficient_funds',"
            " completed_at = now() WHERE id = :id AND status = 'pending'"
        ),
        {"id": transfer_id},
    )
    return batch_completion.finished(session, [batch_id], datetime.now(UTC))


def test_two_transactions_finishing_the_last_items_together_complete_it_once(
    client, session_factory: sessionmaker[Session], drain_pending
):
    """The interleaving that loses the event without the batch row's lock: each
    transaction finishes one of the last two items while the other's is uncommitted."""
    batch_id, (one, two) = _pending_batch(client, session_factory, drain_pending)
    results: dict[str, list[Any]] = {}
    with session_factory() as first:
        results["first"] = _finish(first, one, batch_id)  # holds the batch row's lock

        def second_transaction() -> None:
            with session_factory() as second:
                second.execute(text("SET LOCAL lock_timeout = '20s'"))
                results["second"] = _finish(second, two, batch_id)  # waits for `first`
                second.commit()

        thread = threading.Thread(target=second_transaction)
        thread.start()
        thread.join(timeout=0.5)
        assert thread.is_alive(), "the second transaction did not wait for the batch row"
        first.commit()
    thread.join(timeout=20)
    assert results["first"] == []
    [row] = results["second"]
    assert row["type"] == "batch.completed"
    assert row["payload"]["data"]["id"] == str(batch_id) and row["payload"]["data"]["failed"] == 2


@pytest.mark.parametrize(
    "change",
    [
        "finished_items = item_count + 1",
        "finished_items = 2, completed_at = NULL",
        "item_count = 3",
        'metadata = \'{"x": "y"}\'',
    ],
)
def test_the_database_keeps_the_count_honest(
    client, session_factory: sessionmaker[Session], drain_pending, change: str
):
    batch_id, _ = _pending_batch(client, session_factory, drain_pending)
    with session_factory() as session, pytest.raises(DBAPIError):
        session.execute(
            text(f"UPDATE transfer_batches SET {change} WHERE id = :id"),
            {"id": batch_id},
        )
        session.flush()


def test_the_migration_counts_the_batches_accepted_before_it(services) -> None:
    """0012 on a database that already has batches: a finished one is counted and
    completed (never announced), an unfinished one counted so far; and it goes back."""
    from alembic import command
    from sqlalchemy import create_engine

    from domain.migrate import alembic_config
    from settle.harness import migrated_database
    from tests.sql_ledger import add_customer

    with migrated_database(services.server_url, "settle_test_0012") as (_, roles):
        config = alembic_config(roles.owner_url)
        command.downgrade(config, "0011")
        owner = create_engine(roles.owner_url)
        user, done, open_ = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        accounts = [uuid.uuid4(), uuid.uuid4()]
        with owner.begin() as connection:
            add_customer(connection, user)
            for number, account in enumerate(accounts):
                connection.execute(
                    text(
                        "INSERT INTO accounts (id, number, kind, currency, status, owner_id)"
                        " VALUES (:id, :number, 'customer', 'USD', 'active', :owner)"
                    ),
                    {"id": account, "number": f"10000000000{number}", "owner": user},
                )
            for batch in (done, open_):
                connection.execute(
                    text(
                        "INSERT INTO transfer_batches (id, atomic, initiated_by, item_count,"
                        " created_at) VALUES (:id, false, :user, 2, now())"
                    ),
                    {"id": batch, "user": user},
                )
            items = [(done, 0, "failed"), (done, 1, "canceled"), (open_, 0, "failed")]
            items.append((open_, 1, "pending"))
            for batch, index, status in items:
                connection.execute(
                    text(
                        "INSERT INTO transfers (id, kind, status, source_account_id,"
                        " destination_account_id, amount, currency, initiated_by, lane,"
                        " batch_id, batch_index, failure_code, completed_at, created_at)"
                        " VALUES (:id, 'transfer', :status, :a, :b, 1, 'USD', :user, 0,"
                        " :batch, :index,"
                        " CASE WHEN :status = 'failed' THEN 'insufficient_funds' END,"
                        " CASE WHEN :status = 'pending' THEN NULL ELSE now() END, now())"
                    ),
                    {
                        "id": uuid.uuid4(),
                        "status": status,
                        "a": accounts[0],
                        "b": accounts[1],
                        "user": user,
                        "batch": batch,
                        "index": index,
                    },
                )
        command.upgrade(config, "head")
        with owner.begin() as connection:
            counted = {
                row.id: (row.finished_items, row.completed_at is not None)
                for row in connection.execute(
                    text("SELECT id, finished_items, completed_at FROM transfer_batches")
                )
            }
            assert not connection.execute(text("SELECT count(*) FROM events")).scalar()
        assert counted == {done: (2, True), open_: (1, False)}
        command.downgrade(config, "0011")
        command.upgrade(config, "head")
        owner.dispose()
