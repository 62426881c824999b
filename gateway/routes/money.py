"""POST /v1/transfers, /v1/deposits, /v1/withdrawals: accept, commit, wake the engine, 202."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from domain.models import User
from domain.services import transfers
from gateway.deps import CurrentUser, OperatorUser, SessionDep, SettingsDep, WakeupsDep
from gateway.errors import PROBLEM_JSON
from gateway.idempotency import require_key
from gateway.metrics import TRANSFERS_ACCEPTED, WAKEUPS_FAILED
from gateway.schemas.transfers import DepositCreate, TransferCreate, TransferOut, WithdrawalCreate
from settle.config import Settings

router = APIRouter(tags=["money movement"])

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Required. Unique per logical request, at most 255 characters. Retrying "
        "with the same key and body replays the first answer (Idempotent-Replayed: true); "
        "the same key with a different body is refused (422).",
    ),
]

_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Accepted: the transfer is durable and pending; poll its Location.",
        "headers": {
            "Location": {"schema": {"type": "string"}},
            "Idempotent-Replayed": {"schema": {"type": "string", "enum": ["true"]}},
        },
    },
    400: {"description": "Missing or malformed Idempotency-Key", "content": {PROBLEM_JSON: {}}},
    404: {"description": "Account not found (or not yours)", "content": {PROBLEM_JSON: {}}},
    422: {
        "description": "Invalid amount, currency, account, or key reused with another body",
        "content": {PROBLEM_JSON: {}},
    },
}


def _accept(
    *,
    request: Request,
    session: SessionDep,
    settings: Settings,
    wakeups: WakeupsDep,
    user: User,
    key: str | None,
    cmd: transfers.MoneyCmd,
    body: dict[str, Any],
) -> JSONResponse:
    idempotency = require_key(key, method=request.method, path=request.url.path, body=body)
    outcome = transfers.accept(
        session=session,
        user=user,
        cmd=cmd,
        idempotency=idempotency,
        limits=transfers.MoneyLimits(
            currencies=settings.currencies, max_amount=settings.max_transfer_amount
        ),
    )
    session.commit()  # durable before the 202 goes out (money rule 9)
    headers = {"Location": f"/v1/transfers/{outcome.transfer.id}"}
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    else:
        TRANSFERS_ACCEPTED.labels(kind=outcome.transfer.kind).inc()
        if not wakeups.wake(outcome.transfer.source_account_id):
            WAKEUPS_FAILED.inc()
    return JSONResponse(outcome.response_body, status_code=outcome.response_status, headers=headers)


@router.post(
    "/v1/transfers",
    status_code=202,
    response_model=TransferOut,
    responses=_ACCEPTED,
    summary="Move money from one of your accounts to another account",
)
def create_transfer(
    body: TransferCreate,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    wakeups: WakeupsDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    cmd = transfers.TransferCmd(
        source_account_id=body.source_account_id,
        destination_account_number=body.destination_account_number,
        amount=body.amount,
        currency=body.currency,
        description=body.description,
    )
    return _accept(
        request=request,
        session=session,
        settings=settings,
        wakeups=wakeups,
        user=user,
        key=idempotency_key,
        cmd=cmd,
        body=body.model_dump(mode="json"),
    )


@router.post(
    "/v1/deposits",
    status_code=202,
    response_model=TransferOut,
    responses=_ACCEPTED,
    summary="Credit an account from outside Settle (operators only)",
)
def create_deposit(
    body: DepositCreate,
    request: Request,
    user: OperatorUser,
    session: SessionDep,
    settings: SettingsDep,
    wakeups: WakeupsDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    cmd = transfers.DepositCmd(
        account_id=body.account_id,
        amount=body.amount,
        currency=body.currency,
        description=body.description,
    )
    return _accept(
        request=request,
        session=session,
        settings=settings,
        wakeups=wakeups,
        user=user,
        key=idempotency_key,
        cmd=cmd,
        body=body.model_dump(mode="json"),
    )


@router.post(
    "/v1/withdrawals",
    status_code=202,
    response_model=TransferOut,
    responses=_ACCEPTED,
    summary="Pay money out of one of your accounts",
)
def create_withdrawal(
    body: WithdrawalCreate,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    wakeups: WakeupsDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    cmd = transfers.WithdrawalCmd(
        account_id=body.account_id,
        amount=body.amount,
        currency=body.currency,
        description=body.description,
    )
    return _accept(
        request=request,
        session=session,
        settings=settings,
        wakeups=wakeups,
        user=user,
        key=idempotency_key,
        cmd=cmd,
        body=body.model_dump(mode="json"),
    )
