"""`settle webhooks listen` prints one readable line for every kind of event."""

from __future__ import annotations

import json

from settle.receiver import describe


def _body(event: dict[str, object]) -> bytes:
    return json.dumps(event).encode()


def test_a_transfer_event_names_the_transfer_and_its_amount() -> None:
    line = describe(
        _body(
            {
                "id": "evt_1",
                "type": "transfer.succeeded",
                "data": {
                    "transfer": {
                        "id": "t1",
                        "amount": 500,
                        "currency": "USD",
                        "status": "succeeded",
                    },
                    "entries": [],
                },
            }
        )
    )
    assert line == "transfer.succeeded evt_1 transfer t1 500 USD succeeded"


def test_a_balance_event_names_the_account_the_move_and_the_threshold() -> None:
    line = describe(
        _body(
            {
                "id": "evt_2",
                "type": "balance.below",
                "data": {
                    "account_id": "a1",
                    "balance_before": 6000,
                    "balance": 4500,
                    "currency": "USD",
                    "threshold": 5000,
                },
            }
        )
    )
    assert line == "balance.below evt_2 account a1 balance 6000 -> 4500 USD (threshold 5000)"


def test_a_batch_event_names_the_batch_and_its_tally() -> None:
    line = describe(
        _body(
            {
                "id": "evt_3",
                "type": "batch.completed",
                "data": {"id": "b1", "item_count": 3, "succeeded": 2, "failed": 1, "canceled": 0},
            }
        )
    )
    assert line == ("batch.completed evt_3 batch b1 3 transfers: 2 succeeded, 1 failed, 0 canceled")


def test_a_ping_and_garbage() -> None:
    assert describe(_body({"id": "msg_3", "type": "ping", "data": {"message": "hi"}})) == (
        "ping msg_3"
    )
    assert describe(b"[1, 2]") == "6 bytes that are not a Settle event"
    assert describe(b"not json") == "8 bytes that are not a Settle event"
