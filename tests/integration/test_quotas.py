"""Per-user caps (webhook endpoints, accounts) hold under concurrency, on the real
database: 30 concurrent creates, each in its own unit of work, leave exactly the cap."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from domain.errors import DomainError
from domain.models import Account, WebhookEndpoint
from domain.secret_box import SecretBox
from domain.services import accounts, webhooks
from domain.uow import UnitOfWork, unit_of_work
from tests.factories import make_user, open_account, register_and_login

CONCURRENT = 30


def _race(session_factory, create: Callable[[UnitOfWork], object]) -> tuple[int, list[str]]:
    """Runs `create` in CONCURRENT threads released together; each commits after a
    short pause, so every other thread counts while its row is still uncommitted."""
    barrier = threading.Barrier(CONCURRENT)
    created, refused, unexpected = [], [], []

    def one() -> None:
        try:
            barrier.wait()
            with unit_of_work(session_factory) as uow:
                create(uow)
                time.sleep(0.05)
            created.append(1)
        except DomainError as exc:
            refused.append(exc.code)
        except Exception as exc:  # reported below
            unexpected.append(exc)

    threads = [threading.Thread(target=one) for _ in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert unexpected == []
    return len(created), refused


def test_the_endpoint_limit_holds_under_concurrency(settings, session_factory):
    """Issue 10, finding 10: 30 concurrent creates made 22 endpoints (the limit is 20);
    the count and the insert now run under a per-user lock."""
    user = make_user(session_factory)
    box = SecretBox(settings.webhook_encryption_key)

    def create(uow: UnitOfWork) -> object:
        return webhooks.create_endpoint(
            session=uow.session,
            user=user,
            url="https://93.184.216.34/hook",
            events=["transfer.succeeded"],
            box=box,
            policy=settings.webhook_policy,
        )

    created, refused = _race(session_factory, create)
    assert created == webhooks.MAX_ENDPOINTS_PER_USER == 20
    assert refused == ["too_many_endpoints"] * (CONCURRENT - 20)
    with session_factory() as session:
        count = session.scalar(
            select(func.count()).where(
                WebhookEndpoint.user_id == user.id, WebhookEndpoint.deleted_at.is_(None)
            )
        )
    assert count == 20


def test_the_account_cap_holds_under_concurrency(settings, session_factory):
    """Issue 10, finding 12: there was no cap on accounts per user; 30 concurrent opens
    against a cap of 20 now leave exactly 20."""
    user = make_user(session_factory)

    def create(uow: UnitOfWork) -> object:
        return accounts.open_account(
            session=uow.session,
            cmd=accounts.OpenAccount(owner=user, currency="USD"),
            currencies=settings.currencies,
            max_accounts=20,
        )

    created, refused = _race(session_factory, create)
    assert created == 20
    assert refused == ["too_many_accounts"] * (CONCURRENT - 20)
    with session_factory() as session:
        count = session.scalar(select(func.count()).where(Account.owner_id == user.id))
    assert count == 20


def test_past_the_account_cap_the_api_answers_422_and_says_what_to_do(settings, redis_client):
    """Issue 10, finding 12: SETTLE_MAX_ACCOUNTS_PER_USER caps accounts per user."""
    from gateway.app import create_app

    prefix = f"{settings.redis_prefix}quota-{secrets.token_hex(3)}:"
    tuned = settings.model_copy(update={"redis_prefix": prefix, "max_accounts_per_user": 2})
    with TestClient(create_app(tuned), raise_server_exceptions=False) as client:
        headers = register_and_login(client)
        open_account(client, headers)
        open_account(client, headers, currency="EUR")
        third = client.post("/v1/accounts", headers=headers, json={"currency": "GBP"})
    for key in redis_client.scan_iter(match=f"{prefix}*"):
        redis_client.delete(key)
    assert third.status_code == 422
    assert third.headers["content-type"] == "application/problem+json"
    body = third.json()
    assert body["code"] == "too_many_accounts"
    assert body["detail"] == "at most 2 accounts per user; use an account you already have"
