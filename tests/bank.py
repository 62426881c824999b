"""Jepsen's bank workload over HTTP, shared by the end-to-end tests that break things.

Accounts with a known total exchange random transfers (some too large, so they must
fail; two accounts may overdraw) from several client threads, each pinned to one of
the given gateways. The random mix also holds money (some holds expire by the beat's
sweeper while the test runs), captures part or all of earlier holds, voids some, and
has an operator reverse earlier transfers, fully or in part. After the faults: every
accepted transfer is terminal, the total is unchanged, no balance (less what is held)
is below its floor, each effect happened exactly once, every account's held amount
equals the sum of its active holds, FIFO per source account held, and `settle verify`
passes.
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
    operator: dict[str, str] = field(default_factory=dict)
    owner_ids: list[uuid.UUID] = field(default_factory=list)
    accepted: list[uuid.UUID] = field(default_factory=list)

    def open(self, api: httpx.Client) -> None:
        """Customers, accounts (two with an overdraft, four eyes), opening deposits."""
        owners = [make_user(self.session_factory) for _ in range(CLIENTS)]
        self.owner_ids = [owner.id for owner in owners]
        self.headers = [login(api, owner.email) for owner in owners]
        operator = self.operator = login(
            api, make_user(self.session_factory, role="operator").email
        )
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
                    self.operator,
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
        """Every transfer applied, and every hold settled (the beat expires the rest)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.session_factory() as session:
                pending = session.scalars(
                    select(Transfer.id).where(
                        Transfer.id.in_(self.accepted), Transfer.status.in_(["pending", "held"])
                    )
                ).all()
            if not pending:
                return
            assert time.monotonic() < deadline, f"{len(pending)} transfers still pending or held"
            time.sleep(0.5)

    def check_invariants(self) -> None:
        ids = [uuid.UUID(a["id"]) for a in self.accounts]
        accepted = self.accepted
        with self.session_factory() as session:
            rows = session.scalars(select(Account).where(Account.id.in_(ids))).all()
            assert sum(a.balance for a in rows) == ACCOUNTS * OPENING_BALANCE
            assert all(a.balance - a.held >= -a.overdraft_limit for a in rows)
            transfers = session.scalars(
                select(Transfer).where(Transfer.id.in_(accepted)).order_by(Transfer.seq)
            ).all()
            assert len(transfers) == len(set(accepted)) == len(accepted)
            statuses = {t.status for t in transfers}
            assert statuses <= {"succeeded", "failed", "captured", "voided", "expired"}
            assert {"failed", "captured", "expired"} <= statuses, statuses
            kinds = {t.kind for t in transfers}
            assert kinds == {"transfer", "hold", "capture", "void", "reversal"}, kinds
            # Held amounts equal the sum of active holds (none is left active now) ...
            held = {a.id: 0 for a in rows}
            active = session.scalars(select(Transfer).where(Transfer.status == "held")).all()
            for hold in active:
                held[hold.source_account_id] = held.get(hold.source_account_id, 0) + hold.amount
            assert {a.id: a.held for a in rows} == {a: held[a] for a in ids}
            entries = session.scalars(
                select(LedgerEntry).where(LedgerEntry.transfer_id.in_(accepted))
            ).all()
        moved = [t for t in transfers if t.status == "succeeded" and t.kind != "void"]
        assert len(entries) == 2 * len(moved)  # each effect exactly once
        by_id = {t.id: t for t in transfers}
        for hold in (t for t in transfers if t.kind == "hold"):
            # ... and each hold had one outcome: one succeeded capture iff captured.
            wins = [c for c in transfers if c.hold_id == hold.id and c.status == "succeeded"]
            assert len(wins) == (hold.status in ("captured", "voided"))
            if hold.status == "captured":
                assert wins[0].kind == "capture" and wins[0].amount == hold.captured_amount
        for original in {t.reverses for t in transfers if t.reverses}:
            reversed_total = sum(
                t.amount for t in transfers if t.reverses == original and t.status == "succeeded"
            )
            assert reversed_total <= by_id[original].amount
        debit_seq = {e.transfer_id: e.sequence for e in entries if e.amount < 0}
        for source in ids:  # FIFO: acceptance order == application order, per source
            # Among what the source's owner sent, one request after the other. Operator
            # reversals debit the original's destination from other client threads, at
            # the same time as its owner's requests: they have no order to keep.
            own = [t for t in transfers if t.source_account_id == source and t.kind != "reversal"]
            applied = [debit_seq[t.id] for t in own if t.id in debit_seq]
            assert applied == sorted(applied)
            # (A hold's completed_at moves on when it is captured, voided or expired.)
            completed = [t.completed_at for t in own if t.kind != "hold"]
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


def _request(
    rng: random.Random,
    source: dict[str, Any],
    numbers: list[str],
    sent: list[str],
    holds: list[tuple[str, int]],
) -> tuple[str, dict[str, Any], bool]:
    """One random money request of the mix: (path, body, may it be refused with 409)."""
    destination = rng.choice([n for n in numbers if n != source["number"]])
    body: dict[str, Any] = {
        "source_account_id": source["id"],
        "destination_account_number": destination,
        "amount": rng.randint(1, 4_000),
        "currency": "USD",
    }
    roll = rng.random()
    if roll < 0.15:
        # Short-lived: some are captured or voided first, the rest expire by the beat.
        return "/v1/holds", {**body, "expires_in_seconds": rng.randint(1, 4)}, False
    if roll < 0.25 and holds:
        hold_id, amount = rng.choice(holds)
        if rng.random() < 0.3:
            return f"/v1/holds/{hold_id}/void", {}, True
        return f"/v1/holds/{hold_id}/capture", {"amount": rng.randint(1, amount)}, True
    if roll < 0.32 and sent:
        # An operator reverses (part of) an earlier transfer: pending, failed or already
        # reversed ones are refused with 409, which is part of the test.
        return f"/v1/transfers/{rng.choice(sent)}/reversals", {"amount": rng.randint(1, 800)}, True
    return "/v1/transfers", body, False


def _submit(
    base_url: str,
    headers: dict[str, str],
    operator: dict[str, str],
    sources: list[dict[str, Any]],
    numbers: list[str],
    seed: int,
    round_: int,
) -> list[uuid.UUID]:
    rng = random.Random(seed * 1000 + round_)
    accepted = []
    sent: list[str] = []
    holds: list[tuple[str, int]] = []
    with httpx.Client(base_url=base_url, timeout=30) as api:
        for i in range(TRANSFERS_PER_CLIENT):
            path, body, may_conflict = _request(rng, rng.choice(sources), numbers, sent, holds)
            caller = operator if "reversals" in path else headers
            key = {"Idempotency-Key": f"bank-{seed}-{round_}-{i}"}
            response = api.post(path, json=body, headers={**caller, **key})
            if response.status_code not in (202, 409):  # a retry with the same key is safe
                response = api.post(path, json=body, headers={**caller, **key})
            if may_conflict and response.status_code == 409:
                assert response.json()["code"] in (
                    "hold_not_active",
                    "transfer_not_succeeded",
                    "reversal_exceeds_original",
                ), response.text
                continue
            assert response.status_code == 202, response.text
            created = response.json()
            accepted.append(uuid.UUID(created["id"]))
            if created["kind"] == "transfer":
                sent.append(created["id"])
            elif created["kind"] == "hold":
                holds.append((created["id"], created["amount"]))
    return accepted
