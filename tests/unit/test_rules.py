"""Execution-time rules as a pure function."""

from __future__ import annotations

import uuid

from domain.models import Account, Transfer
from domain.rules import failure_for


def _account(balance=0, *, kind="customer", status="active", currency="USD", overdraft=0):
    return Account(
        id=uuid.uuid4(),
        kind=kind,
        status=status,
        currency=currency,
        balance=balance,
        overdraft_limit=overdraft,
    )


def _transfer(amount=100, currency="USD"):
    return Transfer(id=uuid.uuid4(), amount=amount, currency=currency)


def test_sufficient_funds_pass():
    assert failure_for(_transfer(100), _account(100), _account(), max_amount=1000) is None


def test_insufficient_funds():
    assert (
        failure_for(_transfer(101), _account(100), _account(), max_amount=1000)
        == "insufficient_funds"
    )


def test_overdraft_limit_allows_going_negative_down_to_the_limit():
    assert (
        failure_for(_transfer(150), _account(100, overdraft=50), _account(), max_amount=1000)
        is None
    )
    assert (
        failure_for(_transfer(151), _account(100, overdraft=50), _account(), max_amount=1000)
        == "insufficient_funds"
    )


def test_system_accounts_may_go_negative():
    assert (
        failure_for(_transfer(500), _account(0, kind="system"), _account(), max_amount=1000) is None
    )


def test_frozen_either_side():
    assert (
        failure_for(_transfer(), _account(1000, status="frozen"), _account(), max_amount=1000)
        == "account_frozen"
    )
    assert (
        failure_for(_transfer(), _account(1000), _account(status="frozen"), max_amount=1000)
        == "account_frozen"
    )


def test_currency_mismatch_and_maximum():
    assert (
        failure_for(_transfer(currency="EUR"), _account(1000), _account(), max_amount=1000)
        == "currency_mismatch"
    )
    assert (
        failure_for(_transfer(1001), _account(10_000), _account(), max_amount=1000)
        == "amount_over_limit"
    )
