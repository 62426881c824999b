"""Money primitives: amount and currency rules, and account numbers with a check digit."""

from __future__ import annotations

import secrets

from domain.errors import InvalidRequest

ACCOUNT_NUMBER_BODY_DIGITS = 11


def check_amount(amount: int, *, maximum: int) -> None:
    """Amounts are positive integers in minor units, at most `maximum`."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidRequest(
            "amount must be an integer number of minor units", code="invalid_amount"
        )
    if amount <= 0:
        raise InvalidRequest("amount must be greater than zero", code="invalid_amount")
    if amount > maximum:
        raise InvalidRequest(
            f"amount exceeds the per-transfer maximum of {maximum}", code="amount_over_limit"
        )


def check_currency(currency: str, *, supported: list[str]) -> None:
    if currency not in supported:
        raise InvalidRequest(
            f"currency {currency!r} is not supported (supported: {', '.join(supported)})",
            code="unsupported_currency",
        )


def luhn_check_digit(body: str) -> str:
    """The digit that makes `body + digit` pass the Luhn (mod 10) check."""
    total = 0
    # Walk right to left; the digit next to the (future) check digit is doubled.
    for position, char in enumerate(reversed(body)):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def is_valid_account_number(number: str) -> bool:
    if not number.isdigit() or len(number) != ACCOUNT_NUMBER_BODY_DIGITS + 1:
        return False
    return luhn_check_digit(number[:-1]) == number[-1]


def check_account_number(number: str) -> None:
    """Refuse a number no account can have, apart from one that exists nowhere: a typo
    (a wrong or swapped digit fails the check digit) is told apart from an unknown account."""
    if not is_valid_account_number(number):
        raise InvalidRequest(
            f"the destination account number is mistyped: account numbers have "
            f"{ACCOUNT_NUMBER_BODY_DIGITS + 1} digits and the last is a check digit, which "
            "does not match; check the number with its owner",
            code="invalid_account_number",
        )


def new_account_number() -> str:
    """A random (non-sequential, unguessable) account number ending in a Luhn check digit."""
    # First digit non-zero so numbers never lose a digit when someone treats them as integers.
    body = str(secrets.randbelow(9) + 1) + "".join(
        str(secrets.randbelow(10)) for _ in range(ACCOUNT_NUMBER_BODY_DIGITS - 1)
    )
    return body + luhn_check_digit(body)
