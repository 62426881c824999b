"""The fault matrix: one component fails under load, then heals; the bank must hold.

Beside the bank test (test_bank.py, which kills workers and restarts Redis at random),
each case here injects ONE fault while six clients keep sending transfers, heals it,
and then requires:
- every accepted transfer terminal within RECOVERY_SECONDS (60) of the healing;
- the total unchanged, no balance below its floor, FIFO per source account;
- every request answered 202 in the end (clients retry with the same Idempotency-Key),
  each key exactly one transfer: nothing lost, nothing doubled;
- each effect once: two entries per succeeded transfer, one event per transfer and
  recipient, one webhook delivery per event, every delivery delivered;
- `settle verify` passes.

The faults:
- PostgreSQL stopped with `pg_ctl -m immediate` (every backend killed, no checkpoint)
  and started again: on a private server this test starts (pgserver, in its temp dir),
  never the suite's own or a shared one;
- Redis SIGKILLed and restarted, with its append-only file (it replays what it had)
  and without (every queued message and lane marker is gone);
- a whole worker (parent and pool children) frozen with SIGSTOP for longer than the
  task time limit, caught while its drain holds a transaction (and so account locks),
  then SIGCONT: the other worker must go on meanwhile;
- the gateway SIGKILLed (supervisor and its process) while requests are in flight, then
  started again on the same port.

Each case prints one line for the fault-by-outcome table (README, "Fault matrix").
They take one to two minutes each: marked `faults`, deselected by default (README, "Tests").
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from domain.db import make_engine, make_session_factory
from domain.migrate import migrate
from domain.models import Transfer
from settle import processes
from settle.devservices import EmbeddedPostgres, EmbeddedRedis, start_missing_services, stop_all
from tests.e2e.bank import (
    CLIENTS,
    Bank,
    check_invariants,
    check_webhooks,
    open_bank,
    pending_among,
)
from tests.processes import Process, free_port, start_gateway, worker_args
from tests.receiver import running_receiver

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

RECOVERY_SECONDS = 60.0
WARMUP_SECONDS = 3.0  # load before the fault
AFTERMATH_SECONDS = 2.0  # load after the healing
PACE_SECONDS = 0.05  # between one client's transfers
RETRY_SECONDS = 120.0  # a client gives a request up after retrying this long
# Answers a client retries with the same key: in flight (409), unavailable (503), and
# the gateway gone (transport errors). Anything else is an error of the run.
RETRYABLE = {409, 503}
# The worker freeze: Celery's hard time limit is set this low for that case, and the
# drain's idle-in-transaction timeout this low, so the case stays short.
FROZEN_TASK_LIMIT_SECONDS = 6
FROZEN_IDLE_TIMEOUT_SECONDS = 2


class Load:
    """CLIENTS threads, each sending transfers from its own accounts until stopped,
    each request retried with the same Idempotency-Key until it is answered 202."""

    def __init__(self, base_url: str, bank: Bank, *, prefix: str) -> None:
        self.base_url, self.bank, self.prefix = base_url, bank, prefix
        self.accepted: list[uuid.UUID] = []
        self.answers: Counter[str] = Counter()  # non-202 answers seen, retried
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(CLIENTS)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _client(self, client: int) -> None:
        rng = random.Random(f"{self.prefix}-{client}")
        with httpx.Client(base_url=self.base_url, timeout=30) as api:
            i = 0
            while not self._stop.is_set():
                body = self.bank.transfer_body(rng, client)
                key = f"{self.prefix}-{client}-{i}"
                transfer_id = self._send(api, client, body, key)
                if transfer_id is None:
                    return
                with self._lock:
                    self.accepted.append(transfer_id)
                i += 1
                time.sleep(PACE_SECONDS)

    def _send(
        self, api: httpx.Client, client: int, body: dict[str, Any], key: str
    ) -> uuid.UUID | None:
        headers = {**self.bank.headers[client], "Idempotency-Key": key}
        deadline = time.monotonic() + RETRY_SECONDS
        while True:
            try:
                response = api.post("/v1/transfers", json=body, headers=headers)
            except httpx.TransportError as exc:
                answer = f"transport: {type(exc).__name__}"
            else:
                if response.status_code == 202:
                    return uuid.UUID(response.json()["id"])
                answer = f"{response.status_code} {response.json().get('code', '')}"
                if response.status_code not in RETRYABLE:
                    with self._lock:
                        self.errors.append(f"{key}: {answer}: {response.text[:300]}")
                    return None
            with self._lock:
                self.answers[answer] += 1
            if time.monotonic() > deadline:
                with self._lock:
                    self.errors.append(f"{key}: still {answer} after {RETRY_SECONDS:.0f} s")
                return None
            time.sleep(0.2)


@dataclass
class Stack:
    """Settle's processes on a Redis (and, for the PostgreSQL case, a PostgreSQL) of
    this test's own, so the faults hit nothing else."""

    env: dict[str, str]
    redis: EmbeddedRedis
    postgres: EmbeddedPostgres | None
    session_factory: sessionmaker[Session]
    port: int
    gateway: Process
    workers: list[Process]
    beat: Process
    notes: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def processes(self) -> list[Process]:
        return [self.gateway, *self.workers, self.beat]

    def dump_logs(self) -> None:
        for process in self.processes():
            print(f"---- {process.name} log tail ----\n{process.log()[-3000:]}")


