"""Webhook endpoints of the current user, their deliveries, and manual redelivery."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from domain.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from domain.secret_box import SecretBox
from domain.services import webhooks
from gateway import cursors
from gateway.deps import CurrentUser, OperatorUser, SessionDep, SettingsDep
from gateway.errors import problem_responses
from gateway.schemas.common import CursorParam, Page, paginate
from gateway.schemas.webhooks import (
    AttemptOut,
    DeliveryOut,
    EndpointCreate,
    EndpointOut,
    EndpointUpdate,
    EndpointWithSecret,
)

router = APIRouter(tags=["webhooks"])


def _box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.secret_box
    return box


def endpoint_out(endpoint: WebhookEndpoint) -> EndpointOut:
    return EndpointOut.model_validate(endpoint, from_attributes=True)


@router.post(
    "/v1/webhook-endpoints",
    status_code=status.HTTP_201_CREATED,
    response_model=EndpointWithSecret,
    summary="Register an endpoint; the response holds its secret, shown once",
    description="Only http(s) URLs whose host resolves to public addresses.",
)
def create_endpoint(
    body: EndpointCreate,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
) -> EndpointWithSecret:
    endpoint, secret = webhooks.create_endpoint(
        session=session,
        user=user,
        url=body.url,
        events=[event.value for event in body.events],
        box=_box(request),
        policy=settings.webhook_policy,
    )
    return EndpointWithSecret(**endpoint_out(endpoint).model_dump(), secret=secret)


@router.get(
    "/v1/webhook-endpoints",
    response_model=Page[EndpointOut],
    summary="Your webhook endpoints, oldest first",
)
def list_endpoints(
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page")] = 20,
    cursor: CursorParam = None,
) -> Page[EndpointOut]:
    rows = webhooks.list_endpoints(
        session=session, user=user, after=cursors.decode_time_and_id(cursor), limit=limit + 1
    )
    return paginate(
        rows,
        limit=limit,
        render=endpoint_out,
        cursor_of=lambda e: cursors.time_and_id(e.created_at, e.id),
    )


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}",
    response_model=EndpointOut,
    summary="One webhook endpoint",
)
def get_endpoint(endpoint_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> EndpointOut:
    return endpoint_out(webhooks.get_owned(session=session, user=user, endpoint_id=endpoint_id))


@router.patch(
    "/v1/webhook-endpoints/{endpoint_id}",
    response_model=EndpointOut,
    responses=problem_responses({404: "No such endpoint of yours"}),
    summary="Change an endpoint's url, events, or whether it is enabled",
    description="A new `url` is vetted as at creation (http(s), a host that resolves to "
    "public addresses). The secret stays the same.",
)
def update_endpoint(
    endpoint_id: uuid.UUID,
    body: EndpointUpdate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
) -> EndpointOut:
    endpoint = webhooks.update_endpoint(
        session=session,
        user=user,
        endpoint_id=endpoint_id,
        cmd=webhooks.UpdateEndpoint(
            url=body.url,
            events=None if body.events is None else [event.value for event in body.events],
            enabled=body.enabled,
        ),
        policy=settings.webhook_policy,
    )
    return endpoint_out(endpoint)


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/test",
    status_code=202,
    response_model=DeliveryOut,
    responses=problem_responses(
        {404: "No such endpoint of yours", 409: "A ping to it is still being sent"}
    ),
    summary="Send a signed `ping` to the endpoint",
    description="Signed like every delivery (Standard Webhooks), with the body "
    '`{id, type: "ping", created_at, data: {endpoint_id}}`. Sent once, within about a '
    "second; the delivery returned here shows the outcome in the endpoint's deliveries. "
    "A ping never appears on /v1/events, is not retried, and its failure does not count "
    "against the endpoint. Works on a disabled endpoint too. One at a time per endpoint: "
    "409 `ping_in_progress` while one is being sent.",
)
def send_test(endpoint_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> DeliveryOut:
    delivery = webhooks.send_test(session=session, user=user, endpoint_id=endpoint_id)
    return _delivery_out(session, delivery, [])


@router.delete(
    "/v1/webhook-endpoints/{endpoint_id}",
    status_code=204,
    summary="Delete an endpoint (pending deliveries to it stop)",
)
def delete_endpoint(endpoint_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    webhooks.delete_endpoint(session=session, user=user, endpoint_id=endpoint_id)
    return Response(status_code=204)


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/rotate-secret",
    response_model=EndpointWithSecret,
    summary="New secret; the old one keeps signing too for a grace period",
)
def rotate_secret(
    endpoint_id: uuid.UUID,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
) -> EndpointWithSecret:
    endpoint, secret = webhooks.rotate_secret(
        session=session,
        user=user,
        endpoint_id=endpoint_id,
        box=_box(request),
        policy=settings.webhook_policy,
    )
    return EndpointWithSecret(**endpoint_out(endpoint).model_dump(), secret=secret)


def _delivery_out(
    session: SessionDep, delivery: WebhookDelivery, attempts: list[WebhookAttempt]
) -> DeliveryOut:
    event = webhooks.event_of(session, delivery)
    return DeliveryOut(
        id=delivery.id,
        event_id=event.id if event else "",
        event_type=event.type if event else "",
        status=delivery.status,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        last_status_code=delivery.last_status_code,
        created_at=delivery.created_at,
        completed_at=delivery.completed_at,
        attempt_log=[AttemptOut.model_validate(a, from_attributes=True) for a in attempts],
    )


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}/deliveries",
    response_model=Page[DeliveryOut],
    summary="Deliveries to an endpoint, newest first, with every attempt",
)
def list_deliveries(
    endpoint_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page")] = 20,
    cursor: CursorParam = None,
) -> Page[DeliveryOut]:
    rows, attempts = webhooks.list_deliveries(
        session=session,
        user=user,
        endpoint_id=endpoint_id,
        before=cursors.decode_time_and_id(cursor),
        limit=limit + 1,
    )
    return paginate(
        rows,
        limit=limit,
        render=lambda d: _delivery_out(session, d, attempts[d.id]),
        cursor_of=lambda d: cursors.time_and_id(d.created_at, d.id),
    )


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    summary="Send a delivery again now",
)
def redeliver(
    endpoint_id: uuid.UUID, delivery_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> dict[str, str]:
    webhooks.get_owned(session=session, user=user, endpoint_id=endpoint_id)
    webhooks.redeliver(session=session, user=user, delivery_id=delivery_id, endpoint_id=endpoint_id)
    return {"status": "scheduled"}


@router.post(
    "/v1/admin/webhook-deliveries/{delivery_id}/redeliver",
    status_code=202,
    tags=["operators"],
    summary="Send any delivery again now (operators)",
)
def operator_redeliver(
    delivery_id: uuid.UUID, user: OperatorUser, session: SessionDep
) -> dict[str, str]:
    webhooks.redeliver(session=session, user=user, delivery_id=delivery_id)
    return {"status": "scheduled"}
