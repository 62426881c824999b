"""Every list pages the same way: `?cursor=&limit=`, `{data, next_cursor}`, one cursor codec."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from sqlalchemy import select

from domain.models import Event
from tests.factories import (
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
    wait_for_events,
)


@pytest.fixture
def world(client, session_factory, drain_pending):
    """Alice: three accounts, three deposits into the first, one transfer out; all applied."""
    operator = operator_headers(client, session_factory)
    alice = register_and_login(client)
    accounts = [open_account(client, alice) for _ in range(3)]
    for amount in (100, 200, 300):
        post_deposit(client, operator, accounts[0]["id"], amount)
    drain_pending()  # funded first, so the transfer succeeds
    assert post_transfer(client, alice, accounts[0]["id"], accounts[1]["number"], 50).is_success
    drain_pending()
    wait_for_events(client, alice, 4)  # three deposits and the transfer
    return {"alice": alice, "operator": operator, "accounts": accounts}


def walk(client, path: str, headers, key: str = "id", **params: Any) -> list[Any]:
    """Every item of a list, one per page: no item lost or repeated across page boundaries."""
    items: list[Any] = []
    cursor = None
    for _ in range(1000):
        query = {**params, "limit": 1, **({"cursor": cursor} if cursor else {})}
        response = client.get(path, params=query, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"data", "next_cursor"}
        items.extend(item[key] for item in page["data"])
        if page["next_cursor"] is None or not page["data"]:
            return items
        cursor = page["next_cursor"]
    raise AssertionError("the list never ended")


def _all_at_once(client, path: str, headers, key: str = "id", **params: Any) -> list[Any]:
    page = client.get(path, params={**params, "limit": 200}, headers=headers).json()
    return [item[key] for item in page["data"]]


def test_accounts_entries_and_transfers_page_one_by_one_without_loss(client, world):
    alice, first = world["alice"], world["accounts"][0]["id"]
    lists = [
        ("/v1/accounts", {}, 3),
        (f"/v1/accounts/{first}/entries", {}, 4),
        ("/v1/transfers", {"account_id": first}, 4),
    ]
    for path, params, expected in lists:
        one_by_one = walk(client, path, alice, **params)
        assert len(one_by_one) == len(set(one_by_one)) == expected, path
        assert one_by_one == _all_at_once(client, path, alice, **params), path


def test_audit_events_page_one_by_one(client, world):
    operator = world["operator"]
    newest = _all_at_once(client, "/v1/admin/audit-events", operator)[:5]
    cursor, seen = None, []
    while len(seen) < 5:
        params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/admin/audit-events", params=params, headers=operator).json()
        seen.extend(e["id"] for e in page["data"])
        cursor = page["next_cursor"]
    assert seen == newest


def test_events_page_by_cursor_and_by_its_after_alias(client, world):
    alice = world["alice"]
    by_cursor = walk(client, "/v1/events", alice)
    assert len(by_cursor) == 4  # three deposits and the transfer
    # `after` is the same parameter under its old name.
    first = client.get("/v1/events", params={"limit": 1}, headers=alice).json()
    rest = client.get(
        "/v1/events", params={"after": first["next_cursor"], "limit": 10}, headers=alice
    ).json()
    assert [e["id"] for e in first["data"] + rest["data"]] == by_cursor
    # Both given: fine when they agree, refused when they do not.
    both = {"cursor": first["next_cursor"], "after": first["next_cursor"]}
    assert client.get("/v1/events", params=both, headers=alice).json() == rest
    clash = {"cursor": first["next_cursor"], "after": rest["next_cursor"]}
    assert client.get("/v1/events", params=clash, headers=alice).status_code == 400
    # The end of the stream: an empty page hands the cursor back unchanged.
    end = client.get("/v1/events", params={"cursor": rest["next_cursor"]}, headers=alice).json()
    assert end == {"data": [], "next_cursor": rest["next_cursor"]}


def test_event_cursors_handed_out_before_the_codec_still_work(client, world, session_factory):
    alice = world["alice"]
    stream = walk(client, "/v1/events", alice)
    with session_factory() as session:
        first = session.scalars(select(Event).where(Event.id == stream[0])).one()
    legacy = f"{first.xid}.{first.seq}"
    for name in ("cursor", "after"):
        page = client.get("/v1/events", params={name: legacy}, headers=alice).json()
        assert [e["id"] for e in page["data"]] == stream[1:]
        # The next cursor is in the new form, and continues where the old one left off.
        assert not page["next_cursor"][0].isdigit()
    # A bare seq (before xids existed) names a position before every xid-stamped event.
    bare = client.get("/v1/events", params={"after": str(first.seq)}, headers=alice)
    assert bare.status_code == 200
    assert [e["id"] for e in bare.json()["data"]] == stream
    # An empty page hands an old cursor back unchanged too.
    with session_factory() as session:
        last = session.scalars(select(Event).where(Event.id == stream[-1])).one()
    end = client.get("/v1/events", params={"after": f"{last.xid}.{last.seq}"}, headers=alice)
    assert end.json() == {"data": [], "next_cursor": f"{last.xid}.{last.seq}"}


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


BAD_CURSORS = [
    pytest.param("not base64!", id="not-base64"),
    pytest.param(_b64("\u00b2"), id="superscript-digit"),
    pytest.param(_b64("[1,\u00b2]"), id="non-ascii-in-json"),
    pytest.param(_b64(f"[1,{2**63}]"), id="above-bigint"),
    pytest.param(_b64(f"[1,{2**63},{2**63}]"), id="pair-above-bigint"),
    pytest.param(_b64("[1,1,2,3]"), id="wrong-arity"),
    pytest.param(_b64('[1,"x"]'), id="wrong-type"),
    pytest.param(_b64("[9,1]"), id="unknown-version"),
    pytest.param("5", id="legacy-seq-on-a-non-event-list"),
]


@pytest.mark.parametrize("bad", BAD_CURSORS)
def test_every_list_refuses_a_malformed_cursor_with_400_invalid_cursor(client, world, bad):
    alice, first = world["alice"], world["accounts"][0]["id"]
    paths = [
        ("/v1/accounts", alice),
        (f"/v1/accounts/{first}/entries", alice),
        ("/v1/transfers", alice),
        ("/v1/webhook-endpoints", alice),
        ("/v1/admin/audit-events", world["operator"]),
    ]
    if not bad.isdigit():  # on the event stream, digits are a (valid) cursor of the old form
        paths += [("/v1/events", alice)]
    for path, headers in paths:
        response = client.get(path, params={"cursor": bad}, headers=headers)
        assert response.status_code == 400, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "invalid_cursor"


@pytest.mark.parametrize(
    "bad", ["\u00b2", "1.\u00b2", f"1.{2**63}", f"{2**63}.1", "9" * 19, "1.2.3", "1.-1"]
)
def test_malformed_old_form_event_cursors_are_400(client, world, bad):
    for name in ("cursor", "after"):
        response = client.get("/v1/events", params={name: bad}, headers=world["alice"])
        assert response.status_code == 400, (name, bad, response.text)
        assert response.json()["code"] == "invalid_cursor"