@contextmanager
def running_stack(
    tmp_path: Path,
    session_factory: sessionmaker[Session],
    *,
    appendonly: bool = False,
    private_postgres: bool = False,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    redis_server = EmbeddedRedis(tmp_path / "redis")
    redis_server.start(appendonly=appendonly)
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "SETTLE_REDIS_PREFIX": f"faults-{secrets.token_hex(3)}:",
        "SETTLE_DRAIN_BATCH_SIZE": "10",
        "SETTLE_AUDIT_CHECKPOINT_PATH": str(tmp_path / "audit-checkpoints.jsonl"),
        "SETTLE_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on 127.0.0.1
        **(extra_env or {}),
    }
    started: list[Any] = []
    engine = None
    postgres = None
    pg_dir: Path | None = None
    try:
        if private_postgres:
            # A server of this test's own, with the owner and app roles like production.
            for name in ("DATABASE_URL", "SETTLE_MIGRATION_DATABASE_URL"):
                env.pop(name, None)
            # Not under tmp_path: pytest keeps its base temp dir private to root (and
            # other pytest runs reset that), and PostgreSQL runs as another user.
            pg_dir = Path(tempfile.mkdtemp(prefix="settle-faults-"))
            started = start_missing_services(pg_dir, env, roles=True)
            postgres = next(s for s in started if isinstance(s, EmbeddedPostgres))
            assert not migrate(
                owner_url=env["SETTLE_MIGRATION_DATABASE_URL"], app_url=env["DATABASE_URL"]
            )
            engine = make_engine(env["DATABASE_URL"], pool_size=4, max_overflow=4)
            session_factory = make_session_factory(engine)
        workers = []
        for _ in range(2):
            workers.append(Process("worker", worker_args(concurrency=2), env))
        beat = Process("beat", processes.beat_argv(schedule=str(tmp_path / "beat-schedule")), env)
        for worker in workers:
            worker.wait_for_log("ready.")
        port = free_port()
        gateway = start_gateway(env, port=port)
        stack = Stack(env, redis_server, postgres, session_factory, port, gateway, workers, beat)
        try:
            yield stack
        finally:
            for process in stack.processes():
                process.stop()
    finally:
        if engine is not None:
            engine.dispose()
        stop_all(started)
        if pg_dir is not None:
            shutil.rmtree(pg_dir, ignore_errors=True)
        redis_server.stop()


# ---- the faults: each injects, holds, heals; returns notes for the table ----


def crash_postgres(stack: Stack, load: Load) -> None:
    assert stack.postgres is not None
    stack.postgres.crash()
    time.sleep(5)
    stack.postgres.restart()


def kill_redis(stack: Stack, load: Load) -> None:
    stack.redis.kill()
    time.sleep(3)
    stack.redis.start(appendonly=stack.redis.appendonly)


def _terminal_count(stack: Stack, load: Load) -> int:
    with stack.session_factory() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Transfer)
                .where(Transfer.id.in_(list(load.accepted)), Transfer.status != "pending")
            )
            or 0
        )


def _holds_transaction(stack: Stack, worker: Process) -> bool:
    """Whether a process of `worker` has a transaction open that locked or wrote rows."""
    names = [
        f"settle-worker {p.pid}"
        for p in [psutil.Process(worker.pid), *psutil.Process(worker.pid).children(True)]
    ]
    with stack.session_factory() as session:
        found = session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY(:names)"
                " AND state = 'idle in transaction' AND backend_xid IS NOT NULL"
            ),
            {"names": names},
        )
    return bool(found)


