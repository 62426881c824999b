"""Operator controls on accounts: freeze, unfreeze, overdraft and daily limits, and finding
an account by its number or its owner's email. Each is audited.

Changes take the account's row lock, so they serialise with the engine: a
transfer is applied entirely before or entirely after a freeze. Separation of
duties: nobody unfreezes an account of their own, and a limit change is only
applied by an approval (domain/services/approvals.py), never by its requester.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from domain.enums import AccountKind, AccountStatus
from domain.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from domain.lanes import slot_of
from domain.models import Account, AuditEvent, User
from domain.repositories import accounts as accounts_repo
from domain.repositories import audit as audit_repo
from domain.repositories import users as users_repo
from domain.services import audit
from domain.services.users import normalise_email
from domain.uow import UnitOfWork


@dataclass(frozen=True, kw_only=True)
class LimitsChange:
    overdraft_limit: int | None = None  # None: unchanged
    daily_outgoing_limit: int | None = None  # None: unchanged
    reset_daily_outgoing_limit: bool = False  # back to the configured default


def _locked_customer_account(session: Session, account_id: uuid.UUID) -> Account:
    account = accounts_repo.lock_accounts(session, [account_id]).get(account_id)
    if account is None or account.kind != AccountKind.CUSTOMER:
        raise NotFound("account not found")
    return account


def refuse_own_account(actor: User, account: Account, doing: str) -> None:
    """Separation of duties: an operator never acts on money of their own."""
    if account.owner_id == actor.id:
        raise PermissionDenied(
            f"an operator cannot {doing} an account they own", code="own_account"
        )


def set_status(
    *, uow: UnitOfWork, actor: User, account_id: uuid.UUID, status: AccountStatus
) -> Account:
    """Freezing also wakes the account's lane, so its pending transfers fail now
    (account_frozen) rather than at the next sweep."""
    session = uow.session
    account = _locked_customer_account(session, account_id)
    if account.status == AccountStatus.CLOSED:
        raise Conflict(
            "the account is closed: it can be neither frozen nor unfrozen", code="account_closed"
        )
    if status == AccountStatus.ACTIVE:
        refuse_own_account(actor, account, "unfreeze")
    previous = account.status
    account.status = status
    session.flush()
    if previous != status:
        audit.record(
            session,
            "account.frozen" if status == AccountStatus.FROZEN else "account.unfrozen",
            actor_id=actor.id,
            subject_type="account",
            subject_id=str(account.id),
            data={"number": account.number, "previous_status": previous},
        )
    if status == AccountStatus.FROZEN:
        uow.wake_slots({slot_of(account.id)})
    return account


def check_change(change: LimitsChange) -> None:
    for value in (change.overdraft_limit, change.daily_outgoing_limit):
        if value is not None and value < 0:
            raise InvalidRequest("limits must be zero or positive", code="invalid_limit")


def change_limits(
    *, session: Session, actor: User, account_id: uuid.UUID, change: LimitsChange
) -> Account:
    """Apply a limit change; `actor` is the operator who approved it."""
    check_change(change)
    account = _locked_customer_account(session, account_id)
    refuse_own_account(actor, account, "change the limits of")
    before = {
        "overdraft_limit": account.overdraft_limit,
        "daily_outgoing_limit": account.daily_outgoing_limit,
    }
    if change.overdraft_limit is not None:
        if account.balance < -change.overdraft_limit:
            raise Conflict(
                f"the balance ({account.balance}) is already below minus that limit",
                code="limit_below_balance",
            )
        account.overdraft_limit = change.overdraft_limit
    if change.reset_daily_outgoing_limit:
        account.daily_outgoing_limit = None
    elif change.daily_outgoing_limit is not None:
        account.daily_outgoing_limit = change.daily_outgoing_limit
    session.flush()
    after = {
        "overdraft_limit": account.overdraft_limit,
        "daily_outgoing_limit": account.daily_outgoing_limit,
    }
    audit.record(
        session,
        "account.limits_changed",
        actor_id=actor.id,
        subject_type="account",
        subject_id=str(account.id),
        data={"before": before, "after": after},
    )
    return account


def list_audit_events(
    *, session: Session, event_type: str | None, before_id: int | None, limit: int
) -> list[AuditEvent]:
    return audit_repo.page(session, event_type=event_type, before_id=before_id, limit=limit)


def find_accounts(
    *,
    session: Session,
    actor: User,
    origin: audit.Origin,
    number: str | None,
    owner_email: str | None,
    after: uuid.UUID | None,
    limit: int,
) -> list[Account]:
    """Accounts with this number and/or whose owner has this email (any variant of it),
    by id. Audited (who looked for what, and how many they found): a lookup reveals
    customers' accounts to the operator."""
    if number is None and owner_email is None:
        raise InvalidRequest(
            "give `number`, `owner_email` or both to say which accounts to find",
            code="lookup_needs_criteria",
        )
    found: list[Account] = []
    owner = (
        users_repo.get_by_email(session, normalise_email(owner_email))
        if owner_email is not None
        else None
    )
    if owner_email is None or owner is not None:
        found = accounts_repo.find(
            session,
            number=number,
            owner_id=owner.id if owner is not None else None,
            after=after,
            limit=limit,
        )
    audit.append(
        session,
        [
            origin.record(
                "admin.accounts_looked_up",
                actor_id=actor.id,
                subject_type="account",
                subject_id=str(found[0].id) if len(found) == 1 else None,
                data={"number": number, "owner_email": owner_email, "found": len(found)},
            )
        ],
    )
    return found
