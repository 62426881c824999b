"""Sessions and identities on real PostgreSQL and Redis (issue 10, findings 1, 8, 12).

Each test fails on the code before this change: lockouts keyed on the raw email
(a whitespace variant got tokens), registration of a variant of an existing
address, no password change, no access-token revocation (money routes included),
no admin role change or disable.
"""

from __future__ import annotations

import pytest

from tests.factories import (
    PASSWORD,
    idem,
    login,
    make_user,
    open_account,
    post_deposit,
    random_email,
)
from tests.integration.test_security_controls import app_with

NEW_PASSWORD = "a much better passphrase 42"
VARIANTS = [
    "{} ",
    "{}\t",
    "{}\u00a0",
    "{}\u2003",
    "{}\u3000",
    "\u2003 {}",
    "{}".upper(),
]


def _tokens(client, email, password=PASSWORD):
    response = client.post("/v1/auth/token", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body = response.json()
    return {"Authorization": f"Bearer {body['access_token']}"}, body["refresh_token"]


def _fullwidth(email: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in email)


def test_a_locked_client_gets_no_tokens_through_a_variant_of_the_email(
    settings, redis_client, session_factory
):
    """Finding 1: `"bob@example.com "` (and tab, NBSP, U+2003, U+3000) got tokens
    while `bob@example.com` was locked."""
    with app_with(settings, redis_client, lockout_threshold=3, lockout_max_seconds=60) as client:
        victim = make_user(session_factory)
        for _ in range(3):
            bad = {"email": victim.email, "password": "wrong password 123"}
            assert client.post("/v1/auth/token", json=bad).status_code == 401
        for template in [*VARIANTS, "{}"]:
            variant = template.format(victim.email)
            answer = client.post("/v1/auth/token", json={"email": variant, "password": PASSWORD})
            assert answer.status_code == 429, (repr(variant), answer.text)
            assert answer.json()["code"] == "login_locked"
        full = client.post(
            "/v1/auth/token", json={"email": _fullwidth(victim.email), "password": PASSWORD}
        )
        assert full.status_code == 429


def test_failures_through_variants_count_towards_one_lockout(
    settings, redis_client, session_factory
):
    with app_with(settings, redis_client, lockout_threshold=3, lockout_max_seconds=60) as client:
        victim = make_user(session_factory)
        for template in ("{} ", "{}\u3000", "\t{}"):
            bad = {"email": template.format(victim.email), "password": "wrong password 123"}
            assert client.post("/v1/auth/token", json=bad).status_code == 401
        good = client.post("/v1/auth/token", json={"email": victim.email, "password": PASSWORD})
        assert good.status_code == 429


def test_any_variant_logs_in_and_per_account_limit_is_shared(
    settings, redis_client, session_factory
):
    with app_with(settings, redis_client, rate_limit_login_per_account="3/60") as client:
        user = make_user(session_factory)
        codes = [
            client.post(
                "/v1/auth/token",
                json={"email": template.format(user.email), "password": PASSWORD},
            ).status_code
            for template in ("{}\u00a0", "{}".upper(), " {}", "{}\u2003")
        ]
        assert codes == [200, 200, 200, 429]


def test_registering_a_variant_of_an_existing_address_is_refused(client):
    email = random_email()
    assert (
        client.post("/v1/auth/register", json={"email": email, "password": PASSWORD}).status_code
        == 201
    )
    for variant in [t.format(email) for t in VARIANTS] + [_fullwidth(email), "\u200b" + email]:
        answer = client.post("/v1/auth/register", json={"email": variant, "password": PASSWORD})
        assert answer.status_code == 409, (repr(variant), answer.text)
        assert answer.json()["code"] == "email_taken"


def test_decomposed_accents_are_the_same_address(client):
    local = random_email().split("@")[0]
    composed, decomposed = f"jos\u00e9-{local}@example.com", f"jose\u0301-{local}@example.com"
    assert (
        client.post("/v1/auth/register", json={"email": composed, "password": PASSWORD}).status_code
        == 201
    )
    taken = client.post("/v1/auth/register", json={"email": decomposed, "password": PASSWORD})
    assert taken.status_code == 409
    login(client, decomposed)


def test_password_change_ends_every_other_session_access_tokens_included(client, session_factory):
    """Finding 12: there was no password change, and access tokens could not be revoked."""
    user = make_user(session_factory)
    other_access, other_refresh = _tokens(client, user.email)
    mine_access, mine_refresh = _tokens(client, user.email)
    account = open_account(client, other_access)
    changed = client.post(
        "/v1/auth/password",
        headers=mine_access,
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 204, changed.text
    # The other session is over: its access token on a loaded-user route and on a
    # money route, and its refresh token.
    assert client.get("/v1/me", headers=other_access).status_code == 401
    transfer = client.post(
        "/v1/transfers",
        headers={**other_access, **idem()},
        json={
            "source_account_id": account["id"],
            "destination_account_number": account["number"],
            "amount": 1,
            "currency": "USD",
        },
    )
    assert transfer.status_code == 401, transfer.text
    assert client.post("/v1/auth/refresh", json={"refresh_token": other_refresh}).status_code == 401
    # Every access token issued before the change is refused, the caller's too; the
    # caller's session refreshes into a fresh pair.
    assert client.get("/v1/me", headers=mine_access).status_code == 401
    fresh = client.post("/v1/auth/refresh", json={"refresh_token": mine_refresh})
    assert fresh.status_code == 200
    headers = {"Authorization": f"Bearer {fresh.json()['access_token']}"}
    assert client.get("/v1/me", headers=headers).status_code == 200
    # The old password no longer works, the new one does.
    old = client.post("/v1/auth/token", json={"email": user.email, "password": PASSWORD})
    assert old.status_code == 401
    login(client, user.email, NEW_PASSWORD)


def test_password_change_needs_the_current_password_and_a_good_new_one(client, session_factory):
    user = make_user(session_factory)
    headers, _ = _tokens(client, user.email)
    wrong = client.post(
        "/v1/auth/password",
        headers=headers,
        json={"current_password": "not my password", "new_password": NEW_PASSWORD},
    )
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_credentials"
    weak = client.post(
        "/v1/auth/password",
        headers=headers,
        json={"current_password": PASSWORD, "new_password": "12345678"},
    )
    assert weak.status_code == 422
    # Neither attempt revoked anything.
    assert client.get("/v1/me", headers=headers).status_code == 200
    assert (
        client.post(
            "/v1/auth/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
        ).status_code
        == 401
    )


def _admin(client, session_factory):
    return login(client, make_user(session_factory, role="admin").email)


def test_disabling_a_user_locks_them_out_within_one_request(client, session_factory):
    """Finding 12: there was no way to disable a user."""
    admin = _admin(client, session_factory)
    operator = login(client, make_user(session_factory, role="operator").email)
    user = make_user(session_factory)
    headers, refresh = _tokens(client, user.email)
    account = open_account(client, headers)
    post_deposit(client, operator, account["id"], 1_000)
    withdraw = {"account_id": account["id"], "amount": 1, "currency": "USD"}
    assert (
        client.post("/v1/withdrawals", headers={**headers, **idem()}, json=withdraw).status_code
        == 202
    )

    # Operators cannot manage people.
    assert client.post(f"/v1/admin/users/{user.id}/disable", headers=operator).status_code == 403
    disabled = client.post(f"/v1/admin/users/{user.id}/disable", headers=admin)
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["disabled_at"] is not None

    assert (
        client.post("/v1/withdrawals", headers={**headers, **idem()}, json=withdraw).status_code
        == 401
    )
    assert client.get("/v1/me", headers=headers).status_code == 401
    assert client.get(f"/v1/accounts/{account['id']}", headers=headers).status_code == 401
    assert client.post("/v1/auth/refresh", json={"refresh_token": refresh}).status_code == 401
    denied = client.post("/v1/auth/token", json={"email": user.email, "password": PASSWORD})
    assert denied.status_code == 401 and denied.json()["code"] == "invalid_credentials"

    events = client.get(
        "/v1/admin/audit-events", headers=admin, params={"event_type": "admin.user_disabled"}
    ).json()["data"]
    assert any(e["subject_id"] == str(user.id) for e in events)


def test_admin_changes_roles_and_the_old_role_token_stops_working(client, session_factory):
    admin = _admin(client, session_factory)
    operator_user = make_user(session_factory, role="operator")
    operator = login(client, operator_user.email)
    customer = make_user(session_factory)
    # Operators cannot grant roles, not even to themselves.
    own = client.post(
        f"/v1/admin/users/{operator_user.id}/role", headers=operator, json={"role": "admin"}
    )
    assert own.status_code == 403
    changed = client.post(
        f"/v1/admin/users/{operator_user.id}/role", headers=admin, json={"role": "customer"}
    )
    assert changed.status_code == 200 and changed.json()["role"] == "customer"
    # The demoted operator's token is void at once.
    assert client.get("/v1/admin/audit-events", headers=operator).status_code == 401
    assert client.get("/v1/me", headers=operator).status_code == 401
    demoted = login(client, operator_user.email)
    assert client.get("/v1/admin/audit-events", headers=demoted).status_code == 403
    # Admins cannot change or disable themselves; unknown users are 404; bad roles 422.
    me = client.get("/v1/me", headers=admin).json()["id"]
    assert client.post(f"/v1/admin/users/{me}/disable", headers=admin).status_code == 422
    assert (
        client.post(
            f"/v1/admin/users/{customer.id}/role", headers=admin, json={"role": "root"}
        ).status_code
        == 422
    )
    missing = "00000000-0000-0000-0000-000000000000"
    assert client.post(f"/v1/admin/users/{missing}/disable", headers=admin).status_code == 404
    events = client.get(
        "/v1/admin/audit-events", headers=admin, params={"event_type": "admin.user_role_changed"}
    ).json()["data"]
    assert any(e["subject_id"] == str(operator_user.id) for e in events)


def test_operators_and_admins_look_users_up_by_any_variant_of_the_email(client, session_factory):
    admin = _admin(client, session_factory)
    user = make_user(session_factory)
    found = client.get(
        "/v1/admin/users", headers=admin, params={"email": user.email.upper() + "\u3000"}
    )
    assert found.status_code == 200 and [u["id"] for u in found.json()] == [str(user.id)]
    none = client.get("/v1/admin/users", headers=admin, params={"email": random_email()})
    assert none.json() == []
    customer, _ = _tokens(client, user.email)
    assert (
        client.get("/v1/admin/users", headers=customer, params={"email": user.email}).status_code
        == 403
    )


@pytest.mark.parametrize("route", ["/v1/transfers", "/v1/withdrawals", "/v1/transfer-batches"])
def test_money_routes_read_the_cutoff_in_their_one_redis_call(client, session_factory, route):
    """The cutoff comes from Redis with the rate-limit counters: a disabled user's token
    is refused by every money route, with no database read before `settle_accept`."""
    admin = _admin(client, session_factory)
    user = make_user(session_factory)
    headers, _ = _tokens(client, user.email)
    account = open_account(client, headers)
    assert client.post(f"/v1/admin/users/{user.id}/disable", headers=admin).status_code == 200
    body = {"account_id": account["id"], "amount": 1, "currency": "USD"}
    if route != "/v1/withdrawals":
        body = {
            "source_account_id": account["id"],
            "destination_account_number": account["number"],
            "amount": 1,
            "currency": "USD",
        }
    if route == "/v1/transfer-batches":
        body = {"transfers": [body]}
    answer = client.post(route, headers={**headers, **idem()}, json=body)
    assert answer.status_code == 401, answer.text
