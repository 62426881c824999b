"""Money requests, accepted with 202: POST /v1/transfers, /v1/deposits, /v1/withdrawals,
/v1/transfer-batches, /v1/holds (and a hold's /capture and /void), and a transfer's
/reversals.

The hot path of the whole system, kept lean on purpose: async all the way (no
thread hops), the caller taken from the token alone, the rate limit and the
daily-velocity counter in one Redis round trip, and the request recorded by one
SQL statement (`settle_accept`) that has committed when it returns, so the 202
always describes something durable. The engine is woken after that, through a
coalescing lane marker (settle/wakeups.py).

A deposit at or above `SETTLE_APPROVAL_THRESHOLD` is not accepted but parked for
a second operator (domain/services/approvals.py): 202 with the approval. That is
decided from the body alone, so deposits below it take the path above unchanged.
"""

# No `from __future__ import annotations` here: FastAPI must resolve the
# dependency's annotations at runtime.
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from domain import anomalies
from domain.enums import TransferKind
from domain.models import User
from domain.resources import ApprovalResource, BatchResource, TransferResource
from domain.services import acceptance, approvals
from domain.uow import UnitOfWork, async_unit_of_work
from gateway import security_events
from gateway.deps import OperatorUser, TokenCaller, UowDep, token_still_valid
from gateway.errors import ApiError, problem_responses
from gateway.idempotency import require_key
from gateway.metrics import ANOMALIES, RATE_LIMITED, TRANSFERS_ACCEPTED, WAKEUPS_FAILED
from gateway.middleware import request_id_var
from gateway.ratelimit import Rule
from gateway.schemas.transfers import (
    AccountMoneyCreate,
    HoldCapture,
    HoldCreate,
    HoldVoid,
    ReversalCreate,
    TransferBatchCreate,
    TransferCreate,
)
from gateway.tokens import AccessClaims
from settle.config import Settings

router = APIRouter(tags=["money movement"])
Endpoint = TypeVar("Endpoint", bound=Callable[..., Awaitable[Response]])

_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Accepted: durable and pending; poll its Location.",
        "headers": {
            "Location": {"schema": {"type": "string"}},
            "Idempotent-Replayed": {"schema": {"type": "string", "enum": ["true"]}},
        },
    },
    **problem_responses(
        {
            400: "Missing or malformed Idempotency-Key",
            401: "Missing, invalid, expired or revoked access token",
            404: "Account not found (or not yours)",
            409: "The same Idempotency-Key is still in flight",
            422: "Invalid amount, currency, account, or key reused with another body",
            429: "Rate limited (`rate_limited`), or the source account has too many pending "
            "debits (`account_backlog`); see Retry-After",
            503: "The database cannot be reached right now (`database_unavailable`): "
            "retry after Retry-After with the same Idempotency-Key",
        }
    ),
}

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Required. Unique per logical request, at most 255 characters. "
        "Retrying with the same key and body replays the first answer "
        "(Idempotent-Replayed: true); the same key with a different body is refused (422).",
    ),
]


