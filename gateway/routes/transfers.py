"""Reading transfers: one (optionally long-polled) or a filtered, paginated list."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker

from domain.models import Transfer, User
from domain.services import transfers
from gateway.deps import CurrentUser, DetachedUser, SessionDep
from gateway.schemas.common import Page, decode_int_cursor, paginate
from gateway.schemas.transfers import TransferOut

router = APIRouter(tags=["money movement"])

POLL_INTERVAL_SECONDS = 0.05


def transfer_out(transfer: Transfer) -> TransferOut:
    return TransferOut.model_validate(transfers.transfer_snapshot(transfer))


def _read(factory: sessionmaker[Session], user: User, transfer_id: uuid.UUID) -> Transfer:
    with factory() as session:
        return transfers.get_visible_transfer(session=session, user=user, transfer_id=transfer_id)


@router.get(
    "/v1/transfers/{transfer_id}",
    response_model=TransferOut,
    summary="One transfer; with ?wait=N, held until it is terminal or N seconds pass",
)
async def get_transfer(
    transfer_id: uuid.UUID,
    request: Request,
    user: DetachedUser,
    wait: Annotated[
        int, Query(ge=0, le=30, description="Seconds to wait for a terminal state")
    ] = 0,
) -> TransferOut:
    # A short poll on the event loop: no database connection or thread is held
    # between reads, so many waiting clients cost almost nothing.
    factory: sessionmaker[Session] = request.app.state.session_factory
    deadline = time.monotonic() + wait
    while True:
        transfer = await run_in_threadpool(_read, factory, user, transfer_id)
        if transfer.status != "pending" or time.monotonic() >= deadline:
            return transfer_out(transfer)
        await asyncio.sleep(POLL_INTERVAL_SECONDS)


@router.get(
    "/v1/transfers",
    response_model=Page[TransferOut],
    summary="Transfers you initiated or that touch your accounts, newest first",
)
def list_transfers(
    user: CurrentUser,
    session: SessionDep,
    account_id: uuid.UUID | None = None,
    status: Literal["pending", "succeeded", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[TransferOut]:
    rows = transfers.list_visible_transfers(
        session=session,
        user=user,
        account_id=account_id,
        status=status,
        before_seq=decode_int_cursor(cursor),
        limit=limit + 1,
    )
    return paginate(rows, limit=limit, render=transfer_out, cursor_of=lambda t: t.seq)
