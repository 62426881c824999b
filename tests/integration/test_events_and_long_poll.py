"""The event stream under concurrent transfers, and long-polling latency."""

from __future__ import annotations

import threading
import time
import uuid

from sqlalchemy import select

from domain.models import Event, Transfer
from tests.factories import (
    lane_of,
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
)
from workers.tasks import drain


def test_event_stream_pages_every_event_once_in_order_while_transfers_commit(
    client, session_factory, drain_pending
):
    operator = operator_headers(client, session_factory)
    alice = register_and_login(client)
    sources = [open_account(client, alice) for _ in range(4)]
    sink = open_account(client, register_and_login(client))
    for account in sources:
        post_deposit(client, operator, account["id"], 100_000)
    drain_pending()
    start = None
    while True:  # to the end of the stream, as a consumer starting now would
        page = client.get("/v1/events", params={"cursor": start}, headers=alice).json()
        if not page["data"]:
            break
        start = page["next_cursor"]
    ids = [
        post_transfer(client, alice, s["id"], sink["number"], 10 + i).json()["id"]
        for i in range(30)
        for s in sources
    ]

    seen: list[dict] = []
    done = threading.Event()

    def poll():
        # Events appear once every older writing transaction in the cluster has
        # finished, so after the drains end, keep polling until all have arrived.
        cursor = start
        deadline = None
        while len(seen) < len(ids):
            if done.is_set():
                deadline = deadline or time.monotonic() + 30
                if time.monotonic() > deadline:
                    return
            page = client.get(
                "/v1/events", params={"after": cursor, "limit": 7}, headers=alice
            ).json()
            seen.extend(page["data"])
            cursor = page["next_cursor"]
        # One more page: nothing beyond the expected events may show up.
        seen.extend(
            client.get("/v1/events", params={"cursor": cursor}, headers=alice).json()["data"]
        )

    poller = threading.Thread(target=poll)
    poller.start()
    lanes = sorted({lane_of(uuid.UUID(s["id"])) for s in sources})
    # Two threads per lane: concurrent, overlapping drains and commits.
    drains = [threading.Thread(target=drain, args=(lane,)) for lane in lanes * 2]
    for thread in drains:
        thread.start()
    for thread in drains:
        thread.join()
    drain_pending()  # a drain hands a long lane on after its time slice: finish it
    done.set()
    poller.join(timeout=60)

    event_ids = [e["id"] for e in seen]
    assert len(event_ids) == len(set(event_ids)) == len(ids)  # exactly once, none missing
    assert {e["data"]["transfer"]["id"] for e in seen} == set(ids)
    with session_factory() as session:
        order = {
            e.id: (e.xid, e.seq)
            for e in session.scalars(select(Event).where(Event.id.in_(event_ids)))
        }
    assert [order[i] for i in event_ids] == sorted(order.values())  # in commit-safe order


def test_events_cursor_validation_and_isolation(client):
    alice, bob = register_and_login(client), register_and_login(client)
    assert client.get("/v1/events", params={"after": "abc"}, headers=alice).status_code == 400
    empty = client.get("/v1/events", headers=bob).json()
    assert empty == {"data": [], "next_cursor": None}


def test_long_poll_returns_within_100ms_of_the_transfer_becoming_terminal(
    client, session_factory, drain_pending
):
    operator = operator_headers(client, session_factory)
    account = open_account(client, register_and_login(client))
    deposit = post_deposit(client, operator, account["id"], 500)
    result: dict = {}

    def wait():
        response = client.get(
            f"/v1/transfers/{deposit['id']}", params={"wait": 20}, headers=operator
        )
        result["body"], result["returned_at"] = response.json(), time.monotonic()

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)  # the request is parked, holding no database connection
    assert "body" not in result
    drain_pending()
    committed_at = time.monotonic()
    waiter.join(timeout=25)
    latency = result["returned_at"] - committed_at
    assert result["body"]["status"] == "succeeded"
    assert latency < 0.25, f"long-poll answered {latency * 1000:.0f} ms after commit"
    print(f"long-poll latency after commit: {latency * 1000:.0f} ms")
    with session_factory() as session:
        assert session.get(Transfer, uuid.UUID(deposit["id"])).status == "succeeded"


def test_concurrent_long_polls_are_capped_per_user(settings, session_factory):
    from fastapi.testclient import TestClient

    from gateway.app import create_app

    capped = settings.model_copy(
        update={"max_waits_per_user": 2, "redis_prefix": f"{settings.redis_prefix}capped:"}
    )
    with TestClient(create_app(capped)) as client:
        operator = operator_headers(client, session_factory)
        account = open_account(client, register_and_login(client))
        deposit = post_deposit(client, operator, account["id"], 5)  # stays pending: no drain
        statuses: list[int] = []

        def wait():
            response = client.get(
                f"/v1/transfers/{deposit['id']}", params={"wait": 2}, headers=operator
            )
            statuses.append(response.status_code)

        waiters = [threading.Thread(target=wait) for _ in range(2)]
        for waiter in waiters:
            waiter.start()
        time.sleep(0.5)  # both are parked now
        third = client.get(f"/v1/transfers/{deposit['id']}", params={"wait": 2}, headers=operator)
        assert third.status_code == 429
        assert third.json()["code"] == "too_many_waits"
        assert third.headers["Retry-After"] == "1"
        # Without ?wait the cap does not apply.
        assert client.get(f"/v1/transfers/{deposit['id']}", headers=operator).status_code == 200
        for waiter in waiters:
            waiter.join()
        assert statuses == [200, 200]
        # A finished wait frees its slot.
        again = client.get(f"/v1/transfers/{deposit['id']}", params={"wait": 1}, headers=operator)
        assert again.status_code == 200
