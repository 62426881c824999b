"""A ledger of its own, filled by SQL: for tests that must control exactly what is pending.

`fresh_ledger` migrates a new database (dropped afterwards) with one customer; accounts
and transfers are inserted directly, so no engine, gateway or other test's transfers
are involved. Accounts get a generous overdraft by default, so transfers succeed
without deposits.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, create_engine, text

from domain.lanes import Lanes, slot_of
from settle.harness import migrated_database


@dataclass
class Ledger:
    owner: Engine
    user: uuid.UUID


@contextmanager
def fresh_ledger(server_url: str, prefix: str) -> Iterator[Ledger]:
    with migrated_database(server_url, prefix) as (_, roles):
        owner = create_engine(roles.owner_url)
        user = uuid.uuid4()
        with owner.begin() as connection:
            add_customer(connection, user)
        try:
            yield Ledger(owner, user)
        finally:
            owner.dispose()


def add_customer(connection: Connection, user: uuid.UUID) -> None:
    """A customer who can initiate transfers (no password anyone could log in with)."""
    connection.execute(
        text(
            "INSERT INTO users (id, email, password_hash, role)"
            " VALUES (:id, :email, 'x', 'customer')"
        ),
        {"id": user, "email": f"{user}@example.com"},
    )


def number(account: uuid.UUID) -> str:
    return str(int(hashlib.sha256(account.bytes).hexdigest(), 16))[:13]


def add_accounts(ledger: Ledger, ids: list[uuid.UUID], *, overdraft: int = 10**9) -> None:
    with ledger.owner.begin() as connection:
        for account in ids:
            connection.execute(
                text(
                    "INSERT INTO accounts (id, number, kind, currency, status, owner_id,"
                    " overdraft_limit) VALUES (:id, :number, 'customer', 'USD', 'active',"
                    " :owner, :overdraft)"
                ),
                {
                    "id": account,
                    "number": number(account),
                    "owner": ledger.user,
                    "overdraft": overdraft,
                },
            )


def add_transfers(
    ledger: Ledger,
    source: uuid.UUID,
    destination: uuid.UUID,
    count: int,
    *,
    status: str = "pending",
    execute_at: str | None = None,
) -> list[uuid.UUID]:
    """`count` transfers accepted one after the other; their ids, oldest first."""
    ids = [uuid.uuid4() for _ in range(count)]
    with ledger.owner.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO transfers (id, kind, status, source_account_id,"
                " destination_account_id, amount, currency, initiated_by, lane, created_at,"
                " completed_at, execute_at)"
                " SELECT i, 'transfer', :status, :a, :b, 1, 'USD', :user, settle_lane(:a), now(),"
                " CASE WHEN :status = 'pending' THEN NULL ELSE now() END,"
                " CAST(:execute_at AS timestamptz)"
                " FROM unnest(CAST(:ids AS uuid[])) WITH ORDINALITY AS u(i, n) ORDER BY n"
            ),
            {
                "ids": [str(i) for i in ids],
                "status": status,
                "a": source,
                "b": destination,
                "user": ledger.user,
                "execute_at": execute_at,
            },
        )
    return ids


def accounts_in_lane(
    lanes: Lanes, lane: int, count: int, *, distinct_slots: bool = False
) -> list[uuid.UUID]:
    """`count` new account ids drained by `lane` (each in a slot of its own if asked)."""
    found: list[uuid.UUID] = []
    slots: set[int] = set()
    while len(found) < count:
        account = uuid.uuid4()
        if lanes.of_account(account) != lane or (distinct_slots and slot_of(account) in slots):
            continue
        found.append(account)
        slots.add(slot_of(account))
    return found
