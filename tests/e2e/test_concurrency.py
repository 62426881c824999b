"""Races through the real stack: many clients, one account; and opposite directions at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from domain.models import LedgerEntry
from tests.factories import (
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
    wait_terminal,
)

pytestmark = pytest.mark.e2e


def _balance(api, headers, account):
    return api.get(f"/v1/accounts/{account['id']}", headers=headers).json()["balance"]


def _entries_sum(session_factory, account_id):
    with session_factory() as session:
        return session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
                LedgerEntry.account_id == account_id
            )
        )


def test_200_concurrent_transfers_from_an_account_that_covers_10(live_api, session_factory):
    api = live_api
    alice = register_and_login(api)
    bob = register_and_login(api)
    source = open_account(api, alice)
    sink = open_account(api, bob)
    operator = operator_headers(api, session_factory)
    deposit = post_deposit(api, operator, source["id"], 10 * 700)
    assert wait_terminal(api, operator, deposit["id"])["status"] == "succeeded"

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(
            pool.map(
                lambda _: post_transfer(api, alice, source["id"], sink["number"], 700), range(200)
            )
        )
    assert [r.status_code for r in responses] == [202] * 200
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 200

    results = [wait_terminal(api, alice, transfer_id, timeout=120) for transfer_id in ids]
    succeeded = [t for t in results if t["status"] == "succeeded"]
    failed = [t for t in results if t["status"] == "failed"]
    assert len(succeeded) == 10
    assert len(failed) == 190
    assert {t["failure_code"] for t in failed} == {"insufficient_funds"}
    assert _balance(api, alice, source) == 0
    assert _balance(api, bob, sink) == 10 * 700
    assert _entries_sum(session_factory, source["id"]) == 0
    assert _entries_sum(session_factory, sink["id"]) == 10 * 700


def test_opposite_direction_transfers_in_parallel_never_deadlock(live_api, session_factory):
    api = live_api
    alice = register_and_login(api)
    bob = register_and_login(api)
    a = open_account(api, alice)
    b = open_account(api, bob)
    operator = operator_headers(api, session_factory)
    for account in (a, b):
        deposit = post_deposit(api, operator, account["id"], 100_000)
        assert wait_terminal(api, operator, deposit["id"])["status"] == "succeeded"

    def send(i):
        if i % 2:
            return alice, post_transfer(api, alice, a["id"], b["number"], 10 + i)
        return bob, post_transfer(api, bob, b["id"], a["number"], 10 + i)

    with ThreadPoolExecutor(max_workers=16) as pool:
        sent = list(pool.map(send, range(120)))
    assert all(response.status_code == 202 for _, response in sent)
    results = [wait_terminal(api, h, r.json()["id"], timeout=120) for h, r in sent]
    assert {t["status"] for t in results} == {"succeeded"}

    a_out = sum(10 + i for i in range(120) if i % 2)
    b_out = sum(10 + i for i in range(120) if not i % 2)
    assert _balance(api, alice, a) == 100_000 - a_out + b_out
    assert _balance(api, bob, b) == 100_000 - b_out + a_out
    assert _entries_sum(session_factory, a["id"]) == _balance(api, alice, a)
