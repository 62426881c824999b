"""Opening, reading and closing accounts; their entries, balance at an instant, statements."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import StreamingResponse

from domain.models import Account
from domain.resources import AccountResource, BalanceResource, EntryResource, StatementResource
from domain.services import accounts, reporting
from gateway import cursors
from gateway.deps import CurrentUser, SessionDep, SettingsDep, UowDep
from gateway.errors import problem_responses
from gateway.schemas.accounts import AccountCreate
from gateway.schemas.common import CursorParam, Instant, Limit, Page, paginate

router = APIRouter(tags=["accounts"])


def account_out(account: Account) -> AccountResource:
    return AccountResource.model_validate(account)


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
        cmd=accounts.OpenAccount(
            owner=user, currency=body.currency, name=body.name, metadata=body.metadata
        ),
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
    rows = reporting.list_entries(
        session=session,
        user=user,
        account_id=account_id,
        before_sequence=cursors.decode_int(cursor),
        limit=limit + 1,
    )
    return paginate(rows, limit=limit, render=lambda e: e, cursor_of=lambda e: (e.sequence,))


At = Annotated[
    Instant,
    Query(description="RFC 3339 with an offset, e.g. 2026-12-31T23:59:59Z"),
]
_NOT_YOURS = problem_responses(
    {404: "No such account (or not yours)", 422: "Missing or malformed instant"}
)


@router.get(
    "/v1/accounts/{account_id}/balance",
    response_model=BalanceResource,
    responses=_NOT_YOURS,
    summary="The balance at an instant, from the ledger entries",
)
def balance_at(
    account_id: uuid.UUID, at: At, user: CurrentUser, session: SessionDep
) -> BalanceResource:
    """The balance after the account's last entry at or before `at` (0 before its first),
    with that entry's `sequence`: one index probe, however long the history."""
    return reporting.balance_at(session=session, user=user, account_id=account_id, at=at)


_CSV = "text/csv"


@router.get(
    "/v1/accounts/{account_id}/statement",
    response_model=StatementResource,
    responses={
        200: {
            "content": {_CSV: {"schema": {"type": "string"}}},
            "description": "JSON; or, with `Accept: text/csv`, the entries as CSV, streamed, "
            "with the balances in the Settle-Opening-Balance and Settle-Closing-Balance headers",
        },
        **problem_responses(
            {
                404: "No such account (or not yours)",
                422: "Malformed period, `from` not before `to`, or too many entries for "
                "JSON (`statement_too_large`: ask for CSV)",
            }
        ),
    },
    summary="A statement: the entries of a period between its opening and closing balances",
)
def statement(
    account_id: uuid.UUID,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    to: At,
    start: Annotated[
        Instant,
        Query(alias="from", description="RFC 3339 with an offset; exclusive"),
    ],
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Any:
    """Entries after `from` up to and including `to`, oldest first. `opening_balance` is
    `balance?at=from`, `closing_balance` is `balance?at=to`, and closing = opening plus
    the entries. JSON holds up to 10,000 entries; `Accept: text/csv` streams any number
    in constant memory."""
    if accept is not None and _CSV in accept.lower():
        plan = reporting.plan_statement(
            session=session, user=user, account_id=account_id, start=start, end=to
        )
        return StreamingResponse(
            reporting.csv_chunks(request.app.state.session_factory, plan),
            media_type=f"{_CSV}; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="statement-{plan.account.number}'
                f'-{start.date()}-{to.date()}.csv"',
                "Settle-Opening-Balance": str(plan.opening_balance),
                "Settle-Closing-Balance": str(plan.closing_balance),
            },
        )
    return reporting.statement(
        session=session, user=user, account_id=account_id, start=start, end=to
    )


@router.post(
    "/v1/accounts/{account_id}/close",
    response_model=AccountResource,
    responses=problem_responses(
        {
            404: "No such account (or not yours)",
            409: "Not closable yet, and why: `balance_not_zero`, `transfers_pending`, "
            "`funds_held`, or `account_frozen` (an operator must close it)",
        }
    ),
    summary="Close an account for good (zero balance, nothing pending or held)",
)
def close_account(account_id: uuid.UUID, user: CurrentUser, uow: UowDep) -> AccountResource:
    """Money requests naming a closed account are refused (422 `account_closed`); any
    still pending to or from it fail with `account_closed`. Closing again answers 200."""
    return account_out(accounts.close_account(uow=uow, user=user, account_id=account_id))
