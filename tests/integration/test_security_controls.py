"""Rate limits, lockouts, security audit events, anomaly flags, and HTTP hardening,
on real Redis and PostgreSQL, through apps built with tight limits."""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import (
    PASSWORD,
    idem,
    login,
    make_user,
    open_account,
    operator_headers,
    random_email,
    register_and_login,
)


@contextmanager
def app_with(settings: Any, redis_client: Any, **overrides: Any) -> Iterator[TestClient]:
    from gateway.app import create_app

    prefix = f"{settings.redis_prefix}sec-{secrets.token_hex(3)}:"
    tuned = settings.model_copy(update={"redis_prefix": prefix, **overrides})
    try:
        with TestClient(create_app(tuned), raise_server_exceptions=False) as client:
            yield client
    finally:
        for key in redis_client.scan_iter(match=f"{prefix}*"):
            redis_client.delete(key)


def _audit(client, operator, event_type):
    response = client.get(
        "/v1/admin/audit-events", headers=operator, params={"event_type": event_type, "limit": 200}
    )
    return response.json()["data"]


def test_login_rate_limit_per_ip_answers_429_with_retry_after(settings, redis_client):
    with app_with(settings, redis_client, rate_limit_login_per_ip="3/60") as client:
        body = {"email": random_email(), "password": "nope-nope-nope"}
        codes = [client.post("/v1/auth/token", json=body).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        limited = client.post("/v1/auth/token", json=body)
        assert limited.headers["content-type"] == "application/problem+json"
        assert 0 < int(limited.headers["Retry-After"]) <= 60
        assert limited.json()["code"] == "rate_limited"


def test_registration_and_money_rate_limits(settings, redis_client, session_factory):
    with app_with(
        settings,
        redis_client,
        rate_limit_register_per_ip="2/3600",
        rate_limit_money_per_user="2/60",
    ) as client:
        for _ in range(2):
            assert (
                client.post(
                    "/v1/auth/register", json={"email": random_email(), "password": PASSWORD}
                ).status_code
                == 201
            )
        third = client.post(
            "/v1/auth/register", json={"email": random_email(), "password": PASSWORD}
        )
        assert third.status_code == 429
        user = make_user(session_factory)
        headers = login(client, user.email)
        account = open_account(client, headers)
        body = {"account_id": account["id"], "amount": 1, "currency": "USD"}
        codes = [
            client.post("/v1/withdrawals", json=body, headers={**headers, **idem()}).status_code
            for _ in range(3)
        ]
        assert codes == [202, 202, 429]


def test_failed_logins_lock_the_pair_grow_and_are_audited(settings, redis_client, session_factory):
    with app_with(
        settings, redis_client, lockout_threshold=3, lockout_base_seconds=30, lockout_max_seconds=60
    ) as client:
        victim = make_user(session_factory)
        wrong = {"email": victim.email, "password": "not the password"}
        assert [client.post("/v1/auth/token", json=wrong).status_code for _ in range(3)] == [
            401,
            401,
            401,
        ]
        locked = client.post("/v1/auth/token", json={"email": victim.email, "password": PASSWORD})
        assert locked.status_code == 429 and locked.json()["code"] == "login_locked"
        assert 0 < int(locked.headers["Retry-After"]) <= 30
        # Unknown emails lock the same way, so lockouts reveal nothing about who exists.
        ghost = {"email": random_email(), "password": "not the password"}
        assert [client.post("/v1/auth/token", json=ghost).status_code for _ in range(4)] == [
            401,
            401,
            401,
            429,
        ]
        operator = operator_headers(client, session_factory)
        failures = _audit(client, operator, "auth.login_failed")
        assert sum(e["data"]["email"] == victim.email for e in failures) == 3
        [lockout] = [
            e
            for e in _audit(client, operator, "auth.lockout")
            if e["data"]["email"] == victim.email
        ]
        assert lockout["data"]["seconds"] == 30 and lockout["request_id"]


def test_successful_login_token_reuse_and_denials_are_audited(client, session_factory):
    operator = operator_headers(client, session_factory)
    email = random_email()
    client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
    pair = client.post("/v1/auth/token", json={"email": email, "password": PASSWORD}).json()
    client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})  # reuse
    customer = {"Authorization": f"Bearer {pair['access_token']}"}
    me = client.get("/v1/me", headers=customer).json()
    assert client.get("/v1/admin/audit-events", headers=customer).status_code == 403

    assert me["id"] in {e["actor_id"] for e in _audit(client, operator, "auth.login_succeeded")}
    assert me["id"] in {e["actor_id"] for e in _audit(client, operator, "auth.registered")}
    assert _audit(client, operator, "auth.refresh_token_reused")
    denied = [
        e for e in _audit(client, operator, "auth.permission_denied") if e["actor_id"] == me["id"]
    ]
    assert denied and denied[0]["data"]["path"] == "/v1/admin/audit-events"


