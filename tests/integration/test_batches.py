"""POST /v1/transfer-batches: validation by index, idempotency, atomic all-or-nothing, FIFO."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from domain.models import LedgerEntry, Transfer
from tests.factories import (
    accounts_in_two_lanes,
    idem,
    lane_of,
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
)
from workers.tasks import drain


def _item(source, destination, amount, **extra):
    return {
        "source_account_id": source["id"],
        "destination_account_number": destination["number"],
        "amount": amount,
        "currency": "USD",
        **extra,
    }


def _funded(client, session_factory, drain_pending, amount):
    operator = operator_headers(client, session_factory)
    owner = register_and_login(client)
    account = open_account(client, owner)
    post_deposit(client, operator, account["id"], amount)
    drain_pending()
    return owner, account


def _count_transfers(session_factory):
    with session_factory() as session:
        return session.scalar(select(func.count()).select_from(Transfer))


def test_invalid_items_are_named_by_index_and_nothing_is_accepted(
    client, session_factory, drain_pending
):
    owner, source = _funded(client, session_factory, drain_pending, 10_000)
    sink = open_account(client, register_and_login(client))
    before = _count_transfers(session_factory)

    shape = client.post(
        "/v1/transfer-batches",
        json={"transfers": [_item(source, sink, 10), _item(source, sink, 12.5)]},
        headers={**owner, **idem()},
    )
    assert shape.status_code == 422
    [error] = shape.json()["errors"]
    assert error["index"] == 1 and error["code"] == "validation_error"
    assert error["detail"].startswith("amount")

    unknown = {
        "source_account_id": source["id"],
        "destination_account_number": "000000000000",  # well-formed, unknown
        "amount": 5,
        "currency": "USD",
    }
    refused = client.post(
        "/v1/transfer-batches",
        json={
            "transfers": [
                _item(source, sink, 10),
                _item(source, sink, 20),
                unknown,
                _item(source, source, 5),
            ]
        },
        headers={**owner, **idem()},
    )
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["code"] == "batch_rejected"
    assert [(e["index"], e["code"]) for e in body["errors"]] == [
        (2, "destination_not_found"),
        (3, "same_account"),
    ]
    for empty in ([], [_item(source, sink, 1)] * 1001):
        response = client.post(
            "/v1/transfer-batches", json={"transfers": empty}, headers={**owner, **idem()}
        )
        assert response.status_code == 422
    assert _count_transfers(session_factory) == before  # nothing accepted


def test_batch_is_idempotent_and_non_atomic_items_settle_independently(
    client, session_factory, drain_pending
):
    owner, source = _funded(client, session_factory, drain_pending, 1_000)
    sink = open_account(client, register_and_login(client))
    body = {
        "transfers": [_item(source, sink, 600), _item(source, sink, 600), _item(source, sink, 300)]
    }
    key = idem()
    first = client.post("/v1/transfer-batches", json=body, headers={**owner, **key})
    assert first.status_code == 202, first.text
    batch = first.json()
    assert first.headers["Location"] == f"/v1/transfer-batches/{batch['id']}"
    assert batch["status"] == "pending" and batch["atomic"] is False
    assert [t["amount"] for t in batch["transfers"]] == [600, 600, 300]

    replay = client.post("/v1/transfer-batches", json=body, headers={**owner, **key})
    assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == batch
    changed = {"transfers": body["transfers"][:2]}
    assert (
        client.post("/v1/transfer-batches", json=changed, headers={**owner, **key}).status_code
        == 422
    )

    drain_pending()
    done = client.get(f"/v1/transfer-batches/{batch['id']}", params={"wait": 5}, headers=owner)
    assert done.status_code == 200
    assert done.json()["status"] == "completed"
    assert [(t["status"], t["failure_code"]) for t in done.json()["transfers"]] == [
        ("succeeded", None),
        ("failed", "insufficient_funds"),
        ("succeeded", None),
    ]
    # Another customer cannot see it.
    stranger = register_and_login(client)
    assert client.get(f"/v1/transfer-batches/{batch['id']}", headers=stranger).status_code == 404


def test_atomic_batch_is_all_or_nothing(client, session_factory, drain_pending):
    owner, source = _funded(client, session_factory, drain_pending, 1_000)
    sink, other = (open_account(client, register_and_login(client)) for _ in range(2))
    failing = {
        "atomic": True,
        "transfers": [
            _item(source, sink, 400),
            _item(source, other, 700),
            _item(source, sink, 100),
        ],
    }
    refused = client.post("/v1/transfer-batches", json=failing, headers={**owner, **idem()}).json()
    passing = {"atomic": True, "transfers": [_item(source, sink, 400), _item(source, other, 500)]}
    applied = client.post("/v1/transfer-batches", json=passing, headers={**owner, **idem()}).json()
    drain_pending()

    refused = client.get(f"/v1/transfer-batches/{refused['id']}", headers=owner).json()
    assert [t["failure_code"] for t in refused["transfers"]] == [
        "batch_failed",
        "insufficient_funds",  # 400 + 700 > 1,000: this item is the culprit
        "batch_failed",
    ]
    applied = client.get(f"/v1/transfer-batches/{applied['id']}", headers=owner).json()
    assert [t["status"] for t in applied["transfers"]] == ["succeeded", "succeeded"]
    assert len({t["completed_at"] for t in applied["transfers"]}) == 1  # one transaction
    with session_factory() as session:
        refused_ids = [uuid.UUID(t["id"]) for t in refused["transfers"]]
        assert not session.scalar(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.transfer_id.in_(refused_ids))
        )
    balance = client.get(f"/v1/accounts/{source['id']}", headers=owner).json()["balance"]
    assert balance == 100


def test_atomic_batch_waits_for_older_transfers_of_its_sources_in_other_lanes(
    client, session_factory, drain_pending
):
    operator = operator_headers(client, session_factory)
    owner = register_and_login(client)
    first, second = accounts_in_two_lanes(client, owner)
    for account in (first, second):
        post_deposit(client, operator, account["id"], 1_000)
    drain_pending()
    sink = open_account(client, register_and_login(client))

    older = post_transfer(client, owner, second["id"], sink["number"], 900).json()
    # The batch lives in `first`'s lane but also debits `second`, whose older
    # transfer (in its own lane) must be applied first: then 200 more is too much.
    batch = client.post(
        "/v1/transfer-batches",
        json={"atomic": True, "transfers": [_item(first, sink, 100), _item(second, sink, 200)]},
        headers={**owner, **idem()},
    ).json()
    assert drain(lane_of(uuid.UUID(first["id"]))) == 0  # held back, not applied out of order
    drain(lane_of(uuid.UUID(second["id"])))
    drain(lane_of(uuid.UUID(first["id"])))
    assert client.get(f"/v1/transfers/{older['id']}", headers=owner).json()["status"] == "succeeded"
    items = client.get(f"/v1/transfer-batches/{batch['id']}", headers=owner).json()["transfers"]
    assert [t["failure_code"] for t in items] == ["batch_failed", "insufficient_funds"]
