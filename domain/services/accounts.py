"""Opening, reading and closing accounts, and the per-currency settlement accounts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain.enums import AccountKind, AccountStatus
from domain.errors import Conflict, InvalidRequest, NotFound
from domain.models import Account, User
from domain.money import check_currency, new_account_number
from domain.repositories import accounts as accounts_repo
from domain.repositories import quotas as quotas_repo
from domain.repositories import transfers as transfers_repo
from domain.services import audit
from domain.uow import UnitOfWork

_NUMBER_ATTEMPTS = 5


@dataclass(frozen=True, kw_only=True)
class OpenAccount:
    owner: User
    currency: str
    name: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # checked by the caller


def open_account(
    *, session: Session, cmd: OpenAccount, currencies: list[str], max_accounts: int | None = None
) -> Account:
    """A new active account; `max_accounts` caps how many one owner may hold."""
    check_currency(cmd.currency, supported=currencies)
    if max_accounts is not None:
        # Under the owner's quota lock, so concurrent opens cannot all pass the count.
        quotas_repo.lock_user_quotas(session, cmd.owner.id)
        if accounts_repo.count_for_owner(session, cmd.owner.id) >= max_accounts:
            raise InvalidRequest(
                f"at most {max_accounts} accounts per user; use an account you already have",
                code="too_many_accounts",
            )
    for attempt in range(_NUMBER_ATTEMPTS):
        account = Account(
            number=new_account_number(),
            owner_id=cmd.owner.id,
            kind=AccountKind.CUSTOMER,
            currency=cmd.currency,
            name=cmd.name,
            status=AccountStatus.ACTIVE,
            balance=0,
            overdraft_limit=0,
            last_sequence=0,
            created_at=datetime.now(UTC),
            metadata_=dict(cmd.metadata),
        )
        try:
            with session.begin_nested():
                return accounts_repo.add(session, account)
        except IntegrityError:
            # 10^11 numbers: a collision is rare; retry with a fresh number.
            if attempt == _NUMBER_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def get_visible_account(*, session: Session, user: User, account_id: uuid.UUID) -> Account:
    """The account if `user` may see it; otherwise NotFound, never a hint that it exists."""
    account = accounts_repo.get(session, account_id)
    if account is None or not (account.owner_id == user.id or user.role.sees_everything):
        raise NotFound("account not found")
    return account


def get_owned_account(*, session: Session, user: User, account_id: uuid.UUID) -> Account:
    """The account if `user` owns it (money can only leave an account its owner moves)."""
    account = accounts_repo.get(session, account_id)
    if account is None or account.owner_id != user.id:
        raise NotFound("account not found")
    return account


def list_accounts(
    *, session: Session, user: User, after: uuid.UUID | None, limit: int
) -> list[Account]:
    return accounts_repo.list_for_owner(session, user.id, after=after, limit=limit)


def held_amount(session: Session, account: Account) -> int:
    """What active holds reserve on the account (kept by the engine under the account
    lock, which the caller holds). Closing refuses an account with holds."""
    return account.held


def close_account(*, uow: UnitOfWork, user: User, account_id: uuid.UUID) -> Account:
    """Close an account for good: only at a zero balance, with nothing pending to or from
    it and nothing held. Under the account's row lock, so no transfer is applied to it
    meanwhile; one accepted after this check fails in the engine with `account_closed`.
    Closing a closed account answers it again."""
    session = uow.session
    visible = get_visible_account(session=session, user=user, account_id=account_id)
    if visible.kind != AccountKind.CUSTOMER:
        raise NotFound("account not found")
    account = accounts_repo.lock_accounts(session, [account_id])[account_id]
    if account.status == AccountStatus.CLOSED:
        return account
    if account.status == AccountStatus.FROZEN and not user.role.sees_everything:
        raise Conflict(
            "an operator froze this account; only an operator can close it now",
            code="account_frozen",
        )
    pending = transfers_repo.count_pending_touching(session, account_id)
    if pending:
        raise Conflict(
            f"{pending} transfer(s) to or from this account are still pending; wait until "
            "they finish (GET /v1/transfers?account_id=…&status=pending), then close",
            code="transfers_pending",
        )
    if account.balance != 0:
        raise Conflict(
            f"the balance is {account.balance}, not 0: move the money out "
            "(POST /v1/transfers or /v1/withdrawals), then close",
            code="balance_not_zero",
        )
    if held_amount(session, account):
        raise Conflict(
            "funds are held on this account; capture or void the holds, then close",
            code="funds_held",
        )
    account.status = AccountStatus.CLOSED
    account.closed_at = datetime.now(UTC)
    session.flush()
    audit.record(
        session,
        "account.closed",
        actor_id=user.id,
        subject_type="account",
        subject_id=str(account.id),
        data={"number": account.number},
    )
    return account


def settlement_account(*, session: Session, currency: str) -> Account:
    """The system account on the other side of deposits and withdrawals in `currency`.

    Created on first use; concurrent first uses agree on one row thanks to the
    unique partial index and ON CONFLICT DO NOTHING.
    """
    existing = accounts_repo.system_account(session, currency)
    if existing is not None:
        return existing
    session.execute(
        insert(Account)
        .values(
            id=uuid.uuid4(),
            number=new_account_number(),
            owner_id=None,
            kind=AccountKind.SYSTEM,
            currency=currency,
            name=f"Settlement {currency}",
            status=AccountStatus.ACTIVE,
            balance=0,
            overdraft_limit=0,
            last_sequence=0,
        )
        .on_conflict_do_nothing(
            index_elements=["currency"], index_where=Account.kind == AccountKind.SYSTEM
        )
    )
    account = accounts_repo.system_account(session, currency)
    assert account is not None
    return account


def ensure_settlement_accounts(*, session: Session, currencies: list[str]) -> None:
    """One settlement account per supported currency, before money requests arrive
    (acceptance refers to them and never creates them)."""
    for currency in currencies:
        settlement_account(session=session, currency=currency)
