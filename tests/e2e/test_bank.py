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

from settle import processes
from settle.devservices import EmbeddedRedis
from tests.e2e.bank import CLIENTS, check_invariants, open_bank, submit, wait_all_terminal
from tests.processes import Process, running_gateway, worker_args

pytestmark = pytest.mark.e2e

TRANSFERS_PER_CLIENT = 90
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
            bank = open_bank(api, session_factory)
            chaos.start()
            accepted: list[uuid.UUID] = []
            for round_ in range(MAX_ROUNDS):
                with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
                    batches = pool.map(
                        lambda i, r=round_: submit(
                            base_url,
                            bank,
                            i,
                            count=TRANSFERS_PER_CLIENT,
                            key_prefix=f"bank-{i}-{r}",
                            seed=i * 1000 + r,
                        ),
                        range(CLIENTS),
                    )
                    accepted += [transfer_id for batch in batches for transfer_id in batch]
                if chaos.did_everything():
                    break
            chaos.stop()
            try:
                wait_all_terminal(session_factory, accepted, timeout=90)
            except AssertionError:
                for process in [*chaos.workers, chaos.beat]:
                    print(f"---- {process.name} log tail ----\n{process.log()[-3000:]}")
                raise
        check_invariants(session_factory, bank, accepted)
        assert len(accepted) % (CLIENTS * TRANSFERS_PER_CLIENT) == 0
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
