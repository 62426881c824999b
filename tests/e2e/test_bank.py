"""Jepsen's bank workload, adapted: money is conserved while workers and Redis die.

Many accounts with a known total exchange random transfers over HTTP (tests/bank.py)
while a chaos thread SIGKILLs worker pool children, SIGKILLs whole workers (on Redis
their unacknowledged messages then sit for the visibility timeout, far longer than
this test; on RabbitMQ they come back at once), and restarts a Redis that keeps
nothing on disk (on Redis every queued message is lost; on RabbitMQ the lane
markers are). At the end every accepted transfer must be terminal, the total
unchanged, no balance below its floor, FIFO per source account held, and
`settle verify` must pass. The workload's mix (tests/bank.py) includes holds,
captures, voids, expiries and reversals.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import threading
import time

import httpx
import psutil
import pytest

from settle import processes
from settle.devservices import EmbeddedRedis
from tests.bank import Bank, settle_verify
from tests.processes import Process, running_gateway, worker_args
from tests.services import fresh_broker_url

pytestmark = pytest.mark.e2e
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


def test_bank_money_is_conserved_under_worker_and_redis_crashes(
    services, session_factory, tmp_path
):
    redis_server = EmbeddedRedis(tmp_path / "redis")
    redis_server.start(appendonly=False)
    with fresh_broker_url(services) as broker_url:
        env = {
            **os.environ,
            "REDIS_URL": redis_server.url,
            "SETTLE_REDIS_PREFIX": f"bank-{secrets.token_hex(3)}:",
            "SETTLE_BROKER_URL": broker_url,
            "SETTLE_DRAIN_BATCH_SIZE": "10",
        }
        try:
            chaos = Chaos(env, redis_server)
            try:
                _run_bank(env, chaos, session_factory)
            finally:
                chaos.shutdown()
        finally:
            redis_server.stop()


def _run_bank(env, chaos, session_factory):
    bank = Bank(session_factory)
    with running_gateway(env) as base_url, httpx.Client(base_url=base_url, timeout=30) as api:
        bank.open(api)
        chaos.start()
        for round_ in range(MAX_ROUNDS):
            bank.submit_round([base_url], round_)
            if chaos.did_everything():
                break
        chaos.stop()
        try:
            bank.wait_all_terminal(timeout=90)
        except AssertionError:
            for process in [*chaos.workers, chaos.beat]:
                print(f"---- {process.name} log tail ----\n{process.log()[-3000:]}")
            raise
    bank.check_invariants()
    settle_verify(env)
    print("chaos:", ", ".join(chaos.actions))
    assert any("redis" in a for a in chaos.actions)
    assert any("whole worker" in a for a in chaos.actions)
