"""POST /v1/transfers, /v1/deposits, /v1/withdrawals: accept, commit, wake the engine, 202."""

# No `from __future__ import annotations` here: FastAPI must resolve the
# dataclass dependency's field annotations at runtime.
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from domain.models import User
from domain.services import transfers
from gateway import security_events
from gateway.deps import (
    CurrentUser,
    GuardsDep,
    OperatorUser,
    SessionDep,
    SettingsDep,
    WakeupsDep,
)
from gateway.errors import PROBLEM_JSON
from gateway.idempotency import require_key
from gateway.metrics import ANOMALIES, TRANSFERS_ACCEPTED, WAKEUPS_FAILED
from gateway.middleware import request_id_var
from gateway.schemas.transfers import DepositCreate, TransferCreate, TransferOut, WithdrawalCreate

router = APIRouter(tags=["money movement"])
Endpoint = TypeVar("Endpoint", bound=Callable[..., JSONResponse])

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


@dataclass
class MoneyAcceptor:
    """Everything a money route needs besides its body: one dependency instead of six."""

    request: Request
    session: SessionDep
    settings: SettingsDep
    wakeups: WakeupsDep
    guards: GuardsDep
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Required. Unique per logical request, at most 255 characters. "
            "Retrying with the same key and body replays the first answer "
            "(Idempotent-Replayed: true); the same key with a different body is refused (422).",
        ),
    ] = None

    def accept(self, user: User, cmd: transfers.MoneyCmd, body: BaseModel) -> JSONResponse:
        self.guards.enforce("money-user", str(user.id), self.settings.rate_limit_money_per_user)
        idempotency = require_key(
            self.idempotency_key,
            method=self.request.method,
            path=self.request.url.path,
            body=body.model_dump(mode="json"),
        )
        outcome = transfers.accept(
            session=self.session,
            user=user,
            cmd=cmd,
            idempotency=idempotency,
            limits=transfers.MoneyLimits(
                currencies=self.settings.currencies,
                max_amount=self.settings.max_transfer_amount,
                large_transfer_threshold=self.settings.large_transfer_threshold,
            ),
            request_id=request_id_var.get(),
        )
        self.session.commit()  # durable before the 202 goes out (money rule 9)
        headers = {"Location": f"/v1/transfers/{outcome.transfer.id}"}
        if outcome.replayed:
            headers["Idempotent-Replayed"] = "true"
        else:
            TRANSFERS_ACCEPTED.labels(kind=outcome.transfer.kind).inc()
            for anomaly in outcome.anomalies:
                ANOMALIES.labels(kind=anomaly).inc()
            self._flag_velocity(user)
            if not self.wakeups.wake(outcome.transfer.source_account_id):
                WAKEUPS_FAILED.inc()
        return JSONResponse(
            outcome.response_body, status_code=outcome.response_status, headers=headers
        )

    def _flag_velocity(self, user: User) -> None:
        """Flag (once per day) a user whose money requests today pass the threshold."""
        count, _ = self.guards.limiter.count("velocity", str(user.id), 24 * 3600)
        if count == self.settings.daily_velocity_threshold + 1:
            ANOMALIES.labels(kind="daily_velocity").inc()
            security_events.record(
                self.request,
                "anomaly.daily_velocity",
                actor_id=user.id,
                data={"threshold": self.settings.daily_velocity_threshold},
            )


Acceptor = Annotated[MoneyAcceptor, Depends()]


def _route(path: str, summary: str) -> Callable[[Endpoint], Endpoint]:
    return router.post(
        path, status_code=202, response_model=TransferOut, responses=_ACCEPTED, summary=summary
    )


@_route("/v1/transfers", "Move money from one of your accounts to another account")
def create_transfer(body: TransferCreate, user: CurrentUser, acceptor: Acceptor) -> JSONResponse:
    cmd = transfers.TransferCmd(**body.model_dump())
    return acceptor.accept(user, cmd, body)


@_route("/v1/deposits", "Credit an account from outside Settle (operators only)")
def create_deposit(body: DepositCreate, user: OperatorUser, acceptor: Acceptor) -> JSONResponse:
    return acceptor.accept(user, transfers.DepositCmd(**body.model_dump()), body)


@_route("/v1/withdrawals", "Pay money out of one of your accounts")
def create_withdrawal(
    body: WithdrawalCreate, user: CurrentUser, acceptor: Acceptor
) -> JSONResponse:
    return acceptor.accept(user, transfers.WithdrawalCmd(**body.model_dump()), body)
