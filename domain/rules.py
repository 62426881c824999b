"""The rules a pending transfer must pass at execution time, as a pure function.

Re-checked under the account locks even where the gateway already checked them,
because accounts can be frozen and balances change between acceptance and execution.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.models import Account, Transfer

INSUFFICIENT_FUNDS = "insufficient_funds"
ACCOUNT_FROZEN = "account_frozen"
CURRENCY_MISMATCH = "currency_mismatch"
AMOUNT_OVER_LIMIT = "amount_over_limit"
DAILY_LIMIT_EXCEEDED = "daily_limit_exceeded"

FAILURE_CODES = (
    INSUFFICIENT_FUNDS,
    ACCOUNT_FROZEN,
    CURRENCY_MISMATCH,
    AMOUNT_OVER_LIMIT,
    DAILY_LIMIT_EXCEEDED,
)


@dataclass(frozen=True, kw_only=True)
class Limits:
    max_amount: int
    default_daily_outgoing: int


def failure_for(
    transfer: Transfer,
    source: Account,
    destination: Account,
    *,
    limits: Limits,
    sent_today: int = 0,
) -> str | None:
    """None if `transfer` may be applied now, else the failure code that stops it.

    `sent_today`: what `source` already sent since midnight UTC (succeeded transfers).
    """
    if source.status != "active" or destination.status != "active":
        return ACCOUNT_FROZEN
    if transfer.currency != source.currency or transfer.currency != destination.currency:
        return CURRENCY_MISMATCH
    if transfer.amount > limits.max_amount:
        return AMOUNT_OVER_LIMIT
    if source.is_system:
        return None  # settlement accounts mirror money entering Settle: no floor, no quota
    daily_limit = (
        source.daily_outgoing_limit
        if source.daily_outgoing_limit is not None
        else limits.default_daily_outgoing
    )
    if sent_today + transfer.amount > daily_limit:
        return DAILY_LIMIT_EXCEEDED
    if source.balance - transfer.amount < -source.overdraft_limit:
        return INSUFFICIENT_FUNDS
    return None
