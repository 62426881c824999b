"""Two users, every endpoint that takes an id: the owner gets it, the other gets 404,
and nobody can set fields the API does not accept (mass assignment)."""

from __future__ import annotations

import pytest

from tests.factories import (
    idem,
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
)


@pytest.fixture(scope="module")
def two_users(client, session_factory):
    owner, other = register_and_login(client), register_and_login(client)
    account = open_account(client, owner)
    third_party = open_account(client, register_and_login(client))
    post_deposit(client, operator_headers(client, session_factory), account["id"], 1_000)
    transfer = post_transfer(client, owner, account["id"], third_party["number"], 1).json()
    return {"owner": owner, "other": other, "account": account, "transfer": transfer}


def _requests(world):
    account_id, transfer_id = world["account"]["id"], world["transfer"]["id"]
    money = {"account_id": account_id, "amount": 1, "currency": "USD"}
    return [
        ("GET", f"/v1/accounts/{account_id}", None, 200),
        ("GET", f"/v1/accounts/{account_id}/entries", None, 200),
        ("POST", f"/v1/accounts/{account_id}/balance-alerts", {"below": 1}, 201),
        ("GET", f"/v1/accounts/{account_id}/balance-alerts", None, 200),
        ("GET", f"/v1/transfers/{transfer_id}", None, 200),
        ("POST", "/v1/withdrawals", money, 202),
        (
            "POST",
            "/v1/transfers",
            {
                "source_account_id": account_id,
                "destination_account_number": world["account"]["number"],
                "amount": 1,
                "currency": "USD",
            },
            422,
        ),  # same account
    ]


@pytest.mark.parametrize("index", range(7))
def test_owner_allowed_other_user_gets_404(client, two_users, index):
    method, path, body, owner_status = _requests(two_users)[index]
    as_owner = client.request(method, path, json=body, headers={**two_users["owner"], **idem()})
    assert as_owner.status_code == owner_status, as_owner.text
    as_other = client.request(method, path, json=body, headers={**two_users["other"], **idem()})
    assert as_other.status_code == 404, as_other.text
    assert as_other.json()["code"] == "not_found"
    assert "detail" in as_other.json() and two_users["account"]["number"] not in as_other.text


def test_lists_only_show_your_own(client, two_users):
    other = two_users["other"]
    accounts = client.get("/v1/accounts", headers=other).json()["data"]
    assert two_users["account"]["id"] not in {a["id"] for a in accounts}
    filtered = client.get(
        "/v1/transfers", params={"account_id": two_users["account"]["id"]}, headers=other
    ).json()["data"]
    assert filtered == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/auth/register",
            {"email": "m@example.com", "password": "correct horse battery", "role": "admin"},
        ),
        ("/v1/accounts", {"currency": "USD", "balance": 1_000_000}),
        ("/v1/accounts", {"currency": "USD", "status": "active", "owner_id": "x"}),
        ("/v1/accounts", {"currency": "USD", "overdraft_limit": 10**9}),
        (
            "/v1/withdrawals",
            {
                "account_id": "00000000-0000-0000-0000-000000000000",
                "amount": 1,
                "currency": "USD",
                "status": "succeeded",
            },
        ),
    ],
)
def test_mass_assignment_is_rejected(client, two_users, path, body):
    response = client.post(path, json=body, headers={**two_users["owner"], **idem()})
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert any(err["type"] == "extra_forbidden" for err in response.json()["errors"])


def test_responses_never_include_hashes_or_secrets(client, two_users):
    me = client.get("/v1/me", headers=two_users["owner"]).text
    account = client.get(
        f"/v1/accounts/{two_users['account']['id']}", headers=two_users["owner"]
    ).text
    for text in (me, account):
        assert "argon2" not in text and "password" not in text and "hash" not in text
