"""Accounts: lookups, cursor pages, and row locks taken in a fixed (id) order."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from domain.models import Account


def get(session: Session, account_id: uuid.UUID) -> Account | None:
    return session.get(Account, account_id)


def get_by_number(session: Session, number: str) -> Account | None:
    return session.scalars(select(Account).where(Account.number == number)).first()


def system_account(session: Session, currency: str) -> Account | None:
    return session.scalars(
        select(Account).where(Account.kind == "system", Account.currency == currency)
    ).first()


def list_for_owner(
    session: Session, owner_id: uuid.UUID, *, after: uuid.UUID | None, limit: int
) -> list[Account]:
    query = select(Account).where(Account.owner_id == owner_id)
    if after is not None:
        query = query.where(Account.id > after)
    return list(session.scalars(query.order_by(Account.id).limit(limit)))


def find(
    session: Session,
    *,
    number: str | None,
    owner_id: uuid.UUID | None,
    after: uuid.UUID | None,
    limit: int,
) -> list[Account]:
    """Accounts matching every criterion given, by id (the number is unique; the owner's
    accounts come from `accounts_owner_idx`)."""
    query = select(Account)
    if number is not None:
        query = query.where(Account.number == number)
    if owner_id is not None:
        query = query.where(Account.owner_id == owner_id)
    if after is not None:
        query = query.where(Account.id > after)
    return list(session.scalars(query.order_by(Account.id).limit(limit)))


def count_for_owner(session: Session, owner_id: uuid.UUID) -> int:
    return session.scalar(select(func.count()).where(Account.owner_id == owner_id)) or 0


def add(session: Session, account: Account) -> Account:
    session.add(account)
    session.flush()
    return account


def lock_accounts(session: Session, account_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Account]:
    """SELECT ... FOR NO KEY UPDATE in ascending id order, so no two lockers deadlock.

    NO KEY UPDATE (not plain UPDATE) because we never change an account's key:
    it excludes every other engine transaction just the same, but does not
    conflict with the FOR KEY SHARE locks that foreign-key checks take when the
    gateway inserts a transfer referencing both accounts. With plain FOR UPDATE
    such an insert (locking source, then destination) deadlocks against a drain
    that locked them in id order.

    `populate_existing` makes the locked rows overwrite anything stale in the session.
    """
    ordered = sorted(set(account_ids))
    rows = session.scalars(
        select(Account)
        .where(Account.id.in_(ordered))
        .order_by(Account.id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    return {account.id: account for account in rows}
