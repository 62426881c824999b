"""The registration password policy and transparent rehashing."""

from __future__ import annotations

import pytest
from passlib.hash import pbkdf2_sha256

from domain import passwords
from domain.errors import InvalidRequest
from domain.password_policy import check, common_passwords

EMAIL = "ada.lovelace@example.com"


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short1!", "at least 8"),
        ("x" * 129, "at most 128"),
        ("password1", "too common"),
        ("Qwerty123", "too common"),
        ("1234567890123", "only digits"),
        ("my-ada.lovelace-pw", "email"),
        ("ada.lovelace@example.co", "email"),
        ("adalovelace@example.com", "similar"),
    ],
)
def test_weak_passwords_are_refused_with_a_reason(password, reason):
    with pytest.raises(InvalidRequest, match=reason) as exc:
        check(password, email=EMAIL)
    assert exc.value.code == "weak_password"


@pytest.mark.parametrize("password", ["correct horse battery staple", "Tr0ub4dor&3-xyz"])
def test_good_passwords_pass(password):
    check(password, email=EMAIL)


def test_the_shipped_list_is_loaded():
    assert {"123456", "password", "qwerty"} <= common_passwords()
    assert len(common_passwords()) > 250


def test_argon2id_with_owasp_parameters():
    hashed = passwords.hash_password("correct horse battery staple")
    assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert passwords.verify_password("correct horse battery staple", hashed) == (True, None)
    assert passwords.verify_password("wrong", hashed) == (False, None)


def test_older_hashes_verify_and_come_back_upgraded():
    legacy = pbkdf2_sha256.hash("correct horse battery staple")
    ok, upgraded = passwords.verify_password("correct horse battery staple", legacy)
    assert ok and upgraded is not None and upgraded.startswith("$argon2id$")


def test_unknown_user_path_still_does_the_hashing_work():
    assert passwords.verify_password("anything", None) == (False, None)
