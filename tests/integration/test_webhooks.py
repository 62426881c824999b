"""Webhooks end to end against a real local HTTP receiver (sending runs in-process)."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from domain.models import WebhookDelivery, WebhookEndpoint
from domain.webhook_signing import verify
from tests.factories import (
    idem,
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
)
from tests.receiver import Receiver, running_receiver


@pytest.fixture
def hooks_app(settings, redis_client, monkeypatch) -> Iterator[TestClient]:
    """An app and in-process sender allowed to call 127.0.0.1, with a fast retry schedule."""
    from gateway.app import create_app

    overrides = {"webhook_allow_private": True, "webhook_retry_schedule": [0, 0.2, 0.2, 0.2]}
    for name, value in overrides.items():
        monkeypatch.setattr(settings, name, value)  # the in-process worker code reads these
    prefix = f"{settings.redis_prefix}hooks-{secrets.token_hex(3)}:"
    app_settings = settings.model_copy(update={**overrides, "redis_prefix": prefix})
    with TestClient(create_app(app_settings), raise_server_exceptions=False) as client:
        yield client
    for key in redis_client.scan_iter(match=f"{prefix}*"):
        redis_client.delete(key)


def _endpoint(
    client, headers, receiver: Receiver, events=("transfer.succeeded", "transfer.failed")
) -> dict[str, Any]:
    response = client.post(
        "/v1/webhook-endpoints", headers=headers, json={"url": receiver.url, "events": list(events)}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _signed_with(secret: str, request: Any) -> bool:
    """Whether a received webhook carries a valid Standard Webhooks signature by `secret`."""
    headers = request.headers
    return verify(
        secret,
        msg_id=headers["webhook-id"],
        timestamp=int(headers["webhook-timestamp"]),
        body=request.body,
        header=headers["webhook-signature"],
    )


def _deliveries(session_factory, endpoint_id) -> list[WebhookDelivery]:
    with session_factory() as session:
        return list(
            session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.endpoint_id == uuid.UUID(endpoint_id))
            )
        )


def _send_due(session_factory, endpoint_id, timeout=10.0) -> None:
    """What the dispatcher + webhooks worker do, synchronously: send what is due."""
    from workers.tasks import deliver

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = [d for d in _deliveries(session_factory, endpoint_id) if d.status == "pending"]
        if not pending:
            return
        for delivery in pending:
            if delivery.attempts == 0 or delivery.next_attempt_at.timestamp() <= time.time():
                deliver([delivery.id])
        time.sleep(0.05)


def _funded_pair(client, session_factory, drain_pending):
    operator = operator_headers(client, session_factory)
    alice, bob = register_and_login(client), register_and_login(client)
    a, b = open_account(client, alice), open_account(client, bob)
    post_deposit(client, operator, a["id"], 10_000)
    drain_pending()
    return alice, bob, a, b


def test_delivery_is_signed_with_the_endpoint_secret(hooks_app, session_factory, drain_pending):
    client = hooks_app
    alice, _, a, b = _funded_pair(client, session_factory, drain_pending)
    with running_receiver() as receiver:
        endpoint = _endpoint(client, alice, receiver)
        assert endpoint["secret"].startswith("whsec_")
        transfer = post_transfer(client, alice, a["id"], b["number"], 1_234).json()
        drain_pending()
        _send_due(session_factory, endpoint["id"])
        [request] = receiver.wait_for(1)
    headers = request.headers
    assert _signed_with(endpoint["secret"], request)
    payload = json.loads(request.body)
    assert payload["id"] == headers["webhook-id"] and payload["type"] == "transfer.succeeded"
    assert payload["data"]["transfer"]["id"] == transfer["id"]
    [entry] = payload["data"]["entries"]  # only Alice's own leg: Bob's balance stays private
    assert entry["account_id"] == a["id"] and entry["amount"] == -1_234
    assert entry["balance_before"] == 10_000 and entry["balance_after"] == 8_766
    assert entry["sequence"] == 2
    # The secret is never shown again.
    listed = client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=alice).json()
    assert "secret" not in listed


def test_a_completed_batch_arrives_once_at_an_endpoint_subscribed_to_it(
    hooks_app, session_factory, drain_pending
):
    client = hooks_app
    alice, _, a, b = _funded_pair(client, session_factory, drain_pending)
    with running_receiver() as receiver:
        endpoint = _endpoint(client, alice, receiver, events=("batch.completed",))
        item = {
            "source_account_id": a["id"],
            "destination_account_number": b["number"],
            "currency": "USD",
        }
        batch = client.post(
            "/v1/transfer-batches",
            json={"transfers": [{**item, "amount": 100}, {**item, "amount": 20_000}]},
            headers={**alice, **idem()},
        ).json()
        drain_pending()
        _send_due(session_factory, endpoint["id"])
        [request] = receiver.wait_for(1)
    assert _signed_with(endpoint["secret"], request)
    payload = json.loads(request.body)
    assert payload["type"] == "batch.completed" and payload["data"]["id"] == batch["id"]
    assert (payload["data"]["succeeded"], payload["data"]["failed"]) == (1, 1)
    assert len(_deliveries(session_factory, endpoint["id"])) == 1


def test_failing_twice_then_succeeding_arrives_on_the_third_attempt(
    hooks_app, session_factory, drain_pending
):
    client = hooks_app
    alice, _, a, b = _funded_pair(client, session_factory, drain_pending)
    with running_receiver() as receiver:
        receiver.script = [500, 503, 200]
        endpoint = _endpoint(client, alice, receiver)
        post_transfer(client, alice, a["id"], b["number"], 1)
        drain_pending()
        _send_due(session_factory, endpoint["id"])
        requests = receiver.wait_for(3)
    assert len({r.headers["webhook-id"] for r in requests}) == 1  # the same message, retried
    [delivery] = client.get(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=alice
    ).json()["data"]
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 3
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 503, 200]


def test_one_message_sends_many_deliveries_and_records_each_outcome(
    hooks_app, session_factory, drain_pending
):
    """The webhooks worker takes deliveries in batches (one message per endpoint): one
    plan query, sends in event order, successes recorded together, a failure scheduled
    for its retry on its own, and a delivery no longer pending left alone."""
    from workers.tasks import deliver

    client = hooks_app
    alice, _, a, b = _funded_pair(client, session_factory, drain_pending)
    with running_receiver() as receiver:
        receiver.script = [200, 500, 200]
        endpoint = _endpoint(client, alice, receiver)
        for amount in (1, 2, 3):
            post_transfer(client, alice, a["id"], b["number"], amount)
        drain_pending()
        deliveries = sorted(_deliveries(session_factory, endpoint["id"]), key=lambda d: d.event_seq)
        assert len(deliveries) == 3
        ids = [d.id for d in deliveries]
        statuses = deliver([*ids, uuid.uuid4()])  # an unknown id is skipped
        sent = [json.loads(r.body)["data"]["transfer"]["amount"] for r in receiver.requests]
        assert deliver([ids[0]]) == {}  # already succeeded: not sent again
    assert sent == [1, 2, 3] and len(receiver.requests) == 3
    assert statuses == {ids[0]: "succeeded", ids[1]: "pending", ids[2]: "succeeded"}
    after = {d.id: d for d in _deliveries(session_factory, endpoint["id"])}
    for delivery_id in (ids[0], ids[2]):
        done = after[delivery_id]
        assert done.attempts == 1 and done.last_status_code == 200
        assert done.completed_at is not None and done.next_attempt_at is None
    retry = after[ids[1]]
    assert retry.attempts == 1 and retry.last_status_code == 500 and retry.completed_at is None
    assert retry.next_attempt_at is not None
    log = client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=alice).json()
    assert sorted(len(d["attempt_log"]) for d in log["data"]) == [1, 1, 1]
    with session_factory() as session:
        # The last attempt succeeded: the endpoint is not counted as failing.
        assert session.get(WebhookEndpoint, uuid.UUID(endpoint["id"])).failing_since is None


def test_410_disables_the_endpoint(hooks_app, session_factory, drain_pending):
    client = hooks_app
    alice, _, a, b = _funded_pair(client, session_factory, drain_pending)
    operator = operator_headers(client, session_factory)
    with running_receiver() as receiver:
        receiver.default_status = 410
        endpoint = _endpoint(client, alice, receiver)
        post_transfer(client, alice, a["id"], b["number"], 1)
        drain_pending()
        _send_due(session_factory, endpoint["id"])
        receiver.wait_for(1)
    after = client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=alice).json()
    assert after["status"] == "disabled" and "410" in after["disabled_reason"]
    [delivery] = _deliveries(session_factory, endpoint["id"])
    assert delivery.status == "failed" and delivery.attempts == 1
    disabled = client.get(
        "/v1/admin/audit-events",
        headers=operator,
        params={"event_type": "webhook.endpoint_disabled"},
    ).json()["data"]
    assert endpoint["id"] in {e["subject_id"] for e in disabled}


def test_redirects_are_not_followed(hooks_app, session_factory, drain_pending):
    client = hooks_app
    alice, _, a, b = _funded_pair(client, session_factory, drain_pending)
    with running_receiver() as target, running_receiver() as receiver:
        receiver.default_status = 302
        receiver.redirect_to = target.url
        endpoint = _endpoint(client, alice, receiver)
        post_transfer(client, alice, a["id"], b["number"], 1)
        drain_pending()
        _send_due(session_factory, endpoint["id"])
        assert len(receiver.wait_for(4)) == 4  # every attempt of the schedule
        assert target.requests == []
    [delivery] = _deliveries(session_factory, endpoint["id"])
    assert delivery.status == "failed" and delivery.last_status_code == 302


def test_redelivery_and_secret_rotation(hooks_app, session_factory, drain_pending):
    client = hooks_app
    alice, _, a, b = _funded_pair(client, session_factory, drain_pending)
    operator = operator_headers(client, session_factory)
    with running_receiver() as receiver:
        endpoint = _endpoint(client, alice, receiver)
        post_transfer(client, alice, a["id"], b["number"], 1)
        drain_pending()
        _send_due(session_factory, endpoint["id"])
        receiver.wait_for(1)
        rotated = client.post(
            f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=alice
        ).json()
        assert rotated["secret"] != endpoint["secret"]
        [delivery] = _deliveries(session_factory, endpoint["id"])
        url = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/{delivery.id}/redeliver"
        assert client.post(url, headers=alice).status_code == 202
        assert (
            client.post(
                f"/v1/admin/webhook-deliveries/{delivery.id}/redeliver", headers=operator
            ).status_code
            == 202
        )
        _send_due(session_factory, endpoint["id"])
        first, second = receiver.wait_for(2)[:2]
    # After rotation both secrets sign, so a receiver with either one verifies.
    for secret in (endpoint["secret"], rotated["secret"]):
        assert _signed_with(secret, second)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    # Someone else cannot redeliver or even see it.
    other = register_and_login(client)
    assert client.post(url, headers=other).status_code == 404
    assert (
        client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=other).status_code
        == 404
    )


def test_registration_refuses_private_urls_by_default(client):
    headers = register_and_login(client)
    for url in (
        "http://127.0.0.1:9/x",
        "http://localhost/x",
        "http://169.254.169.254/",
        "file:///etc/passwd",
    ):
        response = client.post(
            "/v1/webhook-endpoints",
            headers=headers,
            json={"url": url, "events": ["transfer.succeeded"]},
        )
        assert response.status_code == 422, url
        assert response.json()["code"] == "webhook_url_not_allowed"
    bad_events = client.post(
        "/v1/webhook-endpoints",
        headers=headers,
        json={"url": "https://93.184.216.34/x", "events": ["nope"]},
    )
    assert bad_events.status_code == 422


def test_registration_refuses_non_global_ipv6_and_ports_outside_the_allowlist(client):
    """Issue 10, finding 9: `http://[fec0::1]/`, `:6379` and `:0` were accepted."""
    headers = register_and_login(client)
    expected = {
        "http://[fec0::1]/": "fec0::1 is a site-local address",
        "http://[2002:a00:1::1]/": "6to4 form of a private address",
        "http://[64:ff9b::a9fe:a9fe]/": "NAT64 form of a link-local address",
        "http://93.184.216.34:6379/": "ports 80, 443, 8080, 8443; port 6379 is not allowed",
        "http://93.184.216.34:0/": "port 0",
    }
    for url, detail in expected.items():
        response = client.post(
            "/v1/webhook-endpoints",
            headers=headers,
            json={"url": url, "events": ["transfer.succeeded"]},
        )
        assert response.status_code == 422, url
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "webhook_url_not_allowed"
        assert detail in response.json()["detail"], response.json()


def test_delivery_rechecks_the_port_allowlist():
    """Issue 10, finding 9: an endpoint registered before the allowlist is not called."""
    from domain.services.webhooks import AttemptPlan, WebhookPolicy
    from workers import webhook_sender

    plan = AttemptPlan(
        delivery_id=uuid.uuid4(),
        endpoint_id=uuid.uuid4(),
        url="http://93.184.216.34:6379/",
        msg_id="m",
        body=b"{}",
        secrets=["whsec_" + "A" * 43],
    )
    policy = WebhookPolicy(
        allow_private=False, retry_schedule=[0], disable_after_seconds=1, secret_grace_seconds=1
    )
    outcome = webhook_sender.send(plan, policy=policy, timeout=1)
    assert outcome.status_code is None and "port 6379 is not allowed" in (outcome.error or "")


def test_deliveries_to_a_deleted_endpoint_are_closed_not_retried_forever(
    hooks_app, session_factory, drain_pending
):
    from domain.services import webhooks
    from domain.uow import unit_of_work
    from workers.tasks import deliver

    client = hooks_app
    alice, _, a, b = _funded_pair(client, session_factory, drain_pending)
    with running_receiver() as receiver:
        endpoint = _endpoint(client, alice, receiver)
        post_transfer(client, alice, a["id"], b["number"], 1)
        drain_pending()
        assert (
            client.delete(f"/v1/webhook-endpoints/{endpoint['id']}", headers=alice).status_code
            == 204
        )
        [delivery] = _deliveries(session_factory, endpoint["id"])
        assert deliver([delivery.id]) == {}
        assert receiver.requests == []
    [closed] = _deliveries(session_factory, endpoint["id"])
    assert closed.status == "failed" and closed.next_attempt_at is None
    with unit_of_work(session_factory) as uow:
        session = uow.session
        claimed = webhooks.claim_due(session=session, lease_seconds=1)
        assert delivery.id not in [queued.delivery_id for queued in claimed]


def _walk(client, path, headers) -> list[str]:
    """Every item's id, paging one at a time."""
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        response = client.get(path, params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        seen.extend(item["id"] for item in page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
        assert len(seen) < 100, "the list never ended"


def test_deliveries_written_in_one_transaction_page_one_by_one_without_loss(
    hooks_app, session_factory, drain_pending
):
    client = hooks_app
    operator = operator_headers(client, session_factory)
    alice = register_and_login(client)
    account = open_account(client, alice)
    with running_receiver() as receiver:
        endpoint = _endpoint(client, alice, receiver)
        for amount in (1, 2, 3, 4, 5):
            post_deposit(client, operator, account["id"], amount)
        drain_pending()
    # One drain batch writes them with one now(); pin it, so the test does not depend
    # on how the engine batches.
    with session_factory() as session, session.begin():
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == uuid.UUID(endpoint["id"]))
            .values(created_at=func.now())
        )
    rows = _deliveries(session_factory, endpoint["id"])
    assert len(rows) == 5 and len({row.created_at for row in rows}) == 1

    seen = _walk(client, f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", alice)
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == {str(row.id) for row in rows}
    assert seen == sorted(seen, reverse=True)  # equal times: the id decides, newest first


def test_endpoints_page_one_by_one_without_loss(hooks_app, session_factory):
    client = hooks_app
    alice = register_and_login(client)
    with running_receiver() as receiver:
        created = [_endpoint(client, alice, receiver)["id"] for _ in range(3)]
    with session_factory() as session, session.begin():
        session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id.in_([uuid.UUID(e) for e in created]))
            .values(created_at=func.now())
        )
    seen = _walk(client, "/v1/webhook-endpoints", alice)
    assert len(seen) == len(set(seen)) == 3 and set(seen) == set(created)
    assert seen == sorted(seen)  # equal times: the id decides, oldest first


