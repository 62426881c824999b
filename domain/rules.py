"""The rules a pending transfer must pass at execution time, as a pure function.

Re-checked under the account locks even where the gateway already checked them,
because accounts can be frozen and balances change between acceptance and execution.
"""

from __future__ import annotations

from domain.models import Account, Transfer

INSUFFICIENT_FUNDS = "insufficient_funds"
ACCOUNT_FROZEN = "account_frozen"
CURRENCY_MISMATCH = "currency_mismatch"
AMOUNT_OVER_LIMIT = "amount_over_limit"

FAILURE_CODES = (INSUFFICIENT_FUNDS, ACCOUNT_FROZEN, CURRENCY_MISMATCH, AMOUNT_OVER_LIMIT)


def failure_for(
    transfer: Transfer, source: Account, destination: Account, *, max_amount: int
) -> str | None:
    """None if `transfer` may be applied now, else the failure code that stops it."""
    if source.status != "active" or destination.status != "active":
        return ACCOUNT_FROZEN
    if transfer.currency != source.currency or transfer.currency != destination.currency:
        return CURRENCY_MISMATCH
    if transfer.amount > max_amount:
        return AMOUNT_OVER_LIMIT
    if not source.is_system and source.balance - transfer.amount < -source.overdraft_limit:
        return INSUFFICIENT_FUNDS
    return None
