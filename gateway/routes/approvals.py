"""Four eyes: list, read, approve and reject the requests parked for a second operator.

The rules live in domain/services/approvals.py; these routes only carry them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from domain.enums import ApprovalStatus
from domain.models import Approval
from domain.resources import ApprovalResource
from domain.services import approvals
from gateway import cursors
from gateway.deps import OperatorUser, SessionDep, UowDep
from gateway.errors import problem_responses
from gateway.middleware import request_id_var
from gateway.schemas.common import CursorParam, Limit, Page, paginate

router = APIRouter(prefix="/v1/admin/approvals", tags=["operators"])

_DECISION: dict[int | str, dict[str, Any]] = problem_responses(
    {
        403: "Not an operator; the requester themself (`own_request`); or the account is "
        "the operator's own (`own_account`)",
        404: "No such approval (or its account is gone)",
        409: "Already decided (`approval_decided`), expired (`approval_expired`), or the "
        "change no longer fits the account (`limit_below_balance`)",
    }
)


def _out(approval: Approval) -> ApprovalResource:
    return ApprovalResource.of(approval, now=datetime.now(UTC))


@router.get(
    "",
    response_model=Page[ApprovalResource],
    summary="Requests waiting for (or decided by) a second operator, newest first",
)
def list_approvals(
    user: OperatorUser,
    session: SessionDep,
    status: ApprovalStatus | None = None,
    limit: Limit = 50,
    cursor: CursorParam = None,
) -> Page[ApprovalResource]:
    rows = approvals.list_approvals(
        session=session,
        status=status,
        before=cursors.decode_time_and_id(cursor),
        limit=limit + 1,
    )
    return paginate(
        rows,
        limit=limit,
        render=_out,
        cursor_of=lambda a: cursors.time_and_id(a.created_at, a.id),
    )


@router.get(
    "/{approval_id}",
    response_model=ApprovalResource,
    summary="One approval",
    responses=problem_responses({404: "No such approval"}),
)
def get_approval(
    approval_id: uuid.UUID, user: OperatorUser, session: SessionDep
) -> ApprovalResource:
    return _out(approvals.get(session=session, approval_id=approval_id))


@router.post(
    "/{approval_id}/approve",
    response_model=ApprovalResource,
    summary="Approve another operator's request: the deposit is created or the limits applied",
    responses=_DECISION,
)
def approve(
    approval_id: uuid.UUID, user: OperatorUser, uow: UowDep, request: Request
) -> ApprovalResource:
    approval = approvals.approve(
        uow=uow,
        approver=user,
        approval_id=approval_id,
        limits=request.app.state.money_limits,
        request_id=request_id_var.get(),
    )
    return _out(approval)


@router.post(
    "/{approval_id}/reject",
    response_model=ApprovalResource,
    summary="Reject another operator's request",
    responses=_DECISION,
)
def reject(approval_id: uuid.UUID, user: OperatorUser, uow: UowDep) -> ApprovalResource:
    approval = approvals.reject(
        uow=uow, approver=user, approval_id=approval_id, request_id=request_id_var.get()
    )
    return _out(approval)
