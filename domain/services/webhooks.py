"""Webhook endpoints (create, list, change, delete, rotate secret, send a test ping) and
the delivery state machine.

Sending happens in workers; this module decides *what* to send (`plan_attempts`) and
what an attempt's outcome means (`record_attempts`): success, a retry at the next step
of the schedule (with jitter), a 410 that disables the endpoint, or an endpoint that
has failed for too long and is disabled with an audit event. Both take many
deliveries at once: planning is one query, and successes (the common case) are
recorded in one statement, so the database work per webhook stays small under load.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from domain.errors import Conflict, InvalidRequest, NotFound
from domain.models import User, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from domain.repositories import events as events_repo
from domain.repositories import quotas as quotas_repo
from domain.repositories import webhooks as webhooks_repo
from domain.resources import PingData, PingEvent
from domain.secret_box import SecretBox
from domain.services import audit
from domain.services.events import EVENT_TYPES, new_event_id
from domain.uow import QueuedDelivery
from domain.webhook_signing import new_secret
from domain.webhook_urls import DEFAULT_PORTS, resolve

MAX_ENDPOINTS_PER_USER = 20
# The dispatcher (workers/dispatcher.py) LISTENs here: a delivery became due sooner
# than it knew (a redelivery, a retry scheduled). PostgreSQL sends it on commit.
DUE_CHANNEL = "settle_webhooks_due"


@dataclass(frozen=True, kw_only=True)
class WebhookPolicy:
    allow_private: bool
    retry_schedule: list[float]  # seconds before attempt 1, 2, 3... (first is usually 0)
    disable_after_seconds: float
    secret_grace_seconds: float
    allowed_ports: frozenset[int] = DEFAULT_PORTS
    explain_private: bool = False  # development: refusals name the switch that lifts them


@dataclass(frozen=True)
class AttemptPlan:
    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    url: str
    msg_id: str
    body: bytes
    secrets: list[str]
    event_at: datetime | None = None  # when the event was committed (latency metric)


@dataclass(frozen=True)
class AttemptOutcome:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _check_events(events: list[str]) -> None:
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if not events or unknown:
        raise InvalidRequest(
            f"events must be a non-empty subset of {', '.join(EVENT_TYPES)}",
            code="invalid_event_types",
        )


def _vet_url(url: str, policy: WebhookPolicy) -> None:
    resolve(
        url,
        allow_private=policy.allow_private,
        allowed_ports=policy.allowed_ports,
        explain_private=policy.explain_private,
    )


def create_endpoint(
    *,
    session: Session,
    user: User,
    url: str,
    events: list[str],
    box: SecretBox,
    policy: WebhookPolicy,
) -> tuple[WebhookEndpoint, str]:
    """Returns the endpoint and its secret, which is shown this once and stored encrypted."""
    _check_events(events)
    _vet_url(url, policy)
    # Under the user's quota lock, so concurrent creates cannot all pass the count.
    quotas_repo.lock_user_quotas(session, user.id)
    if webhooks_repo.count_endpoints(session, user.id) >= MAX_ENDPOINTS_PER_USER:
        raise InvalidRequest(
            f"at most {MAX_ENDPOINTS_PER_USER} webhook endpoints per user; "
            "delete one you no longer use first",
            code="too_many_endpoints",
        )
    secret = new_secret()
    endpoint = WebhookEndpoint(
        id=uuid.uuid4(),
        user_id=user.id,
        url=url,
        events=sorted(set(events)),
        secret_ciphertext=box.seal(secret),
        status="active",
    )
    webhooks_repo.add(session, endpoint)
    return endpoint, secret


def get_owned(*, session: Session, user: User, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    endpoint = webhooks_repo.get_endpoint(session, endpoint_id)
    if endpoint is None or endpoint.user_id != user.id:
        raise NotFound("webhook endpoint not found")
    return endpoint


def list_endpoints(
    *, session: Session, user: User, after: webhooks_repo.Position | None, limit: int
) -> list[WebhookEndpoint]:
    return webhooks_repo.endpoints_of(session, user.id, after=after, limit=limit)


def delete_endpoint(*, session: Session, user: User, endpoint_id: uuid.UUID) -> None:
    endpoint = get_owned(session=session, user=user, endpoint_id=endpoint_id)
    endpoint.deleted_at = datetime.now(UTC)
    session.flush()


@dataclass(frozen=True, kw_only=True)
class UpdateEndpoint:
    """PATCH: each field given changes; None leaves it as it is."""

    url: str | None = None
    events: list[str] | None = None
    enabled: bool | None = None


def update_endpoint(
    *,
    session: Session,
    user: User,
    endpoint_id: uuid.UUID,
    cmd: UpdateEndpoint,
    policy: WebhookPolicy,
) -> WebhookEndpoint:
    """Changes the URL (vetted as at creation), the events, or whether it is enabled.

    Enabling an endpoint that was disabled (by its owner, a 410 or failing for too long)
    clears the failure record: the next failure starts the clock again. Disabling stops
    its pending deliveries (the worker closes them as failed)."""
    endpoint = get_owned(session=session, user=user, endpoint_id=endpoint_id)
    changed: list[str] = []
    if cmd.url is not None:
        _vet_url(cmd.url, policy)
        endpoint.url = cmd.url
        changed.append("url")
    if cmd.events is not None:
        _check_events(cmd.events)
        endpoint.events = sorted(set(cmd.events))
        changed.append("events")
    if cmd.enabled is not None:
        if cmd.enabled:
            endpoint.status, endpoint.disabled_reason, endpoint.failing_since = (
                "active",
                None,
                None,
            )
        else:
            endpoint.status, endpoint.disabled_reason = "disabled", "disabled by its owner"
        changed.append("enabled")
    if not changed:
        raise InvalidRequest("give at least one of url, events, enabled", code="nothing_to_update")
    session.flush()
    audit.record(
        session,
        "webhook.endpoint_updated",
        actor_id=user.id,
        subject_type="webhook_endpoint",
        subject_id=str(endpoint.id),
        data={"changed": changed, "status": endpoint.status},
    )
    return endpoint


PING = "ping"


def send_test(*, session: Session, user: User, endpoint_id: uuid.UUID) -> WebhookDelivery:
    """A signed `ping` to the endpoint, sent once by the webhooks worker (within about a
    second, by the dispatcher); its outcome is in the endpoint's deliveries.

    A ping is no event of the user's stream: the delivery carries its own payload. It
    is tried once, and its failure neither disables the endpoint nor counts toward
    disabling it. A disabled endpoint can be pinged (to check it before enabling it).
    One ping per endpoint at a time, so a test cannot be turned into a flood."""
    endpoint = webhooks_repo.get_endpoint(session, endpoint_id, lock=True)
    if endpoint is None or endpoint.user_id != user.id:
        raise NotFound("webhook endpoint not found")
    if webhooks_repo.has_pending_ping(session, endpoint_id):
        raise Conflict(
            "a test ping to this endpoint is still being sent; see its deliveries, then try again",
            code="ping_in_progress",
        )
    now = datetime.now(UTC)
    event = PingEvent(
        id=new_event_id(),
        type=PING,
        created_at=now,
        data=PingData(endpoint_id=endpoint.id),
    )
    delivery = WebhookDelivery(
        id=uuid.uuid4(),
        endpoint_id=endpoint.id,
        event_seq=None,
        payload=event.model_dump(mode="json"),
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    webhooks_repo.add_delivery(session, delivery)
    webhooks_repo.notify(session, DUE_CHANNEL)  # the dispatcher sends it once this commits
    return delivery


def rotate_secret(
    *,
    session: Session,
    user: User,
    endpoint_id: uuid.UUID,
    box: SecretBox,
    policy: WebhookPolicy,
) -> tuple[WebhookEndpoint, str]:
    """New secret now; the old one keeps signing too until the grace period ends."""
    endpoint = get_owned(session=session, user=user, endpoint_id=endpoint_id)
    secret = new_secret()
    endpoint.previous_secret_ciphertext = endpoint.secret_ciphertext
    endpoint.previous_secret_expires_at = datetime.now(UTC) + timedelta(
        seconds=policy.secret_grace_seconds
    )
    endpoint.secret_ciphertext = box.seal(secret)
    session.flush()
    return endpoint, secret


def claim_due(*, session: Session, lease_seconds: float, limit: int = 500) -> list[QueuedDelivery]:
    """Due deliveries (retries, redeliveries, lost immediate sends), leased to the caller."""
    now = datetime.now(UTC)
    return webhooks_repo.claim_due(
        session, now=now, lease_until=now + timedelta(seconds=lease_seconds), limit=limit
    )


def next_due(*, session: Session) -> datetime | None:
    """When the earliest pending delivery falls due, if any is pending."""
    return webhooks_repo.next_due(session)


@dataclass(frozen=True)
class Sent:
    """What a delivery carries: its event's id, type and body."""

    id: str
    type: str
    payload: dict[str, Any]


