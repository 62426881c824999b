"""Balance alerts of an account: set, list, read and delete (the engine evaluates them)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from domain.models import BalanceAlert
from domain.resources import BalanceAlertResource
from domain.services import alerts
from gateway import cursors
from gateway.deps import CurrentUser, SessionDep
from gateway.errors import problem_responses
from gateway.schemas.alerts import AlertCreate
from gateway.schemas.common import CursorParam, Limit, Page, paginate

router = APIRouter(tags=["accounts"])

_NOT_FOUND = problem_responses(
    {404: "No such account or alert, or not yours (owner or operator only)"}
)
_WHO = (
    " The account's owner and operators may call this; anyone else gets 404. A customer "
    "sees only the alerts they set, operators every alert of the account."
)


def alert_out(alert: BalanceAlert) -> BalanceAlertResource:
    return BalanceAlertResource.model_validate(alert)


@router.post(
    "/v1/accounts/{account_id}/balance-alerts",
    status_code=status.HTTP_201_CREATED,
    response_model=BalanceAlertResource,
    responses=_NOT_FOUND,
    summary="Set an edge-triggered balance alert",
    description="One `balance.below` (or `balance.above`) event when the balance crosses "
    "the threshold, and no other until it has come back past the threshold by "
    "`rearm_margin`. Set while already across, it waits for the balance to come back "
    "first. The event goes to you (on /v1/events and your webhook endpoints subscribed "
    "to it), in order with the event of the transfer that crossed. At most 10 alerts "
    "per account (422 `too_many_alerts`)." + _WHO,
)
def create_alert(
    account_id: uuid.UUID,
    body: AlertCreate,
    response: Response,
    user: CurrentUser,
    session: SessionDep,
) -> BalanceAlertResource:
    alert = alerts.create_alert(
        session=session,
        user=user,
        cmd=alerts.SetAlert(account_id=account_id, **body.model_dump()),
    )
    response.headers["Location"] = f"/v1/accounts/{account_id}/balance-alerts/{alert.id}"
    return alert_out(alert)


@router.get(
    "/v1/accounts/{account_id}/balance-alerts",
    response_model=Page[BalanceAlertResource],
    responses=_NOT_FOUND,
    summary="Balance alerts of an account, oldest first",
    description=_WHO.strip(),
)
def list_alerts(
    account_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    limit: Limit = 50,
    cursor: CursorParam = None,
) -> Page[BalanceAlertResource]:
    rows = alerts.list_alerts(
        session=session,
        user=user,
        account_id=account_id,
        after=cursors.decode_time_and_id(cursor),
        limit=limit + 1,
    )
    return paginate(
        rows,
        limit=limit,
        render=alert_out,
        cursor_of=lambda a: cursors.time_and_id(a.created_at, a.id),
    )


@router.get(
    "/v1/accounts/{account_id}/balance-alerts/{alert_id}",
    response_model=BalanceAlertResource,
    responses=_NOT_FOUND,
    summary="One balance alert, with its armed state",
    description=_WHO.strip(),
)
def get_alert(
    account_id: uuid.UUID, alert_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> BalanceAlertResource:
    return alert_out(
        alerts.get_alert(session=session, user=user, account_id=account_id, alert_id=alert_id)
    )


@router.delete(
    "/v1/accounts/{account_id}/balance-alerts/{alert_id}",
    status_code=204,
    responses=_NOT_FOUND,
    summary="Delete a balance alert",
    description=_WHO.strip(),
)
def delete_alert(
    account_id: uuid.UUID, alert_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> Response:
    alerts.delete_alert(session=session, user=user, account_id=account_id, alert_id=alert_id)
    return Response(status_code=204)