# --- PATCH /v1/webhook-endpoints/{id} and POST .../test ------------------------------


def test_patch_changes_the_url_and_events_and_the_next_delivery_follows(
    hooks_app, session_factory, drain_pending
):
    client = hooks_app
    alice, _, a, b = _funded_pair(client, session_factory, drain_pending)
    with running_receiver() as first, running_receiver() as second:
        endpoint = _endpoint(client, alice, first, events=("transfer.failed",))
        patched = client.patch(
            f"/v1/webhook-endpoints/{endpoint['id']}",
            json={"url": second.url, "events": ["transfer.succeeded", "balance.below"]},
            headers=alice,
        )
        assert patched.status_code == 200, patched.text
        body = patched.json()
        assert body["url"] == second.url
        assert body["events"] == ["balance.below", "transfer.succeeded"]
        assert "secret" not in body  # the secret is unchanged, and never shown again
        assert client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=alice).json() == body
        post_transfer(client, alice, a["id"], b["number"], 10)
        drain_pending()
        _send_due(session_factory, endpoint["id"])
        [request] = second.wait_for(1)
        assert first.requests == []
    assert json.loads(request.body)["type"] == "transfer.succeeded"
    assert _signed_with(endpoint["secret"], request)  # signed with the secret it had from the start


def test_patch_disables_and_enables_an_endpoint(hooks_app, session_factory, drain_pending):
    client = hooks_app
    alice, _, a, b = _funded_pair(client, session_factory, drain_pending)
    with running_receiver() as receiver:
        endpoint = _endpoint(client, alice, receiver)
        url = f"/v1/webhook-endpoints/{endpoint['id']}"
        post_transfer(client, alice, a["id"], b["number"], 10)
        drain_pending()  # its delivery is written, not sent yet
        disabled = client.patch(url, json={"enabled": False}, headers=alice).json()
        assert disabled["status"] == "disabled"
        assert disabled["disabled_reason"] == "disabled by its owner"
        _send_due(session_factory, endpoint["id"])
        post_transfer(client, alice, a["id"], b["number"], 15)
        drain_pending()
        assert receiver.requests == []  # nothing sent to a disabled endpoint
        [closed] = _deliveries(session_factory, endpoint["id"])  # and nothing new written
        assert closed.status == "failed"
        # Disabled by Settle for failing: enabling it forgets the failures.
        with session_factory() as session, session.begin():
            session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == uuid.UUID(endpoint["id"]))
                .values(failing_since=func.now(), disabled_reason="failing for too long")
            )
        enabled = client.patch(url, json={"enabled": True}, headers=alice).json()
        assert (enabled["status"], enabled["disabled_reason"]) == ("active", None)
        with session_factory() as session:
            assert session.get(WebhookEndpoint, uuid.UUID(endpoint["id"])).failing_since is None
        post_transfer(client, alice, a["id"], b["number"], 20)
        drain_pending()
        _send_due(session_factory, endpoint["id"])
        [request] = receiver.wait_for(1)
    assert json.loads(request.body)["data"]["transfer"]["amount"] == 20


