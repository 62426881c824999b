"""Opening accounts, reading them as their owner, and the per-currency settlement accounts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain.enums import AccountKind, AccountStatus
from domain.errors import InvalidRequest, NotFound
from domain.models import Account, LedgerEntry, User
from domain.money import check_currency, new_account_number
from domain.repositories import accounts as accounts_repo
from domain.repositories import ledger as ledger_repo
from domain.repositories import quotas as quotas_repo

_NUMBER_ATTEMPTS = 5


@dataclass(frozen=True, kw_only=True)
class OpenAccount:
    owner: User
    currency: str
    name: str | None = None


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


def list_entries(
    *,
    session: Session,
    user: User,
    account_id: uuid.UUID,
    before_sequence: int | None,
    limit: int,
) -> list[LedgerEntry]:
    get_visible_account(session=session, user=user, account_id=account_id)
    return ledger_repo.for_account(
        session, account_id, before_sequence=before_sequence, limit=limit
    )


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