@dataclass
class MoneyDesk:
    """Everything a money route needs besides its body and caller."""

    request: Request
    settings: Settings
    idempotency_key: str | None

    def idempotency(self, body: BaseModel) -> acceptance.Idempotency:
        return require_key(
            self.idempotency_key,
            method=self.request.method,
            path=self.request.url.path,
            body=body.model_dump(mode="json"),
        )

    async def accept(
        self,
        user_id: uuid.UUID,
        items: Sequence[acceptance.MoneyItem],
        body: BaseModel,
        *,
        batch: bool = False,
        atomic: bool = False,
        claims: AccessClaims | None = None,
        batch_metadata: dict[str, str] | None = None,
    ) -> acceptance.Accepted:
        """`claims`: the caller's token, when the route did not load the user; its
        revocation cutoff is read in the same Redis round trip as the counters."""
        state = self.request.app.state
        idempotency = self.idempotency(body)
        rule = Rule.parse(self.settings.rate_limit_money_per_user)
        counts, cutoff = await state.async_limiter.count_many_and_cutoff(
            [
                ("money-user", str(user_id), rule.window_seconds),
                ("velocity", str(user_id), anomalies.DAILY_VELOCITY_WINDOW_SECONDS),
            ],
            cutoff_of=claims.user_id if claims is not None else None,
        )
        if claims is not None:
            token_still_valid(claims, cutoff)
        (money, money_ttl_ms), (today, _) = counts
        if money > rule.limit:
            RATE_LIMITED.labels(bucket="money-user").inc()
            raise ApiError(
                429,
                "rate_limited",
                "too many requests; retry after the time given in Retry-After",
                {"Retry-After": str(max(1, -(-money_ttl_ms // 1000)))},
            )
        async with async_unit_of_work(state.db_pool, state.async_waker) as uow:
            outcome = await acceptance.accept(
                uow=uow,
                user_id=user_id,
                items=items,
                idempotency=idempotency,
                limits=state.money_limits,
                batch=batch,
                atomic=atomic,
                request_id=request_id_var.get(),
                batch_metadata=batch_metadata,
            )
        if uow.wake_failed:
            WAKEUPS_FAILED.inc()
        if not outcome.replayed:
            for transfer in outcome.transfers:
                TRANSFERS_ACCEPTED.labels(kind=transfer.kind.value).inc()
            for anomaly in outcome.anomalies:
                ANOMALIES.labels(kind=anomaly).inc()
            flagged = anomalies.daily_velocity(
                user_id=user_id,
                requests_today=today,
                threshold=self.settings.daily_velocity_threshold,
            )
            if flagged is not None:
                ANOMALIES.labels(kind=flagged.kind).inc()
                # A thread hop only for the rare flagged request, never on the hot path.
                await run_in_threadpool(
                    security_events.record,
                    self.request,
                    flagged.event_type,
                    actor_id=flagged.actor_id,
                    data=flagged.data,
                )
        return outcome

    async def park(
        self, requester: User, item: acceptance.MoneyItem, body: BaseModel, uow: UnitOfWork
    ) -> Response:
        """A deposit that needs a second operator: parked, answered with its approval."""
        state = self.request.app.state
        parked = await run_in_threadpool(
            approvals.request_deposit,
            uow=uow,
            requester=requester,
            item=item,
            idempotency=self.idempotency(body),
            limits=state.money_limits,
            policy=state.approval_policy,
            request_id=request_id_var.get(),
        )
        approval = ApprovalResource.of(parked.approval, now=datetime.now(UTC))
        return _answer(approval, f"/v1/admin/approvals/{approval.id}", parked.replayed)


async def money_desk(request: Request, idempotency_key: IdempotencyKeyHeader = None) -> MoneyDesk:
    settings: Settings = request.app.state.settings
    return MoneyDesk(request=request, settings=settings, idempotency_key=idempotency_key)


Desk = Annotated[MoneyDesk, Depends(money_desk)]


def _answer(resource: BaseModel, location: str, replayed: bool) -> Response:
    headers = {"Location": location}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(
        resource.model_dump_json(), status_code=202, headers=headers, media_type="application/json"
    )


def _single(outcome: acceptance.Accepted) -> Response:
    transfer = outcome.transfers[0]
    return _answer(transfer, f"/v1/transfers/{transfer.id}", outcome.replayed)


def _route(
    path: str, summary: str, model: type[BaseModel] = TransferResource
) -> Callable[[Endpoint], Endpoint]:
    return router.post(
        path, status_code=202, response_model=model, responses=_ACCEPTED, summary=summary
    )


@_route("/v1/transfers", "Move money from one of your accounts to another account")
async def create_transfer(body: TransferCreate, caller: TokenCaller, desk: Desk) -> Response:
    item = acceptance.MoneyItem(kind=TransferKind.TRANSFER, **body.item_fields())
    return _single(await desk.accept(caller.user_id, [item], body, claims=caller))


_DEPOSIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_ACCEPTED,
    202: {
        **_ACCEPTED[202],
        "description": "Accepted: a pending transfer; or, at or above SETTLE_APPROVAL_THRESHOLD, "
        "an approval waiting for a second operator (Location: /v1/admin/approvals/{id})",
    },
    **problem_responses(
        {403: "Not an operator, or the account is the operator's own (`own_account`)"}
    ),
}


@router.post(
    "/v1/deposits",
    status_code=202,
    response_model=TransferResource | ApprovalResource,
    responses=_DEPOSIT_RESPONSES,
    summary="Credit an account from outside Settle (operators only; large ones need approval)",
)
async def create_deposit(
    body: AccountMoneyCreate, user: OperatorUser, uow: UowDep, desk: Desk
) -> Response:
    """An operator cannot deposit into an account they own (403 `own_account`). A deposit
    at or above SETTLE_APPROVAL_THRESHOLD answers 202 with a pending approval instead of a
    transfer: another operator approves it (POST /v1/admin/approvals/{id}/approve), which
    creates the deposit."""
    item = acceptance.MoneyItem(kind=TransferKind.DEPOSIT, **body.item_fields())
    if approvals.needs_approval(item, policy=desk.request.app.state.approval_policy):
        return await desk.park(user, item, body, uow)
    return _single(await desk.accept(user.id, [item], body))


@_route("/v1/withdrawals", "Pay money out of one of your accounts")
async def create_withdrawal(body: AccountMoneyCreate, caller: TokenCaller, desk: Desk) -> Response:
    item = acceptance.MoneyItem(kind=TransferKind.WITHDRAWAL, **body.item_fields())
    return _single(await desk.accept(caller.user_id, [item], body, claims=caller))


@_route(
    "/v1/transfer-batches",
    "Submit up to 1,000 transfers under one Idempotency-Key",
    BatchResource,
)
async def create_batch(body: TransferBatchCreate, caller: TokenCaller, desk: Desk) -> Response:
    """Every item is checked before anything is written: one invalid item refuses the
    whole batch (422, `errors` naming each bad item's `index`). With `atomic: true`
    the transfers are applied in one transaction, all or nothing: if one fails, it
    carries its own failure code and the others `batch_failed`. When the last one is
    terminal, the initiator gets one `batch.completed` event with the tally."""
    items = [
        acceptance.MoneyItem(kind=TransferKind.TRANSFER, **item.item_fields())
        for item in body.transfers
    ]
    outcome = await desk.accept(
        caller.user_id,
        items,
        body,
        batch=True,
        atomic=body.atomic,
        claims=caller,
        batch_metadata=body.metadata,
    )
    assert outcome.batch_id is not None
    batch = BatchResource.of(outcome.batch_id, body.atomic, outcome.transfers, body.metadata)
    return _answer(batch, f"/v1/transfer-batches/{batch.id}", outcome.replayed)


_COMMAND_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_ACCEPTED,
    **problem_responses(
        {
            403: "Not allowed to act on it (`reversal_forbidden`: only the destination's "
            "owner or an operator reverses)",
            404: "No such transfer or hold (or not yours)",
            409: "Not in a state that allows it (`transfer_not_succeeded`, "
            "`reversal_exceeds_original`, `not_reversible`, `hold_not_active`), or the "
            "same Idempotency-Key is still in flight",
        }
    ),
}


def _command_route(
    path: str, summary: str, examples: dict[str, Any]
) -> Callable[[Endpoint], Endpoint]:
    return router.post(
        path,
        status_code=202,
        response_model=TransferResource,
        responses=_COMMAND_RESPONSES,
        summary=summary,
        openapi_extra={"requestBody": {"content": {"application/json": {"examples": examples}}}},
    )


@router.post(
    "/v1/holds",
    status_code=202,
    response_model=TransferResource,
    responses=_ACCEPTED,
    summary="Reserve money on one of your accounts for a destination (two-phase)",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {
                    "examples": {
                        "hold": {
                            "summary": "Hold 12.50 USD for an hour",
                            "value": {
                                "source_account_id": "7b0d6c52-3f0e-4d1a-9d55-0c2c1f3b9a10",
                                "destination_account_number": "4000123456789",
                                "amount": 1250,
                                "currency": "USD",
                                "expires_in_seconds": 3600,
                            },
                        }
                    }
                }
            }
        }
    },
)
async def create_hold(body: HoldCreate, caller: TokenCaller, desk: Desk) -> Response:
    """A transfer with `kind: "hold"`: `pending`, then `held` (the amount is reserved:
    the source's `available_balance` drops, its balance does not) or `failed` (e.g.
    `insufficient_funds` against the available balance). Then exactly one of: captured
    (`POST /v1/holds/{id}/capture`), voided (`POST /v1/holds/{id}/void`), or `expired`
    once `expires_in_seconds` have passed. Events: `hold.held`, `hold.captured`,
    `hold.voided`, `hold.expired`."""
    item = acceptance.MoneyItem(kind=TransferKind.HOLD, **body.item_fields())
    return _single(await desk.accept(caller.user_id, [item], body, claims=caller))