def test_patch_refuses_bad_input_and_other_peoples_endpoints(hooks_app, client, session_factory):
    alice, bob = register_and_login(client), register_and_login(client)
    operator = operator_headers(client, session_factory)
    with running_receiver() as receiver:
        endpoint = _endpoint(hooks_app, alice, receiver)  # an app that allows local URLs
    url = f"/v1/webhook-endpoints/{endpoint['id']}"
    cases = [
        ({}, "nothing_to_update"),
        ({"url": "ftp://hooks.example.com/x"}, "webhook_url_not_allowed"),
        # `client` keeps the default policy: the URL is vetted again, and refused.
        ({"url": receiver.url}, "webhook_url_not_allowed"),
        ({"url": "http://[::1]:8080/hooks"}, "webhook_url_not_allowed"),
        ({"events": []}, None),
        ({"events": ["transfer.nope"]}, None),
        ({"events": ["ping"]}, None),  # not subscribable: every endpoint can be pinged
        ({"enabled": "yes"}, None),
        ({"enabled": False, "secret": "whsec_x"}, None),
    ]
    for body, code in cases:
        response = client.patch(url, json=body, headers=alice)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        if code:
            assert response.json()["code"] == code, (body, response.json())
    with session_factory() as session:  # none of it changed anything
        row = session.get(WebhookEndpoint, uuid.UUID(endpoint["id"]))
        assert (row.url, row.status, row.events) == (
            endpoint["url"],
            "active",
            endpoint["events"],
        )
    # Endpoints are their owner's alone: another customer and operators get 404.
    for headers in (bob, operator):
        response = client.patch(url, json={"enabled": False}, headers=headers)
        assert response.status_code == 404, response.text
        assert client.post(f"{url}/test", headers=headers).status_code == 404
    missing = f"/v1/webhook-endpoints/{uuid.uuid4()}"
    assert client.patch(missing, json={"enabled": False}, headers=alice).status_code == 404
    assert client.post(f"{missing}/test", headers=alice).status_code == 404
    assert client.patch(url, json={"enabled": False}).status_code == 401
    assert client.post(f"{url}/test").status_code == 401


