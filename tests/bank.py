"""Jepsen's bank workload over HTTP, shared by the end-to-end tests that break things.

Accounts with a known total exchange random transfers (some too large, so they must
fail; two accounts may overdraw) from several client threads, each pinned to one of
the given gateways. After the faults: every accepted transfer is terminal, the total
is unchanged, no balance is below its floor, each effect happened exactly once, FIFO
per source account held, and `settle verify` passes.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from domain.models import Account, LedgerEntry, Transfer
from tests.factories import (
    change_limits,
    login,
    make_user,
    open_account,
    post_deposit,
    wait_terminal,
)

ACCOUNTS = 12
OPENING_BALANCE = 10_000
OVERDRAFT = 2_000  # on the first two accounts
TRANSFERS_PER_CLIENT = 90
CLIENTS = 6


@dataclass
class Bank:
    """The accounts and customers of one run of the workload."""

    session_factory: sessionmaker[Session]
    accounts: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    accepted: list[uuid.UUID] = field(default_factory=list)

    def open(self, api: httpx.Client) -> None:
        """Customers, accounts (two with an overdraft, four eyes), opening deposits."""
        owners = [make_user(self.session_factory) for _ in range(CLIENTS)]
        self.headers = [login(api, owner.email) for owner in owners]
        operator = login(api, make_user(self.session_factory, role="operator").email)
        approver = login(api, make_user(self.session_factory, role="operator").email)
        self.accounts = [open_account(api, self.headers[i % CLIENTS]) for i in range(ACCOUNTS)]
        for account in self.accounts[:2]:
            applied = change_limits(
                api, operator, approver, account["id"], {"overdraft_limit": OVERDRAFT}
            )
            assert applied.status_code == 200, applied.text
        for account in self.accounts:
            deposit = post_deposit(api, operator, account["id"], OPENING_BALANCE)
            assert wait_terminal(api, operator, deposit["id"])["status"] == "succeeded"

    def submit_round(self, base_urls: list[str], round_: int) -> list[uuid.UUID]:
        """One round: CLIENTS threads, client i on gateway i % len(base_urls)."""
        numbers = [a["number"] for a in self.accounts]
        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            batches = pool.map(
                lambda i: _submit(
                    base_urls[i % len(base_urls)],
                    self.headers[i],
                    [a for j, a in enumerate(self.accounts) if j % CLIENTS == i],
                    numbers,
                    seed=i,
                    round_=round_,
                ),
                range(CLIENTS),
            )
            ids = [transfer_id for batch in batches for transfer_id in batch]
        self.accepted += ids
        return ids

    def wait_all_terminal(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self.session_factory() as session:
                pending = session.scalars(
                    select(Transfer.id).where(
                        Transfer.id.in_(self.accepted), Transfer.status == "pending"
                    )
                ).all()
            if not pending:
                return
            assert time.monotonic() < deadline, f"{len(pending)} transfers still pending"
            time.sleep(0.5)

    def check_invariants(self) -> None:
        ids = [uuid.UUID(a["id"]) for a in self.accounts]
        with self.session_factory() as session:
            rows = session.scalars(select(Account).where(Account.id.in_(ids))).all()
            assert sum(a.balance for a in rows) == ACCOUNTS * OPENING_BALANCE
            assert all(a.balance >= -a.overdraft_limit for a in rows)
            transfers = session.scalars(
                select(Transfer).where(Transfer.id.in_(self.accepted)).order_by(Transfer.seq)
            ).all()
            assert len(transfers) == len(set(self.accepted)) == len(self.accepted)
            assert len(self.accepted) % (CLIENTS * TRANSFERS_PER_CLIENT) == 0
            statuses = {t.status for t in transfers}
            assert statuses <= {"succeeded", "failed"} and "failed" in statuses
            entries = session.scalars(
                select(LedgerEntry).where(LedgerEntry.transfer_id.in_(self.accepted))
            ).all()
        succeeded = [t for t in transfers if t.status == "succeeded"]
        assert len(entries) == 2 * len(succeeded)  # each effect exactly once
        debit_seq = {e.transfer_id: e.sequence for e in entries if e.amount < 0}
        for source in ids:  # FIFO: acceptance order == application order, per source
            own = [t for t in transfers if t.source_account_id == source]
            applied = [debit_seq[t.id] for t in own if t.status == "succeeded"]
            assert applied == sorted(applied)
            completed = [t.completed_at for t in own]
            assert completed == sorted(completed)


def settle_verify(env: dict[str, str]) -> None:
    """`settle verify` (every ledger and audit-chain check) passes."""
    verify = subprocess.run(
        [Path(sys.executable).parent / "settle", "verify"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout


def _submit(
    base_url: str,
    headers: dict[str, str],
    sources: list[dict[str, Any]],
    numbers: list[str],
    seed: int,
    round_: int,
) -> list[uuid.UUID]:
    rng = random.Random(seed * 1000 + round_)
    accepted = []
    with httpx.Client(base_url=base_url, timeout=30) as api:
        for i in range(TRANSFERS_PER_CLIENT):
            source = rng.choice(sources)
            destination = rng.choice([n for n in numbers if n != source["number"]])
            body = {
                "source_account_id": source["id"],
                "destination_account_number": destination,
                "amount": rng.randint(1, 4_000),
                "currency": "USD",
            }
            key = {"Idempotency-Key": f"bank-{seed}-{round_}-{i}"}
            response = api.post("/v1/transfers", json=body, headers={**headers, **key})
            if response.status_code != 202:  # a retry with the same key must be safe
                response = api.post("/v1/transfers", json=body, headers={**headers, **key})
            assert response.status_code == 202, response.text
            accepted.append(uuid.UUID(response.json()["id"]))
    return accepted
