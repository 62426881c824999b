"""Opening and reading accounts, and their ledger entries."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from domain.models import Account, LedgerEntry
from domain.resources import AccountResource, EntryResource
from domain.services import accounts
from gateway.deps import CurrentUser, SessionDep, SettingsDep
from gateway.errors import ApiError
from gateway.schemas.accounts import AccountCreate
from gateway.schemas.common import Page, decode_cursor, decode_int_cursor, paginate

router = APIRouter(tags=["accounts"])

Limit = Annotated[int, Query(ge=1, le=200)]


def account_out(account: Account) -> AccountResource:
    return AccountResource.model_validate(account)


def entry_out(entry: LedgerEntry) -> EntryResource:
    return EntryResource.model_validate(entry)


@router.post(
    "/v1/accounts",
    status_code=status.HTTP_201_CREATED,
    response_model=AccountResource,
    summary="Open an account in one currency",
)
def create_account(
    body: AccountCreate, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> AccountResource:
    account = accounts.open_account(
        session=session,
        cmd=accounts.OpenAccount(owner=user, currency=body.currency, name=body.name),
        currencies=settings.currencies,
    )
    return account_out(account)


@router.get("/v1/accounts", response_model=Page[AccountResource], summary="Your accounts")
def list_accounts(
    user: CurrentUser, session: SessionDep, limit: Limit = 50, cursor: str | None = None
) -> Page[AccountResource]:
    raw = decode_cursor(cursor)
    try:
        after = uuid.UUID(raw) if raw else None
    except ValueError as exc:
        raise ApiError(400, "invalid_cursor", "the cursor is not valid") from exc
    rows = accounts.list_accounts(session=session, user=user, after=after, limit=limit + 1)
    return paginate(rows, limit=limit, render=account_out, cursor_of=lambda a: str(a.id))


@router.get("/v1/accounts/{account_id}", response_model=AccountResource, summary="One account")
def get_account(account_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> AccountResource:
    return account_out(
        accounts.get_visible_account(session=session, user=user, account_id=account_id)
    )


@router.get(
    "/v1/accounts/{account_id}/entries",
    response_model=Page[EntryResource],
    summary="Ledger entries of an account, newest first",
)
def list_entries(
    account_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[EntryResource]:
    rows = accounts.list_entries(
        session=session,
        user=user,
        account_id=account_id,
        before_sequence=decode_int_cursor(cursor),
        limit=limit + 1,
    )
    return paginate(rows, limit=limit, render=entry_out, cursor_of=lambda e: e.sequence)
