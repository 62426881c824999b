"""Jepsen's bank workload, adapted: money is conserved while workers and Redis die.

Many accounts with a known total exchange random transfers over HTTP (some too
large, so they must fail) while a chaos thread SIGKILLs worker pool children,
SIGKILLs whole workers (their unacknowledged messages then sit in Redis for the
visibility timeout, far longer than this test), and restarts a Redis that keeps
nothing on disk (every queued message is lost). At the end every accepted transfer
must be terminal, the total unchanged, no balance below its floor, FIFO per source
account held, and `settle verify` must pass.

The random mix also holds money (some holds expire by the beat's sweeper while the test
runs), captures part or all of earlier holds, voids some, and has an operator reverse
earlier transfers, fully or in part: each effect must still happen once, and every
account's held amount must equal the sum of its active holds.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import select

from domain.models import Account, LedgerEntry, Transfer
from settle import processes
from settle.devservices import EmbeddedRedis
from tests.factories import (
    change_limits,
    login,
    make_user,
    open_account,
    post_deposit,
    wait_terminal,
)
from tests.processes import Process, running_gateway, worker_args

pytestmark = pytest.mark.e2e

ACCOUNTS = 12
OPENING_BALANCE = 10_000
OVERDRAFT = 2_000  # on the first two accounts
TRANSFERS_PER_CLIENT = 90
CLIENTS = 6
# Rounds of submissions go on until the chaos has restarted Redis and killed a
# whole worker at least once (a round takes a few seconds), up to this many.
MAX_ROUNDS = 12


class Chaos:
    """Kills and restarts things on a timer until stopped; logs what it did."""

    def __init__(self, env: dict[str, str], redis_server: EmbeddedRedis) -> None:
        self.env, self.redis = env, redis_server
        self.workers = [self._start_worker() for _ in range(2)]
        self.beat = Process(
            "beat", processes.beat_argv(schedule=str(redis_server.data_dir / "beat-schedule")), env
        )
        self.actions: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _start_worker(self) -> Process:
        worker = Process("worker", worker_args(concurrency=2), self.env)
        worker.wait_for_log("ready.")
        return worker

    def _run(self) -> None:
        rng = random.Random(7)
        step = 0
        # At least one whole cycle (pool child, worker, pool child, Redis), however soon
        # the load ends: on a fast run the submissions used to finish before step 4.
        while not (self._stop.is_set() and step >= 4):
            time.sleep(rng.uniform(1.0, 2.0))
            step += 1
            if step % 4 == 0:
                self.redis.stop()
                time.sleep(0.3)
                self.redis.start(appendonly=False)
                self.actions.append("restarted redis")
            elif step % 2 == 0:
                victim = self.workers.pop(rng.randrange(len(self.workers)))
                victim.stop(signal.SIGKILL)
                self.workers.append(self._start_worker())
                self.actions.append("SIGKILLed a whole worker")
            else:
                children = [
                    c
                    for w in self.workers
                    for c in psutil.Process(w.popen.pid).children(recursive=True)
                ]
                if children:
                    rng.choice(children).send_signal(signal.SIGKILL)
                    self.actions.append("SIGKILLed a pool child")

    def did_everything(self) -> bool:
        return any("redis" in a for a in self.actions) and any(
            "whole worker" in a for a in self.actions
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def shutdown(self) -> None:
        for process in [*self.workers, self.beat]:
            process.stop()


def _request(rng, source, numbers, sent, holds):
    """One random money request of the mix: (path, body, may it be refused with 409)."""
    destination = rng.choice([n for n in numbers if n != source["number"]])
    body = {
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


def _submit(base_url, headers, operator, sources, numbers, seed, round_):
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


def test_bank_money_is_conserved_under_worker_and_redis_crashes(session_factory, tmp_path):
    redis_server = EmbeddedRedis(tmp_path / "redis")
    redis_server.start(appendonly=False)
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "SETTLE_REDIS_PREFIX": f"bank-{secrets.token_hex(3)}:",
        "SETTLE_DRAIN_BATCH_SIZE": "10",
    }
    chaos = Chaos(env, redis_server)
    try:
        with running_gateway(env) as base_url, httpx.Client(base_url=base_url, timeout=30) as api:
            owners = [make_user(session_factory) for _ in range(CLIENTS)]
            headers = [login(api, owner.email) for owner in owners]
            operator = login(api, make_user(session_factory, role="operator").email)
            accounts = [open_account(api, headers[i % CLIENTS]) for i in range(ACCOUNTS)]
            approver = login(api, make_user(session_factory, role="operator").email)
            for account in accounts[:2]:
                applied = change_limits(
                    api, operator, approver, account["id"], {"overdraft_limit": OVERDRAFT}
                )
                assert applied.status_code == 200, applied.text
            for account in accounts:
                deposit = post_deposit(api, operator, account["id"], OPENING_BALANCE)
                assert wait_terminal(api, operator, deposit["id"])["status"] == "succeeded"

            numbers = [a["number"] for a in accounts]
            chaos.start()
            accepted: list[uuid.UUID] = []
            for round_ in range(MAX_ROUNDS):
                with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
                    batches = pool.map(
                        lambda i, r=round_: _submit(
                            base_url,
                            headers[i],
                            operator,
                            [a for j, a in enumerate(accounts) if j % CLIENTS == i],
                            numbers,
                            seed=i,
                            round_=r,
                        ),
                        range(CLIENTS),
                    )
                    accepted += [transfer_id for batch in batches for transfer_id in batch]
                if chaos.did_everything():
                    break
            chaos.stop()
            try:
                _wait_all_terminal(session_factory, accepted, timeout=90)
            except AssertionError:
                for process in [*chaos.workers, chaos.beat]:
                    print(f"---- {process.name} log tail ----\n{process.log()[-3000:]}")
                raise
        _check_invariants(session_factory, accounts, accepted)
        verify = subprocess.run(
            [Path(sys.executable).parent / "settle", "verify"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert verify.returncode == 0, verify.stdout
        print("chaos:", ", ".join(chaos.actions))
        assert any("redis" in a for a in chaos.actions)
        assert any("whole worker" in a for a in chaos.actions)
    finally:
        chaos.shutdown()
        redis_server.stop()


def _wait_all_terminal(session_factory, ids, timeout):
    """Every transfer applied, and every hold settled (the beat expires the rest)."""
    deadline = time.monotonic() + timeout
    while True:
        with session_factory() as session:
            pending = session.scalars(
                select(Transfer.id).where(
                    Transfer.id.in_(ids), Transfer.status.in_(["pending", "held"])
                )
            ).all()
        if not pending:
            return
        assert time.monotonic() < deadline, f"{len(pending)} transfers still pending or held"
        time.sleep(0.5)


def _check_invariants(session_factory, accounts, accepted):
    ids = [uuid.UUID(a["id"]) for a in accounts]
    with session_factory() as session:
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
        own = [t for t in transfers if t.source_account_id == source]
        applied = [debit_seq[t.id] for t in own if t.id in debit_seq]
        assert applied == sorted(applied)
        # (A hold's completed_at moves on when it is captured, voided or expired.)
        completed = [t.completed_at for t in own if t.kind != "hold"]
        assert completed == sorted(completed)
