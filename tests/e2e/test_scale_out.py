"""Two of everything, and the broker connection cut under load.

Two gateways (two ports), two transfer workers (two hostnames) and two beats share
one PostgreSQL and one broker while the bank workload (tests/bank.py) runs through
both gateways: the bank invariants hold, both gateways accepted, both workers
drained, and only one beat sent. On RabbitMQ a second test severs every connection
of the run's vhost (gateways' publishers, workers' consumers, beat) several times
under load: within 60 s of the last cut every transfer is terminal, the total is
unchanged, each effect happened once and FIFO held.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from settle.harness import close_rabbitmq_connections, delete_redis_keys
from tests.bank import Bank, settle_verify
from tests.processes import running_beat, running_gateway, running_worker, settings_env
from tests.services import fresh_broker_url

pytestmark = pytest.mark.e2e

# Rounds of the bank workload (540 transfers each) with two of everything, and under
# the connection cuts (long enough for several).
ROUNDS = 1
SEVERED_ROUNDS = 2
HEAL_TIMEOUT_SECONDS = 60
ACCEPTED = re.compile(r'^settle_transfers_accepted_total\{kind="transfer"\} (\S+)$', re.M)


class Stack:
    """Two gateways, two transfer workers, two beats, on one deployment's settings."""

    def __init__(self, env: dict[str, str], stack: ExitStack, schedules: Path) -> None:
        self.env = env
        self.workers = [
            stack.enter_context(running_worker(env, hostname=f"transfers@host-{name}"))
            for name in ("a", "b")
        ]
        self.beats = [
            stack.enter_context(running_beat(env, schedule=str(schedules / name)))
            for name in ("beat-a", "beat-b")
        ]
        self.gateways = [stack.enter_context(running_gateway(env)) for _ in range(2)]

    def logs(self) -> str:
        return "\n".join(
            f"---- {p.name} ----\n{p.log()[-2500:]}" for p in [*self.workers, *self.beats]
        )


@contextmanager
def _deployment(services, settings, tmp_path: Path) -> Iterator[Stack]:
    """A key prefix (and on RabbitMQ a vhost) of its own, and two of every process; the
    prefix's keys (rate-limit and velocity counters, lane markers) go when it ends."""
    prefix = f"scale-{secrets.token_hex(3)}:"
    with fresh_broker_url(services) as broker_url, ExitStack() as stack:
        # Registered first, so it runs last: after every process has stopped.
        stack.callback(delete_redis_keys, services.redis_url, prefix)
        isolated = settings.model_copy(update={"redis_prefix": prefix, "broker_url": broker_url})
        env = settings_env(isolated, SETTLE_DRAIN_BATCH_SIZE="10")
        yield Stack(env, stack, tmp_path)


def _accepted_by(base_url: str) -> float:
    metrics = httpx.get(f"{base_url}/metrics", timeout=10).text
    match = ACCEPTED.search(metrics)
    return float(match.group(1)) if match else 0.0


def test_two_gateways_two_workers_two_beats_keep_the_bank_invariants(
    services, settings, session_factory, tmp_path
):
    with _deployment(services, settings, tmp_path) as stack:
        bank = Bank(session_factory)
        with httpx.Client(base_url=stack.gateways[0], timeout=30) as api:
            bank.open(api)
        for round_ in range(ROUNDS):
            bank.submit_round(stack.gateways, round_)
        try:
            bank.wait_all_terminal(timeout=90)
        except AssertionError:
            print(stack.logs())
            raise
        bank.check_invariants()
        settle_verify(stack.env)
        # Both gateways took transfers, both workers drained, one beat sent.
        assert all(_accepted_by(url) > 0 for url in stack.gateways)
        for worker in stack.workers:
            assert "Task settle.drain_lane[" in worker.log(), worker.log()[-2000:]
        leaders = [beat for beat in stack.beats if "beat leads" in beat.log()]
        assert len(leaders) == 1, stack.logs()


class Severer:
    """Closes every connection of one RabbitMQ vhost every few seconds until stopped."""

    def __init__(self, vhost: str) -> None:
        self.vhost = vhost
        self.cuts: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(2.0) or len(self.cuts) < 2:
            close_rabbitmq_connections(self.vhost, "settle test: connection severed")
            self.cuts.append(time.monotonic())

    def __enter__(self) -> Severer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.rabbitmq
def test_severed_rabbitmq_connections_under_load_lose_nothing_and_apply_nothing_twice(
    services, settings, session_factory, tmp_path
):
    with _deployment(services, settings, tmp_path) as stack:
        vhost = unquote(urlsplit(stack.env["SETTLE_BROKER_URL"]).path[1:])
        bank = Bank(session_factory)
        with httpx.Client(base_url=stack.gateways[0], timeout=30) as api:
            bank.open(api)
        with Severer(vhost) as severer:
            for round_ in range(SEVERED_ROUNDS):
                bank.submit_round(stack.gateways, round_)
        healed = severer.cuts[-1]
        try:
            bank.wait_all_terminal(timeout=HEAL_TIMEOUT_SECONDS)
        except AssertionError:
            print(stack.logs())
            raise
        print(
            f"{len(severer.cuts)} cuts; every transfer terminal "
            f"{time.monotonic() - healed:.1f} s after the last"
        )
        bank.check_invariants()
        settle_verify(stack.env)
        reconnected = sum("Connection to broker lost" in w.log() for w in stack.workers)
        assert reconnected == len(stack.workers), stack.logs()
