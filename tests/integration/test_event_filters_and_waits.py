"""GET /v1/events?types=&wait=: filtering by type, and long-polling on notifications."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import event as sa_event

from tests.factories import (
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
    wait_for_events,
)


def _end_cursor(client, headers) -> str | None:
    """The cursor after every event visible now, as a consumer starting now would hold."""
    cursor = None
    while True:
        page = client.get("/v1/events", params={"cursor": cursor}, headers=headers).json()
        if not page["data"]:
            return cursor
        cursor = page["next_cursor"]


def _failed_and_succeeded(client, session_factory, drain_pending) -> tuple[Any, ...]:
    """Alice with one succeeded deposit and one failed transfer (3 events for her)."""
    operator = operator_headers(client, session_factory)
    alice = register_and_login(client)
    account, other = open_account(client, alice), open_account(client, register_and_login(client))
    post_deposit(client, operator, account["id"], 100)
    drain_pending()
    failed = post_transfer(client, alice, account["id"], other["number"], 1_000).json()
    drain_pending()
    ok = post_transfer(client, alice, account["id"], other["number"], 10).json()
    drain_pending()
    wait_for_events(client, alice, 3)
    return alice, account, other, failed, ok


def test_types_returns_only_those_types_and_moves_the_cursor_past_the_rest(
    client, session_factory, drain_pending
):
    alice, account, other, failed, _ = _failed_and_succeeded(client, session_factory, drain_pending)
    only_failed = client.get("/v1/events", params={"types": "transfer.failed"}, headers=alice)
    assert only_failed.status_code == 200, only_failed.text
    [event] = only_failed.json()["data"]
    assert event["type"] == "transfer.failed" and event["data"]["transfer"]["id"] == failed["id"]
    both = client.get(
        "/v1/events", params={"types": "transfer.failed, transfer.succeeded"}, headers=alice
    ).json()
    assert [e["type"] for e in both["data"]] == [
        "transfer.succeeded",
        "transfer.failed",
        "transfer.succeeded",
    ]
    # Nothing of these types: an empty page, but a cursor past what was looked at, so the
    # next read does not scan those events again, and misses nothing newer.
    none = client.get("/v1/events", params={"types": "balance.below"}, headers=alice).json()
    assert none["data"] == [] and none["next_cursor"] is not None
    post_transfer(client, alice, account["id"], other["number"], 5)
    drain_pending()
    wait_for_events(client, alice, 4)
    newer = client.get("/v1/events", params={"cursor": none["next_cursor"]}, headers=alice)
    assert [e["type"] for e in newer.json()["data"]] == ["transfer.succeeded"]
    # A full filtered page stops at its last event, like any page.
    paged = client.get(
        "/v1/events", params={"types": "transfer.succeeded", "limit": 1}, headers=alice
    ).json()
    rest = client.get(
        "/v1/events",
        params={"types": "transfer.succeeded", "after": paged["next_cursor"]},
        headers=alice,
    ).json()
    assert len(paged["data"]) == 1 and len(rest["data"]) == 2


def test_bad_types_and_waits_are_refused_with_what_to_do(client):
    alice = register_and_login(client)
    for params in (
        {"types": "transfer.nope"},
        {"types": "transfer.succeeded,ping"},  # pings are webhook-only
        {"wait": 31},
        {"wait": -1},
        {"wait": "soon"},
        {"types": "x" * 1001},
    ):
        response = client.get("/v1/events", params=params, headers=alice)
        assert response.status_code == 422, (params, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    unknown = client.get("/v1/events", params={"types": "transfer.nope"}, headers=alice).json()
    assert unknown["code"] == "invalid_event_types"
    assert "balance.below" in unknown["detail"]  # names what is accepted
    assert client.get("/v1/events", params={"types": "", "wait": 0}, headers=alice).json() == {
        "data": [],
        "next_cursor": None,
    }
    assert client.get("/v1/events", params={"wait": 1}).status_code == 401


def test_a_long_poll_returns_as_soon_as_a_matching_event_commits(
    client, session_factory, drain_pending
):
    operator = operator_headers(client, session_factory)
    alice = register_and_login(client)
    account, other = open_account(client, alice), open_account(client, register_and_login(client))
    post_deposit(client, operator, account["id"], 1_000)
    drain_pending()
    wait_for_events(client, alice, 1)
    start = _end_cursor(client, alice)
    result: dict[str, Any] = {}

    def wait() -> None:
        response = client.get(
            "/v1/events",
            params={"cursor": start, "types": "transfer.failed", "wait": 20},
            headers=alice,
        )
        result["response"], result["at"] = response, time.monotonic()

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    # An event of another type wakes it, but it keeps waiting for its types.
    post_transfer(client, alice, account["id"], other["number"], 10)
    drain_pending()
    time.sleep(0.5)
    assert "response" not in result
    failed = post_transfer(client, alice, account["id"], other["number"], 5_000).json()
    drain_pending()
    committed = time.monotonic()
    waiter.join(timeout=25)
    response = result["response"]
    assert response.status_code == 200, response.text
    [event] = response.json()["data"]
    assert event["type"] == "transfer.failed" and event["data"]["transfer"]["id"] == failed["id"]
    latency = result["at"] - committed
    assert latency < 0.5, f"answered {latency * 1000:.0f} ms after commit"
    # The cursor it returns is after both events: nothing comes again.
    after = client.get(
        "/v1/events", params={"cursor": response.json()["next_cursor"]}, headers=alice
    )
    assert after.json()["data"] == []


def test_a_long_poll_with_nothing_to_return_reads_the_database_only_at_its_ends(client):
    alice = register_and_login(client)
    start = _end_cursor(client, alice)
    engine = client.app.state.session_factory.kw["bind"]
    reads: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        if "FROM events" in statement:
            reads.append(statement)

    sa_event.listen(engine, "before_cursor_execute", count)
    try:
        began = time.monotonic()
        response = client.get("/v1/events", params={"cursor": start, "wait": 2}, headers=alice)
        waited = time.monotonic() - began
    finally:
        sa_event.remove(engine, "before_cursor_execute", count)
    assert response.status_code == 200
    assert response.json() == {"data": [], "next_cursor": start}
    assert 1.9 < waited < 5
    # One read when it starts, one when its time is up: no polling in between.
    assert len(reads) <= 2, reads


def test_concurrent_event_long_polls_share_the_per_user_cap(settings, session_factory):
    from fastapi.testclient import TestClient

    from gateway.app import create_app

    capped = settings.model_copy(
        update={"max_waits_per_user": 2, "redis_prefix": f"{settings.redis_prefix}evcap:"}
    )
    with TestClient(create_app(capped)) as client:
        alice = register_and_login(client)
        statuses: list[int] = []

        def wait() -> None:
            response = client.get("/v1/events", params={"wait": 4}, headers=alice)
            statuses.append(response.status_code)

        waiters = [threading.Thread(target=wait) for _ in range(2)]
        for waiter in waiters:
            waiter.start()
        time.sleep(2)  # both are parked now
        third = client.get("/v1/events", params={"wait": 2}, headers=alice)
        assert third.status_code == 429
        assert third.json()["code"] == "too_many_waits"
        assert third.headers["Retry-After"] == "1"
        assert client.get("/v1/events", headers=alice).status_code == 200  # no wait: no cap
        for waiter in waiters:
            waiter.join()
        assert statuses == [200, 200]
