"""Opening and reading accounts, and their ledger entries."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from domain.models import Account, LedgerEntry
from domain.resources import AccountResource, EntryResource
from domain.services import accounts
from gateway import cursors
from gateway.deps import CurrentUser, SessionDep, SettingsDep
from gateway.schemas.accounts import AccountCreate
from gateway.schemas.common import CursorParam, Limit, Page, paginate

router = APIRouter(tags=["accounts"])


def account_out(account: Account) -> AccountResource:
    return AccountResource.model_validate(account)


def entry_out(entry: LedgerEntry) -> EntryResource:
    return EntryResource.model_validate(entry)


@router.post(
    "/v1/accounts",
    status_code=status.HTTP_201_CREATED,
    response_model=AccountResource,
    summary="Open an account in one currency",
    description="A user holds at most `SETTLE_MAX_ACCOUNTS_PER_USER` accounts (20 by "
    "default); past it, 422 `too_many_accounts`.",
)
def create_account(
    body: AccountCreate, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> AccountResource:
    account = accounts.open_account(
        session=session,
        cmd=accounts.OpenAccount(owner=user, currency=body.currency, name=body.name),
        currencies=settings.currencies,
        max_accounts=settings.max_accounts_per_user,
    )
    return account_out(account)


@router.get("/v1/accounts", response_model=Page[AccountResource], summary="Your accounts")
def list_accounts(
    user: CurrentUser, session: SessionDep, limit: Limit = 50, cursor: CursorParam = None
) -> Page[AccountResource]:
    after = cursors.decode_uuid(cursor)
    rows = accounts.list_accounts(session=session, user=user, after=after, limit=limit + 1)
    return paginate(rows, limit=limit, render=account_out, cursor_of=lambda a: (str(a.id),))


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
    cursor: CursorParam = None,
) -> Page[EntryResource]:
    rows = accounts.list_entries(
        session=session,
        user=user,
        account_id=account_id,
        before_sequence=cursors.decode_int(cursor),
        limit=limit + 1,
    )
    return paginate(rows, limit=limit, render=entry_out, cursor_of=lambda e: (e.sequence,))