@_command_route(
    "/v1/holds/{hold_id}/capture",
    "Capture a hold, all of it or part (the rest is released)",
    {
        "all": {"summary": "Capture the whole held amount", "value": {}},
        "part": {"summary": "Capture 8.00 of it; the rest is released", "value": {"amount": 800}},
    },
)
async def capture_hold(
    hold_id: uuid.UUID, caller: TokenCaller, desk: Desk, body: HoldCapture | None = None
) -> Response:
    """Answers the capture itself: a transfer with `kind: "capture"` and `hold_id`,
    `pending` until the engine applies it, in order with the source's other transfers.
    Then the capture is `succeeded` with its ledger entries (the captured amount) and
    the hold `captured` (`captured_amount`), the whole hold released; or the capture is
    `failed`: `hold_not_active` when the hold was voided, expired or captured first
    (a hold has one outcome), `account_frozen`, `destination_unavailable` (the hold then
    stays held). Allowed to the hold's initiator, its source's owner and operators;
    409 `hold_not_active` at once if the hold is already done."""
    body = body or HoldCapture()
    item = acceptance.MoneyItem(
        kind=TransferKind.CAPTURE,
        account_id=None,
        amount=body.amount,
        currency=None,
        target_id=hold_id,
    )
    return _single(await desk.accept(caller.user_id, [item], body, claims=caller))


