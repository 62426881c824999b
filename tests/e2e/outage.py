"""A dependency down at accept time: the 202 still comes, and a healthy stack's
sweeper delivers the transfer later (shared by the broker and Redis outage tests)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient

from tests.factories import (
    open_account,
    operator_headers,
    post_deposit,
    register_and_login,
    wait_terminal,
)
from tests.processes import running_worker, settings_env

AMOUNT = 777


@dataclass
class AcceptedDuringOutage:
    customer: dict[str, str]
    operator: dict[str, str]
    account: dict[str, Any]
    deposit: dict[str, Any]
    ready_checks: dict[str, str]  # what /readyz said during the outage


def deposit_during_outage(broken: Any, session_factory: Any) -> AcceptedDuringOutage:
    """An operator deposit through a gateway built on `broken` settings: it must still
    answer 202 within 5 s (a dead dependency never holds the 202)."""
    from gateway.app import create_app

    with TestClient(create_app(broken)) as client:
        customer = register_and_login(client)
        account = open_account(client, customer)
        operator = operator_headers(client, session_factory)
        started = time.monotonic()
        deposit = post_deposit(client, operator, account["id"], AMOUNT)  # asserts 202
        assert time.monotonic() - started < 5, "a dead dependency must not hold the 202"
        ready = client.get("/readyz")
        assert ready.status_code == 503
        return AcceptedDuringOutage(customer, operator, account, deposit, ready.json()["checks"])


def assert_the_sweeper_delivers(isolated: Any, accepted: AcceptedDuringOutage) -> None:
    """A healthy gateway and a worker with beat on `isolated`: the sweeper finds the
    transfer whose wake-up was lost and it settles, once."""
    from gateway.app import create_app

    with (
        TestClient(create_app(isolated)) as client,
        running_worker(settings_env(isolated), beat=True),
    ):
        done = wait_terminal(client, accepted.operator, accepted.deposit["id"], timeout=30)
        assert done["status"] == "succeeded"
        account = client.get(f"/v1/accounts/{accepted.account['id']}", headers=accepted.customer)
        assert account.json()["balance"] == AMOUNT
