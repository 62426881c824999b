"""The rules a pending transfer must pass at execution time, as a pure function.

Re-checked under the account locks even where the gateway already checked them,
because accounts can be frozen and balances change between acceptance and execution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from domain.enums import AccountStatus

INSUFFICIENT_FUNDS = "insufficient_funds"
ACCOUNT_FROZEN = "account_frozen"  # the source (the payer's own account) is frozen
# The source or the destination was closed after the transfer was accepted.
ACCOUNT_CLOSED = "account_closed"
# The destination cannot receive (frozen, or another currency): deliberately vague, the
# payer must not learn another customer's account state or currency from it.
DESTINATION_UNAVAILABLE = "destination_unavailable"
DESTINATION_UNAVAILABLE_DETAIL = (
    "the destination account cannot receive this transfer; check the account number with its holder"
)
CURRENCY_MISMATCH = "currency_mismatch"
AMOUNT_OVER_LIMIT = "amount_over_limit"
DAILY_LIMIT_EXCEEDED = "daily_limit_exceeded"
# An atomic batch failed as a whole: this item was fine, another one was not.
BATCH_FAILED = "batch_failed"
# `execute_before` passed before the transfer could be applied.
EXPIRED = "expired"
# A capture or void whose hold is no longer held (captured, voided, expired, failed or
# canceled by the time the engine reached the command).
HOLD_NOT_ACTIVE = "hold_not_active"
# The engine gave up on a transfer that broke a database invariant every time it
# was applied (see domain/services/engine.py, quarantine).
INTERNAL_ERROR = "internal_error"

FAILURE_CODES = (
    INSUFFICIENT_FUNDS,
    ACCOUNT_FROZEN,
    ACCOUNT_CLOSED,
    DESTINATION_UNAVAILABLE,
    CURRENCY_MISMATCH,
    AMOUNT_OVER_LIMIT,
    DAILY_LIMIT_EXCEEDED,
    BATCH_FAILED,
    EXPIRED,
    HOLD_NOT_ACTIVE,
    INTERNAL_ERROR,
)


class TransferFacts(Protocol):
    @property
    def amount(self) -> int: ...
    @property
    def currency(self) -> str: ...


class AccountFacts(Protocol):
    @property
    def status(self) -> str: ...
    @property
    def currency(self) -> str: ...
    @property
    def is_system(self) -> bool: ...
    @property
    def balance(self) -> int: ...
    @property
    def held(self) -> int: ...
    @property
    def overdraft_limit(self) -> int: ...
    @property
    def daily_outgoing_limit(self) -> int | None: ...


@dataclass(frozen=True, kw_only=True)
class Limits:
    max_amount: int
    default_daily_outgoing: int


def failure_for(
    transfer: TransferFacts,
    source: AccountFacts,
    destination: AccountFacts,
    *,
    limits: Limits,
    sent_today: int = 0,
) -> str | None:
    """None if `transfer` may be applied now, else the failure code that stops it.

    `sent_today`: what `source` already sent since midnight UTC (succeeded transfers).
    """
    if AccountStatus.CLOSED in (source.status, destination.status):
        return ACCOUNT_CLOSED
    if source.status != AccountStatus.ACTIVE:
        return ACCOUNT_FROZEN
    if destination.status != AccountStatus.ACTIVE:
        return DESTINATION_UNAVAILABLE
    if transfer.currency != source.currency:
        return CURRENCY_MISMATCH
    if transfer.currency != destination.currency:
        return DESTINATION_UNAVAILABLE
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
    # Against the available balance: money reserved by active holds is not spendable.
    if source.balance - source.held - transfer.amount < -source.overdraft_limit:
        return INSUFFICIENT_FUNDS
    return None