@_command_route(
    "/v1/holds/{hold_id}/void",
    "Void a hold: release the reserved money",
    {"void": {"summary": "No fields", "value": {}}},
)
async def void_hold(
    hold_id: uuid.UUID, caller: TokenCaller, desk: Desk, body: HoldVoid | None = None
) -> Response:
    """Answers the void: a transfer with `kind: "void"` and `hold_id`; once applied it
    is `succeeded` and the hold `voided` (or it `failed` with `hold_not_active` when the
    hold was captured or expired first)."""
    body = body or HoldVoid()
    item = acceptance.MoneyItem(
        kind=TransferKind.VOID, account_id=None, amount=None, currency=None, target_id=hold_id
    )
    return _single(await desk.accept(caller.user_id, [item], body, claims=caller))


@_command_route(
    "/v1/transfers/{transfer_id}/reversals",
    "Reverse a succeeded transfer, all or part (a refund or a correction)",
    {
        "all": {"summary": "Everything not reversed yet", "value": {}},
        "part": {
            "summary": "A partial refund",
            "value": {"amount": 500, "reason": "item returned"},
        },
    },
)
async def create_reversal(
    transfer_id: uuid.UUID, body: ReversalCreate, caller: TokenCaller, desk: Desk
) -> Response:
    """A transfer with `kind: "reversal"` and `reverses: <id>`, moving money back from
    the original's destination to its source; it may fail like any debit (e.g.
    `insufficient_funds` at the destination). Allowed to the destination account's
    owner and to operators. The reversals of one transfer, pending or succeeded, never
    add up to more than it, however many are sent at once (the database enforces it):
    409 `reversal_exceeds_original` says what is left. Reversing a pending or failed
    transfer: 409 `transfer_not_succeeded`."""
    item = acceptance.MoneyItem(
        kind=TransferKind.REVERSAL,
        account_id=None,
        amount=body.amount,
        currency=None,
        description=body.reason,
        target_id=transfer_id,
    )
    return _single(await desk.accept(caller.user_id, [item], body, claims=caller))
