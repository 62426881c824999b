"""Registration, login, refresh-token rotation and reuse detection, logout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.factories import PASSWORD, login, random_email


def _register(client, email=None, password=PASSWORD):
    return client.post(
        "/v1/auth/register", json={"email": email or random_email(), "password": password}
    )


def test_register_returns_customer_without_secrets(client):
    email = random_email()
    response = _register(client, email)
    assert response.status_code == 201
    body = response.json()
    assert body == {"id": body["id"], "email": email, "role": "customer"}


def test_register_rejects_role_smuggling_duplicates_and_weak_passwords(client):
    email = random_email()
    smuggled = client.post(
        "/v1/auth/register", json={"email": email, "password": PASSWORD, "role": "admin"}
    )
    assert smuggled.status_code == 422
    assert _register(client, email).status_code == 201
    duplicate = _register(client, email.upper())
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "email_taken"
    weak = _register(client, password="short")
    assert weak.status_code == 422 and weak.json()["code"] == "weak_password"
    assert _register(client, email="not-an-email").json()["code"] == "invalid_email"


def test_wrong_password_and_unknown_email_answer_identically(client):
    email = random_email()
    _register(client, email)
    wrong = client.post("/v1/auth/token", json={"email": email, "password": "nope-nope-nope"})
    unknown = client.post(
        "/v1/auth/token", json={"email": random_email(), "password": "nope-nope-nope"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


def test_me_and_token_shape(client):
    email = random_email()
    _register(client, email)
    pair = client.post("/v1/auth/token", json={"email": email, "password": PASSWORD}).json()
    assert pair["token_type"] == "bearer" and pair["expires_in"] == 900
    me = client.get("/v1/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert me.status_code == 200 and me.json()["email"] == email
    refresh_as_access = client.get(
        "/v1/me", headers={"Authorization": f"Bearer {pair['refresh_token']}"}
    )
    assert refresh_as_access.status_code == 401


def test_refresh_rotates_and_reuse_revokes_the_family(client):
    email = random_email()
    _register(client, email)
    first = client.post("/v1/auth/token", json={"email": email, "password": PASSWORD}).json()
    second = client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    rotated = second.json()["refresh_token"]
    assert rotated != first["refresh_token"]
    # The first token is replayed (stolen): refused, and the family is revoked...
    reuse = client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401 and reuse.json()["code"] == "token_reused"
    # ...so even the legitimate latest token no longer works.
    after = client.post("/v1/auth/refresh", json={"refresh_token": rotated})
    assert after.status_code == 401


def test_logout_revokes_the_refresh_token(client):
    email = random_email()
    _register(client, email)
    pair = client.post("/v1/auth/token", json={"email": email, "password": PASSWORD}).json()
    assert (
        client.post("/v1/auth/logout", json={"refresh_token": pair["refresh_token"]}).status_code
        == 204
    )
    assert (
        client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code
        == 401
    )


def test_cli_migrate_and_create_user(client):
    settle = Path(sys.executable).parent / "settle"
    env = dict(os.environ)
    assert subprocess.run([settle, "migrate"], env=env, check=False).returncode == 0
    email = random_email("admin")
    created = subprocess.run(
        [settle, "create-user", "--email", email, "--password", PASSWORD, "--role", "admin"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    me = client.get("/v1/me", headers=login(client, email)).json()
    assert me["role"] == "admin"
    again = subprocess.run(
        [settle, "create-user", "--email", email, "--password", PASSWORD, "--role", "admin"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 2 and "already exists" in again.stderr