def event_of(session: Session, delivery: WebhookDelivery) -> Sent | None:
    """The event a delivery sends, or its own payload (a ping)."""
    if delivery.payload is not None:
        return Sent(delivery.payload["id"], delivery.payload["type"], delivery.payload)
    event = events_repo.get(session, delivery.event_seq) if delivery.event_seq else None
    return None if event is None else Sent(event.id, event.type, event.payload)


def list_deliveries(
    *,
    session: Session,
    user: User,
    endpoint_id: uuid.UUID,
    before: webhooks_repo.Position | None,
    limit: int,
) -> tuple[list[WebhookDelivery], dict[uuid.UUID, list[WebhookAttempt]]]:
    get_owned(session=session, user=user, endpoint_id=endpoint_id)
    deliveries = webhooks_repo.deliveries_of(session, endpoint_id, before=before, limit=limit)
    attempts: dict[uuid.UUID, list[WebhookAttempt]] = {d.id: [] for d in deliveries}
    for attempt in webhooks_repo.attempts_of(session, list(attempts)):
        attempts[attempt.delivery_id].append(attempt)
    return deliveries, attempts


def redeliver(
    *,
    session: Session,
    user: User,
    delivery_id: uuid.UUID,
    endpoint_id: uuid.UUID | None = None,
) -> WebhookDelivery:
    """Send again now (owner of the endpoint, or an operator). A disabled endpoint stays
    disabled, so its deliveries cannot be redelivered (409). With `endpoint_id`, the
    delivery must belong to that endpoint. Every check comes before any change."""
    delivery = webhooks_repo.get_delivery(session, delivery_id, lock=True)
    endpoint = webhooks_repo.get_endpoint(session, delivery.endpoint_id) if delivery else None
    if (
        delivery is None
        or endpoint is None
        or not (user.role.sees_everything or endpoint.user_id == user.id)
        or (endpoint_id is not None and delivery.endpoint_id != endpoint_id)
    ):
        raise NotFound("delivery not found")
    if endpoint.status != "active":
        raise Conflict("the endpoint is disabled", code="endpoint_disabled")
    delivery.status = "pending"
    delivery.next_attempt_at = datetime.now(UTC)
    delivery.completed_at = None
    session.flush()
    webhooks_repo.notify(session, DUE_CHANNEL)
    audit.record(
        session,
        "webhook.redelivery_requested",
        actor_id=user.id,
        subject_type="webhook_delivery",
        subject_id=str(delivery.id),
    )
    return delivery


