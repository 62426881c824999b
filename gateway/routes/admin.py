"""Operator endpoints: freeze/unfreeze accounts, ask for limit changes, read the audit trail."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from domain.enums import AccountStatus
from domain.models import Account, AuditEvent
from domain.resources import ApprovalResource
from domain.services import admin, approvals
from gateway import cursors, security_events
from gateway.deps import OperatorUser, SessionDep, UowDep
from gateway.errors import problem_responses
from gateway.middleware import request_id_var
from gateway.schemas.admin import AdminAccountOut, AuditEventOut, LimitsUpdate
from gateway.schemas.common import CursorParam, Limit, Page, paginate

router = APIRouter(prefix="/v1/admin", tags=["operators"])


def admin_account_out(account: Account) -> AdminAccountOut:
    return AdminAccountOut.model_validate(account, from_attributes=True)


def audit_event_out(event: AuditEvent) -> AuditEventOut:
    return AuditEventOut.model_validate(event, from_attributes=True)


@router.post(
    "/accounts/{account_id}/freeze",
    response_model=AdminAccountOut,
    summary="Freeze an account: its pending and future transfers fail "
    "(account_frozen from it, destination_unavailable to it)",
)
def freeze(account_id: uuid.UUID, user: OperatorUser, uow: UowDep) -> AdminAccountOut:
    account = admin.set_status(
        uow=uow, actor=user, account_id=account_id, status=AccountStatus.FROZEN
    )
    return admin_account_out(account)


@router.post(
    "/accounts/{account_id}/unfreeze",
    response_model=AdminAccountOut,
    summary="Unfreeze (never an account of your own)",
    responses=problem_responses({403: "The account is the operator's own (`own_account`)"}),
)
def unfreeze(account_id: uuid.UUID, user: OperatorUser, uow: UowDep) -> AdminAccountOut:
    account = admin.set_status(
        uow=uow, actor=user, account_id=account_id, status=AccountStatus.ACTIVE
    )
    return admin_account_out(account)


@router.patch(
    "/accounts/{account_id}/limits",
    status_code=202,
    response_model=ApprovalResource,
    summary="Ask for a new overdraft and/or daily outgoing limit (a second operator approves)",
    responses={
        202: {
            "description": "Parked: a pending approval, applied when another operator "
            "approves it (POST /v1/admin/approvals/{id}/approve)",
            "headers": {"Location": {"schema": {"type": "string"}}},
        },
        **problem_responses(
            {
                403: "Not an operator, or the account is the operator's own (`own_account`)",
                404: "No such customer account",
            }
        ),
    },
)
def change_limits(
    account_id: uuid.UUID, body: LimitsUpdate, user: OperatorUser, uow: UowDep, request: Request
) -> Response:
    approval = approvals.request_limits_change(
        uow=uow,
        requester=user,
        account_id=account_id,
        change=admin.LimitsChange(**body.model_dump()),
        policy=request.app.state.approval_policy,
        request_id=request_id_var.get(),
    )
    resource = ApprovalResource.of(approval, now=datetime.now(UTC))
    return Response(
        resource.model_dump_json(),
        status_code=202,
        headers={"Location": f"/v1/admin/approvals/{resource.id}"},
        media_type="application/json",
    )


@router.get(
    "/accounts",
    response_model=Page[AdminAccountOut],
    responses=problem_responses(
        {403: "Operators and admins only", 422: "Neither `number` nor `owner_email` given"}
    ),
    summary="Find accounts by number and/or their owner's email (audited)",
)
def find_accounts(
    request: Request,
    user: OperatorUser,
    session: SessionDep,
    number: Annotated[str | None, Query(pattern=r"^[0-9]{6,32}$")] = None,
    owner_email: Annotated[str | None, Query(min_length=1, max_length=320)] = None,
    limit: Limit = 50,
    cursor: CursorParam = None,
) -> Page[AdminAccountOut]:
    """Every lookup is audited as `admin.accounts_looked_up`: a deposit no longer needs the
    account's id from its customer; the operator finds it by number."""
    rows = admin.find_accounts(
        session=session,
        actor=user,
        origin=security_events.origin(request),
        number=number,
        owner_email=owner_email,
        after=cursors.decode_uuid(cursor),
        limit=limit + 1,
    )
    return paginate(rows, limit=limit, render=admin_account_out, cursor_of=lambda a: (str(a.id),))


@router.get(
    "/audit-events",
    response_model=Page[AuditEventOut],
    summary="The hash-chained audit trail, newest first (the newest may not be sealed yet)",
)
def audit_events(
    user: OperatorUser,
    session: SessionDep,
    event_type: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_.]+$")] = None,
    limit: Limit = 50,
    cursor: CursorParam = None,
) -> Page[AuditEventOut]:
    rows = admin.list_audit_events(
        session=session,
        event_type=event_type,
        before_id=cursors.decode_int(cursor),
        limit=limit + 1,
    )
    return paginate(rows, limit=limit, render=audit_event_out, cursor_of=lambda e: (e.id,))