def test_a_test_ping_is_signed_sent_once_and_shown_in_the_deliveries(hooks_app, session_factory):
    client = hooks_app
    alice = register_and_login(client)
    with running_receiver() as receiver:
        endpoint = _endpoint(client, alice, receiver)
        url = f"/v1/webhook-endpoints/{endpoint['id']}"
        queued = client.post(f"{url}/test", headers=alice)
        assert queued.status_code == 202, queued.text
        delivery = queued.json()
        assert (delivery["event_type"], delivery["status"]) == ("ping", "pending")
        # One at a time per endpoint.
        again = client.post(f"{url}/test", headers=alice)
        assert again.status_code == 409 and again.json()["code"] == "ping_in_progress"
        _send_due(session_factory, endpoint["id"])
        [request] = receiver.wait_for(1)
        assert client.post(f"{url}/test", headers=alice).status_code == 202  # sent: free again
    payload = json.loads(request.body)
    assert payload["type"] == "ping" and payload["id"] == delivery["event_id"]
    assert payload["data"] == {"endpoint_id": endpoint["id"]}
    assert request.headers["webhook-id"] == payload["id"]
    assert _signed_with(endpoint["secret"], request)
    listed = client.get(f"{url}/deliveries", headers=alice).json()["data"]
    sent = next(d for d in listed if d["id"] == delivery["id"])
    assert sent["status"] == "succeeded" and sent["event_type"] == "ping"
    assert [a["status_code"] for a in sent["attempt_log"]] == [200]
    # A ping is no event of the stream.
    assert client.get("/v1/events", headers=alice).json()["data"] == []


def test_a_failed_ping_is_not_retried_and_does_not_count_against_the_endpoint(
    hooks_app, session_factory
):
    client = hooks_app
    alice = register_and_login(client)
    with running_receiver() as receiver:
        receiver.default_status = 410  # would disable the endpoint for a real event
        endpoint = _endpoint(client, alice, receiver)
        url = f"/v1/webhook-endpoints/{endpoint['id']}"
        # A disabled endpoint can be pinged, to check it before enabling it again.
        client.patch(url, json={"enabled": False}, headers=alice)
        assert client.post(f"{url}/test", headers=alice).status_code == 202
        _send_due(session_factory, endpoint["id"])
        receiver.wait_for(1)
        time.sleep(0.5)  # a retry would be due by now (0.2 s schedule)
        _send_due(session_factory, endpoint["id"])
        assert len(receiver.requests) == 1
    [ping] = _deliveries(session_factory, endpoint["id"])
    assert (ping.status, ping.attempts, ping.last_status_code) == ("failed", 1, 410)
    with session_factory() as session:
        row = session.get(WebhookEndpoint, uuid.UUID(endpoint["id"]))
        assert row.failing_since is None
        assert row.disabled_reason == "disabled by its owner"  # not "answered 410"
