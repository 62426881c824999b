"""Amount, currency and account-number rules."""

from __future__ import annotations

import pytest

from domain.errors import InvalidRequest
from domain.money import (
    check_amount,
    check_currency,
    is_valid_account_number,
    luhn_check_digit,
    new_account_number,
)


@pytest.mark.parametrize("amount", [0, -1, True, 1.5, "10", 10**12])
def test_bad_amounts_are_rejected(amount):
    with pytest.raises(InvalidRequest):
        check_amount(amount, maximum=10**9)


def test_amount_at_the_maximum_is_accepted_and_one_more_is_not():
    check_amount(500, maximum=500)
    with pytest.raises(InvalidRequest) as exc:
        check_amount(501, maximum=500)
    assert exc.value.code == "amount_over_limit"


def test_unsupported_currency():
    check_currency("EUR", supported=["USD", "EUR"])
    with pytest.raises(InvalidRequest) as exc:
        check_currency("XXX", supported=["USD", "EUR"])
    assert exc.value.code == "unsupported_currency"


def test_luhn_known_values():
    # Classic worked example: 7992739871 has check digit 3.
    assert luhn_check_digit("7992739871") == "3"
    assert is_valid_account_number("799273987130") is False  # wrong length for ours
    assert luhn_check_digit("1234567890") == "3"


def test_new_numbers_are_valid_random_and_detect_single_digit_errors():
    numbers = {new_account_number() for _ in range(500)}
    assert len(numbers) == 500
    for number in list(numbers)[:50]:
        assert is_valid_account_number(number)
        for position in range(len(number)):
            digit = int(number[position])
            typo = number[:position] + str((digit + 1) % 10) + number[position + 1 :]
            assert not is_valid_account_number(typo)


def test_numbers_are_not_sequential():
    a, b = sorted(int(new_account_number()) for _ in range(2))
    assert b - a != 1