def plan_attempts(
    *, session: Session, delivery_ids: Sequence[uuid.UUID], box: SecretBox
) -> list[AttemptPlan]:
    """What to send for those of `delivery_ids` that are still pending, oldest event first.

    A pending delivery whose endpoint was deleted or disabled is closed as failed here;
    left pending, the dispatcher would claim it again at every lease expiry, forever.
    """
    now = datetime.now(UTC)
    plans: list[AttemptPlan] = []
    undeliverable: list[uuid.UUID] = []
    opened: dict[bytes, str] = {}  # one decryption per secret, not per delivery

    def open_secret(ciphertext: bytes) -> str:
        if ciphertext not in opened:
            opened[ciphertext] = box.open(ciphertext)
        return opened[ciphertext]

    for row in webhooks_repo.sendable(session, delivery_ids):
        if (
            row.endpoint_id is None
            or row.deleted_at is not None
            or (row.endpoint_status != "active" and not row.is_ping)
            or row.msg_id is None
        ):
            undeliverable.append(row.id)
            continue
        secrets = [open_secret(bytes(row.secret_ciphertext))]
        expires = row.previous_secret_expires_at
        if row.previous_secret_ciphertext and expires and expires > now:
            secrets.append(open_secret(bytes(row.previous_secret_ciphertext)))
        body = json.dumps(row.payload, separators=(",", ":"), sort_keys=True).encode()
        plans.append(
            AttemptPlan(
                delivery_id=row.id,
                endpoint_id=row.endpoint_id,
                url=row.url,
                msg_id=row.msg_id,
                body=body,
                secrets=secrets,
                event_at=row.event_at,
            )
        )
    if undeliverable:
        webhooks_repo.close_undeliverable(
            session, undeliverable, now=now, reason="endpoint deleted or disabled"
        )
    return plans