def test_large_transfer_and_velocity_anomalies_are_flagged(settings, redis_client, session_factory):
    with app_with(
        settings, redis_client, large_transfer_threshold=5_000, daily_velocity_threshold=2
    ) as client:
        operator = operator_headers(client, session_factory)
        account = open_account(client, register_and_login(client))
        bodies = [
            {"account_id": account["id"], "amount": amount, "currency": "USD"}
            for amount in (100, 5_000, 200)
        ]
        ids = [
            client.post("/v1/deposits", json=b, headers={**operator, **idem()}).json()["id"]
            for b in bodies
        ]
        large = {e["subject_id"] for e in _audit(client, operator, "anomaly.large_transfer")}
        assert ids[1] in large and ids[0] not in large
        velocity = _audit(client, operator, "anomaly.daily_velocity")
        assert len([e for e in velocity if e["data"]["threshold"] == 2]) >= 1
        accepted = {e["subject_id"] for e in _audit(client, operator, "transfer.accepted")}
        assert set(ids) <= accepted
        metrics = client.get("/metrics").text
        assert 'settle_anomalies_total{kind="large_transfer"}' in metrics


def test_unknown_user_and_wrong_password_take_about_the_same_time(
    settings, redis_client, session_factory
):
    """Both paths run one argon2 verification, so timing reveals nothing (generous bound)."""
    user = make_user(session_factory)
    with app_with(settings, redis_client, lockout_threshold=1000) as client:
        known, unknown = _login_timings(client, user.email)
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.5 < ratio < 2.0, (known, unknown)


def _login_timings(client, email):
    def timed(email):
        started = time.perf_counter()
        response = client.post("/v1/auth/token", json={"email": email, "password": "x" * 12})
        assert response.status_code == 401
        return time.perf_counter() - started

    return [timed(email) for _ in range(7)], [timed(random_email()) for _ in range(7)]


def test_every_response_has_a_request_id_and_security_headers(client):
    response = client.get("/v1/me")
    assert response.status_code == 401
    assert len(response.headers["X-Request-ID"]) == 32
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    echoed = client.get("/healthz", headers={"X-Request-ID": "trace-abc.123"})
    assert echoed.headers["X-Request-ID"] == "trace-abc.123"
    hostile = client.get("/healthz", headers={"X-Request-ID": "<script>"})
    assert hostile.headers["X-Request-ID"] != "<script>"


def test_oversized_bodies_are_refused_with_413(client):
    response = client.post(
        "/v1/auth/register",
        content=b"{" + b" " * 70_000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"


@pytest.mark.parametrize("path", ["/v1/auth/register", "/v1/transfer-batches"])
def test_streamed_oversized_bodies_are_refused_with_413(client, path):
    """Issue 10, finding 7: a chunked body (no Content-Length) over the limit got 400,
    because FastAPI turned the middleware's exception into "error parsing the body"."""

    def chunks() -> Iterator[bytes]:
        yield b'{"email": "'
        for _ in range(2_000):
            yield b"a" * 1024
        yield b'"}'

    response = client.post(path, content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "request_too_large"
    assert "exceeds" in body["detail"]


def test_cors_allowlist(settings, redis_client):
    with app_with(settings, redis_client, cors_origins=["https://app.example"]) as client:
        allowed = client.options(
            "/v1/me",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
        )
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        other = client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_docs_and_metrics_can_be_switched_off_or_protected(settings, redis_client):
    with app_with(
        settings, redis_client, expose_docs=False, metrics_token="m" * 32, hsts=True
    ) as client:
        assert client.get("/docs").status_code == 404
        assert client.get("/openapi.json").status_code == 404
        assert client.get("/metrics").status_code == 401
        ok = client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 32})
        assert ok.status_code == 200
        assert "max-age" in ok.headers["Strict-Transport-Security"]


@pytest.mark.parametrize("path", ["/v1/nope", "/v1/accounts/not-a-uuid"])
def test_errors_never_leak_internals(client, path):
    response = client.get(path, headers={"Authorization": "Bearer x"})
    assert response.headers["content-type"] == "application/problem+json"
    assert "Traceback" not in response.text and "sqlalchemy" not in response.text.lower()
