"""The bank workload as the fault matrix (test_faults.py) runs it: plain transfers from
a load that retries each request until it is answered, on the accounts tests/bank.py
opens and funds, and the checks that must hold afterwards whatever failed meanwhile.

The checks: every accepted transfer is terminal, the total is unchanged, no balance is
below its floor, each accepted request made exactly one transfer (no more transfers
from the bank's accounts than were accepted), each effect happened once (two ledger
entries per succeeded transfer, one event per transfer and recipient, one webhook
delivery per event and endpoint), and per source account the transfers were applied
in acceptance order (FIFO).
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from domain.models import Account, Event, LedgerEntry, Transfer, WebhookDelivery
from tests import bank as workload
from tests.bank import ACCOUNTS, CLIENTS, OPENING_BALANCE

MAX_AMOUNT = 4_000  # some transfers are too large for their source, so must fail


@dataclass
class Bank:
    """The bank's customers (one per client thread) and accounts, funded."""

    headers: list[dict[str, str]]  # one customer per client
    accounts: list[dict[str, Any]]  # account i belongs to customer i % CLIENTS
    owner_ids: list[uuid.UUID]

    @property
    def numbers(self) -> list[str]:
        return [a["number"] for a in self.accounts]

    def accounts_of(self, client: int) -> list[dict[str, Any]]:
        return [a for j, a in enumerate(self.accounts) if j % CLIENTS == client]

    def transfer_body(self, rng: random.Random, client: int) -> dict[str, Any]:
        source = rng.choice(self.accounts_of(client))
        destination = rng.choice([n for n in self.numbers if n != source["number"]])
        return {
            "source_account_id": source["id"],
            "destination_account_number": destination,
            "amount": rng.randint(1, MAX_AMOUNT),
            "currency": "USD",
        }


def open_bank(api: httpx.Client, session_factory: sessionmaker[Session]) -> Bank:
    """The bank workload's customers and funded accounts (tests/bank.py)."""
    opened = workload.Bank(session_factory)
    opened.open(api)
    return Bank(headers=opened.headers, accounts=opened.accounts, owner_ids=opened.owner_ids)


def pending_among(session_factory: sessionmaker[Session], ids: list[uuid.UUID]) -> int:
    with session_factory() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Transfer)
                .where(Transfer.id.in_(ids), Transfer.status == "pending")
            )
            or 0
        )


def check_invariants(
    session_factory: sessionmaker[Session], bank: Bank, accepted: list[uuid.UUID]
) -> list[Transfer]:
    """Every bank invariant (module docstring) except webhooks; returns the transfers."""
    ids = [uuid.UUID(a["id"]) for a in bank.accounts]
    with session_factory() as session:
        rows = session.scalars(select(Account).where(Account.id.in_(ids))).all()
        assert sum(a.balance for a in rows) == ACCOUNTS * OPENING_BALANCE
        assert all(a.balance >= -a.overdraft_limit for a in rows)
        transfers = list(
            session.scalars(
                select(Transfer).where(Transfer.id.in_(accepted)).order_by(Transfer.seq)
            ).all()
        )
        assert len(transfers) == len(set(accepted)) == len(accepted)
        # Nothing doubled: every transfer out of the bank's accounts is one we were
        # answered 202 for (deposits come from the settlement account).
        made = session.scalar(
            select(func.count())
            .select_from(Transfer)
            .where(Transfer.source_account_id.in_(ids), Transfer.kind == "transfer")
        )
        assert made == len(accepted), f"{made} transfers made for {len(accepted)} accepted"
        statuses = {t.status for t in transfers}
        assert statuses <= {"succeeded", "failed"} and "failed" in statuses
        entries = session.scalars(
            select(LedgerEntry).where(LedgerEntry.transfer_id.in_(accepted))
        ).all()
        events = session.execute(
            select(Event.user_id, Event.payload["data"]["transfer"]["id"].astext).where(
                Event.user_id.in_(bank.owner_ids),
                Event.type.in_(["transfer.succeeded", "transfer.failed"]),
            )
        ).all()
    succeeded = [t for t in transfers if t.status == "succeeded"]
    assert len(entries) == 2 * len(succeeded)  # each effect exactly once
    # One event per transfer and user involved (initiator, owners of both accounts);
    # the bank's customers are the initiators and own every account.
    per_transfer = Counter(transfer_id for _, transfer_id in events)
    doubled = [k for k, n in Counter(events).items() if n > 1]
    assert not doubled, f"events written twice: {doubled[:5]}"
    missing = [t.id for t in transfers if per_transfer[str(t.id)] == 0]
    assert not missing, f"transfers without an event: {missing[:5]}"
    debit_seq = {e.transfer_id: e.sequence for e in entries if e.amount < 0}
    for source in ids:  # FIFO: acceptance order == application order, per source
        own = [t for t in transfers if t.source_account_id == source]
        applied = [debit_seq[t.id] for t in own if t.status == "succeeded"]
        assert applied == sorted(applied)
        completed = [t.completed_at for t in own]
        assert completed == sorted(completed)
    return transfers


def check_webhooks(
    session_factory: sessionmaker[Session], endpoint_id: uuid.UUID, received_ids: list[str]
) -> int:
    """One delivery per event of the endpoint's user, each delivered; every one of them
    reached the receiver (at least once: receivers deduplicate on webhook-id). Returns
    how many deliveries arrived more than once."""
    with session_factory() as session:
        rows = session.execute(
            select(WebhookDelivery.event_seq, WebhookDelivery.status, Event.id)
            .join(Event, Event.seq == WebhookDelivery.event_seq)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
        ).all()
    assert rows, "no webhook delivery at all"
    per_event = Counter(seq for seq, _, _ in rows)
    assert max(per_event.values()) == 1, "an event got two deliveries"
    undelivered = [event_id for _, status, event_id in rows if status != "succeeded"]
    assert not undelivered, f"{len(undelivered)} deliveries not delivered"
    arrived = Counter(received_ids)
    lost = [event_id for _, _, event_id in rows if event_id not in arrived]
    assert not lost, f"{len(lost)} webhooks never reached the receiver"
    return sum(1 for n in arrived.values() if n > 1)