def record_attempts(
    *,
    session: Session,
    outcomes: Sequence[tuple[AttemptPlan, AttemptOutcome]],
    policy: WebhookPolicy,
) -> dict[uuid.UUID, str]:
    """Record what each attempt did, given in the order they were made; returns each
    delivery's status afterwards.

    Successes go in one statement. Failures, which need the retry schedule and may
    disable their endpoint, go one by one (`record_attempt`). An endpoint whose last
    attempt here succeeded has its failure streak ended.
    """
    now = datetime.now(UTC)
    succeeded = [(plan, o) for plan, o in outcomes if o.succeeded]
    if succeeded:
        webhooks_repo.record_successes(
            session,
            now=now,
            delivery_ids=[plan.delivery_id for plan, _ in succeeded],
            status_codes=[o.status_code or 0 for _, o in succeeded],
            durations_ms=[o.duration_ms for _, o in succeeded],
        )
    statuses = {plan.delivery_id: "succeeded" for plan, _ in succeeded}
    for plan, outcome in outcomes:
        if outcome.succeeded:
            continue
        delivery = record_attempt(
            session=session,
            delivery_id=plan.delivery_id,
            status_code=outcome.status_code,
            error=outcome.error,
            duration_ms=outcome.duration_ms,
            policy=policy,
        )
        if delivery is not None:
            statuses[plan.delivery_id] = delivery.status
    last_succeeded = {plan.endpoint_id: o.succeeded for plan, o in outcomes}
    recovered = [endpoint for endpoint, ok in last_succeeded.items() if ok]
    if recovered:
        webhooks_repo.end_failure_streaks(session, recovered)
    return statuses


def record_attempt(
    *,
    session: Session,
    delivery_id: uuid.UUID,
    status_code: int | None,
    error: str | None,
    duration_ms: int,
    policy: WebhookPolicy,
) -> WebhookDelivery | None:
    delivery = webhooks_repo.get_delivery(session, delivery_id, lock=True)
    if delivery is None:
        return None
    endpoint = webhooks_repo.get_endpoint(session, delivery.endpoint_id)
    now = datetime.now(UTC)
    webhooks_repo.add_attempt(
        session,
        WebhookAttempt(
            delivery_id=delivery.id,
            attempted_at=now,
            status_code=status_code,
            error=(error or "")[:500] or None,
            duration_ms=duration_ms,
        ),
    )
    delivery.attempts += 1
    delivery.last_status_code, delivery.last_error = status_code, (error or "")[:500] or None
    if status_code is not None and 200 <= status_code < 300:
        delivery.status, delivery.completed_at, delivery.next_attempt_at = "succeeded", now, None
        if endpoint is not None and delivery.event_seq is not None:
            endpoint.failing_since = None
        session.flush()
        return delivery
    if delivery.event_seq is None:  # a ping: tried once, and it says nothing about the endpoint
        delivery.status, delivery.completed_at, delivery.next_attempt_at = "failed", now, None
        session.flush()
        return delivery
    if endpoint is not None:
        endpoint.failing_since = endpoint.failing_since or now
        if status_code == 410:
            _disable(session, endpoint, "the endpoint answered 410 Gone")
        elif (now - endpoint.failing_since).total_seconds() >= policy.disable_after_seconds:
            _disable(session, endpoint, "failing for too long")
    schedule = policy.retry_schedule
    if endpoint is None or endpoint.status != "active" or delivery.attempts >= len(schedule):
        delivery.status, delivery.completed_at, delivery.next_attempt_at = "failed", now, None
    else:
        delay = schedule[delivery.attempts] * random.uniform(0.9, 1.1)  # noqa: S311 - jitter
        delivery.next_attempt_at = now + timedelta(seconds=delay)
        # The dispatcher may be asleep until a later due time: tell it to look again.
        webhooks_repo.notify(session, DUE_CHANNEL)
    session.flush()
    return delivery


def _disable(session: Session, endpoint: WebhookEndpoint, reason: str) -> None:
    endpoint.status, endpoint.disabled_reason = "disabled", reason
    audit.record(
        session,
        "webhook.endpoint_disabled",
        actor_id=endpoint.user_id,
        subject_type="webhook_endpoint",
        subject_id=str(endpoint.id),
        data={"reason": reason},
    )
