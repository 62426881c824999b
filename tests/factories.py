"""Factory functions for tests: random data, so tests need no cleanup and never collide."""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from domain.models import User
from domain.services import users
from domain.uow import unit_of_work

PASSWORD = "correct horse battery staple"


def lane_of(account_id: uuid.UUID) -> int:
    """The lane (as this run's settings count them) that drains this account's transfers."""
    from domain.lanes import Lanes
    from settle.config import get_settings

    return Lanes(get_settings().lanes).of_account(account_id)


Client = TestClient | httpx.Client


def random_email(tag: str = "user") -> str:
    return f"{tag}-{secrets.token_hex(6)}@example.com"


def idem() -> dict[str, str]:
    return {"Idempotency-Key": f"test-{uuid.uuid4()}"}


def make_user(factory: sessionmaker[Session], *, role: str = "customer") -> User:
    with unit_of_work(factory) as uow:
        session = uow.session
        return users.register(
            session=session,
            cmd=users.RegisterUser(email=random_email(role), password=PASSWORD, role=role),
        )


def login(client: Client, email: str, password: str = PASSWORD) -> dict[str, str]:
    response = client.post("/v1/auth/token", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def register_and_login(client: Client) -> dict[str, str]:
    email = random_email()
    response = client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return login(client, email)


def operator_headers(client: Client, factory: sessionmaker[Session]) -> dict[str, str]:
    operator = make_user(factory, role="operator")
    return login(client, operator.email)


def open_account(client: Client, headers: dict[str, str], currency: str = "USD") -> dict[str, Any]:
    response = client.post("/v1/accounts", json={"currency": currency}, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def accounts_in_two_lanes(
    client: Client, headers: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two accounts of the caller that different lanes drain."""
    first = open_account(client, headers)
    second = open_account(client, headers)
    while lane_of(uuid.UUID(second["id"])) == lane_of(uuid.UUID(first["id"])):
        second = open_account(client, headers)
    return first, second


def post_deposit(
    client: Client, headers: dict[str, str], account_id: str, amount: int, currency: str = "USD"
) -> dict[str, Any]:
    response = client.post(
        "/v1/deposits",
        json={"account_id": account_id, "amount": amount, "currency": currency},
        headers={**headers, **idem()},
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def post_transfer(
    client: Client,
    headers: dict[str, str],
    source_id: str,
    destination_number: str,
    amount: int,
    currency: str = "USD",
) -> httpx.Response:
    return client.post(
        "/v1/transfers",
        json={
            "source_account_id": source_id,
            "destination_account_number": destination_number,
            "amount": amount,
            "currency": currency,
        },
        headers={**headers, **idem()},
    )


def wait_terminal(
    client: Client, headers: dict[str, str], transfer_id: str, timeout: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/v1/transfers/{transfer_id}", headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] != "pending":
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"transfer {transfer_id} still pending after {timeout}s")
        time.sleep(0.05)


def wait_for_events(
    client: Client, headers: dict[str, str], count: int, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """The caller's first `count` events, once visible.

    An event shows up once every older writing transaction in the cluster has
    finished (see domain/repositories/events.py), so a test polls for it.
    """
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/v1/events", params={"limit": 500}, headers=headers)
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["data"]
        if len(events) >= count:
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(events)} of {count} events visible after {timeout}s")
        time.sleep(0.05)


def decide(client: Client, headers: dict[str, str], approval_id: str, verb: str) -> httpx.Response:
    """Approve (`verb="approve"`) or reject an approval as the operator of `headers`."""
    return client.post(f"/v1/admin/approvals/{approval_id}/{verb}", headers=headers)


def change_limits(
    client: Client,
    requester: dict[str, str],
    approver: dict[str, str],
    account_id: str,
    limits: dict[str, Any],
) -> httpx.Response:
    """Ask for a limit change as one operator and approve it as another (four eyes);
    the approval's answer."""
    asked = client.patch(f"/v1/admin/accounts/{account_id}/limits", json=limits, headers=requester)
    assert asked.status_code == 202, asked.text
    return decide(client, approver, asked.json()["id"], "approve")


def seal_all(factory: sessionmaker[Session], *, timeout: float = 15.0) -> None:
    """Seal until no audit row is left unsealed, as the sealer would over a few runs.

    A row becomes sealable once no older transaction is still running anywhere on the
    server (xids are server-wide), so on a shared server this may take a moment.
    """
    from sqlalchemy import text

    from domain.services import audit
    from settle.config import get_settings

    unsealed = text(
        "SELECT count(*) FROM audit_events a"
        " WHERE NOT EXISTS (SELECT 1 FROM audit_seals s WHERE s.audit_id = a.id)"
    )
    deadline = time.monotonic() + timeout
    while True:
        with unit_of_work(factory) as uow:
            if audit.seal(uow.session, keys=get_settings().audit_keyring):
                continue
            if not uow.session.scalar(unsealed) or time.monotonic() > deadline:
                return
        time.sleep(0.05)
