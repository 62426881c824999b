"""Execution-time rules as a pure function."""

from __future__ import annotations

import uuid

from domain.models import Account, Transfer
from domain.rules import Limits, failure_for

LIMITS = Limits(max_amount=1000, default_daily_outgoing=5000)


def _account(
    balance=0,
    *,
    kind="customer",
    status="active",
    currency="USD",
    overdraft=0,
    daily=None,
    held=0,
):
    return Account(
        id=uuid.uuid4(),
        kind=kind,
        status=status,
        currency=currency,
        balance=balance,
        overdraft_limit=overdraft,
        daily_outgoing_limit=daily,
        held=held,
    )


def _transfer(amount=100, currency="USD"):
    return Transfer(id=uuid.uuid4(), amount=amount, currency=currency)


def check(transfer, source, destination=None, **kwargs):
    return failure_for(transfer, source, destination or _account(), limits=LIMITS, **kwargs)


def test_sufficient_funds_pass():
    assert check(_transfer(100), _account(100)) is None


def test_insufficient_funds():
    assert check(_transfer(101), _account(100)) == "insufficient_funds"


def test_overdraft_limit_allows_going_negative_down_to_the_limit():
    assert check(_transfer(150), _account(100, overdraft=50)) is None
    assert check(_transfer(151), _account(100, overdraft=50)) == "insufficient_funds"


def test_system_accounts_may_go_negative_and_have_no_daily_quota():
    assert check(_transfer(500), _account(0, kind="system"), sent_today=10**9) is None


def test_frozen_either_side():
    """A frozen destination is `destination_unavailable`: the payer must not learn that
    another customer's account is frozen (issue 10, finding 11)."""
    assert check(_transfer(), _account(1000, status="frozen")) == "account_frozen"
    frozen_payee = check(_transfer(), _account(1000), _account(status="frozen"))
    assert frozen_payee == "destination_unavailable"
    both = check(_transfer(), _account(1000, status="frozen"), _account(status="frozen"))
    assert both == "account_frozen"


def test_closed_either_side_is_account_closed_before_anything_else():
    """Money neither leaves nor enters a closed account (issue 12), whatever else holds."""
    assert check(_transfer(), _account(1000, status="closed")) == "account_closed"
    assert check(_transfer(), _account(0), _account(status="closed")) == "account_closed"
    frozen_to_closed = check(
        _transfer(), _account(1000, status="frozen"), _account(status="closed")
    )
    assert frozen_to_closed == "account_closed"


def test_a_destination_in_another_currency_is_unavailable_not_named():
    assert check(_transfer(), _account(1000), _account(currency="EUR")) == (
        "destination_unavailable"
    )


def test_currency_mismatch_and_maximum():
    assert check(_transfer(currency="EUR"), _account(1000)) == "currency_mismatch"
    assert check(_transfer(1001), _account(10_000)) == "amount_over_limit"


def test_daily_limit_default_and_per_account():
    rich = _account(10**6)
    assert check(_transfer(1000), rich, sent_today=4000) is None
    assert check(_transfer(1000), rich, sent_today=4001) == "daily_limit_exceeded"
    capped = _account(10**6, daily=500)
    assert check(_transfer(500), capped) is None
    assert check(_transfer(100), capped, sent_today=401) == "daily_limit_exceeded"


def test_active_holds_are_not_spendable():
    # 100 on the account, 60 of it held: 40 is available.
    assert check(_transfer(40), _account(100, held=60)) is None
    assert check(_transfer(41), _account(100, held=60)) == "insufficient_funds"


def test_holds_count_against_the_overdraft_floor_too():
    assert check(_transfer(90), _account(100, held=60, overdraft=50)) is None
    assert check(_transfer(91), _account(100, held=60, overdraft=50)) == "insufficient_funds"