def freeze_worker(stack: Stack, load: Load) -> None:
    """SIGSTOP a whole worker at a moment its drain holds a transaction (so account
    and transfer row locks), for longer than the task time limit; then SIGCONT."""
    victim = stack.workers[0]
    rng = random.Random(3)
    tries = 0
    while True:
        tries += 1
        os.killpg(victim.pid, signal.SIGSTOP)
        time.sleep(0.02)
        if _holds_transaction(stack, victim):
            break
        os.killpg(victim.pid, signal.SIGCONT)
        assert tries < 400, "never caught the worker inside a transaction"
        time.sleep(rng.uniform(0.0, 0.05))
    stack.notes.append(f"caught in a transaction after {tries} tries")
    frozen = FROZEN_TASK_LIMIT_SECONDS + 4
    # Once PostgreSQL has ended the frozen transaction, the other worker must go on.
    time.sleep(FROZEN_IDLE_TIMEOUT_SECONDS + 2)
    before = _terminal_count(stack, load)
    time.sleep(frozen - FROZEN_IDLE_TIMEOUT_SECONDS - 2)
    during = _terminal_count(stack, load) - before
    os.killpg(victim.pid, signal.SIGCONT)
    stack.notes.append(f"{during} transfers settled by the other worker while frozen")
    assert during > 0, "the frozen worker's locks stopped every other drain"


def kill_gateway(stack: Stack, load: Load) -> None:
    # Mid-request: the clients send every 50 ms each, so some request is in flight.
    os.killpg(stack.gateway.pid, signal.SIGKILL)
    stack.gateway.stop()  # reaps it (and closes its log)
    time.sleep(2)
    stack.gateway = start_gateway(stack.env, port=stack.port)


@dataclass(frozen=True)
class Fault:
    name: str
    inject_and_heal: Callable[[Stack, Load], None]
    appendonly: bool = False
    private_postgres: bool = False
    env: dict[str, str] = field(default_factory=dict)


FAULTS = [
    Fault("postgres restarted (pg_ctl -m immediate)", crash_postgres, private_postgres=True),
    Fault("redis SIGKILLed, AOF on", kill_redis, appendonly=True),
    Fault("redis SIGKILLed, no persistence", kill_redis),
    Fault(
        "worker SIGSTOPped past the task time limit",
        freeze_worker,
        env={
            "SETTLE_TASK_TIME_LIMIT_SECONDS": str(FROZEN_TASK_LIMIT_SECONDS),
            "SETTLE_DRAIN_IDLE_TIMEOUT_SECONDS": str(FROZEN_IDLE_TIMEOUT_SECONDS),
        },
    ),
    Fault("gateway SIGKILLed mid-request", kill_gateway),
]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.inject_and_heal.__name__)
def test_fault(fault: Fault, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    with (
        running_receiver() as receiver,
        running_stack(
            tmp_path,
            session_factory,
            appendonly=fault.appendonly,
            private_postgres=fault.private_postgres,
            extra_env=fault.env,
        ) as stack,
    ):
        try:
            _run(fault, stack, receiver)
        except BaseException:
            stack.dump_logs()
            raise


def _run(fault: Fault, stack: Stack, receiver: Any) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=30) as api:
        bank = open_bank(api, stack.session_factory)
        endpoint = api.post(
            "/v1/webhook-endpoints",
            json={"url": receiver.url, "events": ["transfer.succeeded", "transfer.failed"]},
            headers=bank.headers[0],
        )
        assert endpoint.status_code == 201, endpoint.text
    load = Load(stack.base_url, bank, prefix=f"fault-{secrets.token_hex(3)}")
    load.start()
    time.sleep(WARMUP_SECONDS)
    injected = time.monotonic()
    try:
        fault.inject_and_heal(stack, load)
    finally:
        healed = time.monotonic()
        time.sleep(AFTERMATH_SECONDS)
        load.stop()
    assert not load.errors, load.errors[:5]
    accepted = list(load.accepted)
    deadline = healed + RECOVERY_SECONDS
    while pending := pending_among(stack.session_factory, accepted):
        assert time.monotonic() < deadline, (
            f"{pending} transfers still pending {RECOVERY_SECONDS:.0f} s after healing"
        )
        time.sleep(0.25)
    recovery = time.monotonic() - healed
    # Webhooks come after the transfers; the same 60 s from the healing.
    endpoint_id = uuid.UUID(endpoint.json()["id"])
    while True:
        try:
            duplicates = check_webhooks(
                stack.session_factory,
                endpoint_id,
                [r.headers.get("webhook-id", "") for r in list(receiver.requests)],
            )
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    transfers = check_invariants(stack.session_factory, bank, accepted)
    verify = subprocess.run(
        [Path(sys.executable).parent / "settle", "verify"],
        env=stack.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    statuses = Counter(t.status for t in transfers)
    retried = ", ".join(f"{n} x {answer}" for answer, n in sorted(load.answers.items()))
    print(
        f"\nFAULT | {fault.name} | {len(accepted)} transfers "
        f"({statuses['succeeded']} succeeded, {statuses['failed']} failed) | "
        f"down {healed - injected:.1f} s | all terminal {recovery:.1f} s after healing | "
        f"retried answers: {retried or 'none'} | webhooks delivered twice: {duplicates} | "
        f"{'; '.join(stack.notes) or '-'}"
    )
