"""Jepsen's bank workload, adapted: money is conserved while workers and Redis die.

Many accounts with a known total exchange random transfers over HTTP (some too
large, so they must fail) while a chaos thread SIGKILLs worker pool children,
SIGKILLs whole workers (their unacknowledged messages then sit in Redis for the
visibility timeout, far longer than this test), and restarts a Redis that keeps
nothing on disk (every queued message is lost). At the end every accepted transfer
must be terminal, the total unchanged, no balance below its floor, FIFO per source
account held, and `settle verify` must pass.
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


def _submit(base_url, headers, sources, numbers, seed, round_):
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
    deadline = time.monotonic() + timeout
    while True:
        with session_factory() as session:
            pending = session.scalars(
                select(Transfer.id).where(Transfer.id.in_(ids), Transfer.status == "pending")
            ).all()
        if not pending:
            return
        assert time.monotonic() < deadline, f"{len(pending)} transfers still pending"
        time.sleep(0.5)


def _check_invariants(session_factory, accounts, accepted):
    ids = [uuid.UUID(a["id"]) for a in accounts]
    with session_factory() as session:
        rows = session.scalars(select(Account).where(Account.id.in_(ids))).all()
        assert sum(a.balance for a in rows) == ACCOUNTS * OPENING_BALANCE
        assert all(a.balance >= -a.overdraft_limit for a in rows)
        transfers = session.scalars(
            select(Transfer).where(Transfer.id.in_(accepted)).order_by(Transfer.seq)
        ).all()
        assert len(transfers) == len(set(accepted)) == len(accepted)
        assert len(accepted) % (CLIENTS * TRANSFERS_PER_CLIENT) == 0
        statuses = {t.status for t in transfers}
        assert statuses <= {"succeeded", "failed"} and "failed" in statuses
        entries = session.scalars(
            select(LedgerEntry).where(LedgerEntry.transfer_id.in_(accepted))
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
