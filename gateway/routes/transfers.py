"""Reading transfers and batches: one (optionally long-polled) or a filtered, paginated list."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session, sessionmaker

from domain import metadata
from domain.enums import TransferKind, TransferStatus
from domain.models import Transfer, User
from domain.resources import BatchResource, BatchStatus, TransferResource
from domain.services import cancellation, transfers
from gateway import cursors
from gateway.completions import Completions, TooManyWaits
from gateway.deps import CurrentUser, DetachedUser, SessionDep, UowDep
from gateway.errors import ApiError, problem_responses
from gateway.middleware import request_id_var
from gateway.query_params import bracketed, family_of
from gateway.schemas.common import CursorParam, Instant, Limit, Page, paginate

router = APIRouter(tags=["money movement"])

Wait = Annotated[
    int,
    Query(
        ge=0,
        le=30,
        description="Seconds to hold the request until the result is terminal (0: answer now)",
    ),
]
T = TypeVar("T")


def transfer_out(transfer: Transfer) -> TransferResource:
    return TransferResource.model_validate(transfer)


def batch_out(view: transfers.BatchView) -> BatchResource:
    return BatchResource.of(
        view.batch.id,
        view.batch.atomic,
        [transfer_out(t) for t in view.transfers],
        view.batch.metadata_,
    )


async def _long_poll(
    request: Request,
    user: User,
    ids: list[uuid.UUID],
    wait: int,
    read: Callable[[Session], T],
    done: Callable[[T], bool],
) -> T:
    """Read; while not `done` and time is left, sleep until a completion is announced.

    No database connection or thread is held while waiting, and nothing polls.
    """
    factory: sessionmaker[Session] = request.app.state.session_factory
    completions: Completions = request.app.state.completions

    def fresh() -> T:
        with factory() as session:
            return read(session)

    if not wait:
        return await run_in_threadpool(fresh)
    deadline = time.monotonic() + wait
    try:
        async with completions.waiting(user.id, ids) as finished:
            while True:
                result = await run_in_threadpool(fresh)
                left = deadline - time.monotonic()
                if done(result) or left <= 0:
                    return result
                await completions.sleep(finished, left)
    except TooManyWaits as exc:
        raise ApiError(
            429,
            "too_many_waits",
            "too many concurrent ?wait= requests; wait for one to finish, or poll without wait",
            {"Retry-After": "1"},
        ) from exc


@router.get(
    "/v1/transfers/{transfer_id}",
    response_model=TransferResource,
    summary="One transfer; with ?wait=N, held until it is terminal or N seconds pass",
)
async def get_transfer(
    transfer_id: uuid.UUID, request: Request, user: DetachedUser, wait: Wait = 0
) -> TransferResource:
    def read(session: Session) -> TransferResource:
        return transfer_out(
            transfers.get_visible_transfer(session=session, user=user, transfer_id=transfer_id)
        )

    return await _long_poll(
        request, user, [transfer_id], wait, read, lambda t: t.status.is_terminal
    )


@bracketed("metadata")
def metadata_filter(request: Request) -> dict[str, str]:
    """Every `metadata[key]=value` query parameter, checked against the metadata limits."""
    wanted: dict[str, str] = {}
    problems: list[dict[str, Any]] = []
    for name, value in request.query_params.multi_items():
        family = family_of(name)
        if family is None or family[0] != "metadata":
            continue
        if wanted.get(family[1], value) != value:
            problems.append(
                {
                    "loc": ("query", name),
                    "msg": "given twice with different values; a transfer has one value a key",
                    "type": "value_error",
                }
            )
        wanted[family[1]] = value
    try:
        metadata.check_metadata(wanted)
    except ValueError as exc:
        problems.append({"loc": ("query", "metadata"), "msg": str(exc), "type": "value_error"})
    if problems:
        raise RequestValidationError(problems)
    return wanted


_METADATA_PARAMETER: dict[str, Any] = {
    "parameters": [
        {
            "name": "metadata",
            "in": "query",
            "required": False,
            "style": "deepObject",
            "explode": True,
            "description": "`metadata[key]=value`: only transfers whose metadata holds every "
            "such pair (served by a GIN index)",
            "schema": {"type": "object", "additionalProperties": {"type": "string"}},
        }
    ]
}


@router.get(
    "/v1/transfers",
    response_model=Page[TransferResource],
    summary="Transfers you initiated or that touch your accounts, newest first",
    openapi_extra=_METADATA_PARAMETER,
)
def list_transfers(
    user: CurrentUser,
    session: SessionDep,
    wanted_metadata: Annotated[dict[str, str], Depends(metadata_filter)],
    account_id: uuid.UUID | None = None,
    status: TransferStatus | None = None,
    kind: TransferKind | None = None,
    created_after: Annotated[Instant | None, Query(description="RFC 3339; inclusive")] = None,
    created_before: Annotated[Instant | None, Query(description="RFC 3339; exclusive")] = None,
    limit: Limit = 50,
    cursor: CursorParam = None,
) -> Page[TransferResource]:
    """Filters combine (all must hold). `metadata[key]=value` may be repeated with other
    keys; `created_after` ≤ created_at < `created_before`."""
    rows = transfers.list_visible_transfers(
        session=session,
        user=user,
        filters=transfers.TransferFilters(
            account_id=account_id,
            status=status,
            kind=kind,
            created_after=created_after,
            created_before=created_before,
            metadata=wanted_metadata,
        ),
        before_seq=cursors.decode_int(cursor),
        limit=limit + 1,
    )
    return paginate(rows, limit=limit, render=transfer_out, cursor_of=lambda t: (t.seq,))


@router.get(
    "/v1/transfer-batches/{batch_id}",
    response_model=BatchResource,
    summary="One batch with its transfers; with ?wait=N, held until every one is terminal",
)
async def get_batch(
    batch_id: uuid.UUID, request: Request, user: DetachedUser, wait: Wait = 0
) -> BatchResource:
    def read(session: Session) -> BatchResource:
        return batch_out(transfers.get_visible_batch(session=session, user=user, batch_id=batch_id))

    return await _long_poll(
        request, user, [batch_id], wait, read, lambda b: b.status == BatchStatus.COMPLETED
    )


@router.post(
    "/v1/transfers/{transfer_id}/cancel",
    response_model=TransferResource,
    responses=problem_responses(
        {
            403: "Not the transfer's initiator nor an operator (`cancel_forbidden`)",
            404: "No such transfer (or not yours)",
            409: "Already applied (`transfer_not_pending`), or an item of an atomic batch",
        }
    ),
    summary="Cancel a transfer that is still pending",
)
def cancel_transfer(transfer_id: uuid.UUID, user: CurrentUser, uow: UowDep) -> TransferResource:
    """200 with the transfer, now `canceled` (event `transfer.canceled`), while it is
    still pending: a transfer is either canceled or applied, never both, even when the
    engine reaches it at the same moment. Once applied: 409 `transfer_not_pending`
    (reverse a succeeded transfer instead, void a held hold). Canceling a canceled
    transfer answers it again. Allowed to its initiator and to operators."""
    return transfer_out(
        cancellation.cancel(
            uow=uow, user=user, transfer_id=transfer_id, request_id=request_id_var.get()
        )
    )
