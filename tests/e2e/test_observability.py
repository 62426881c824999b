"""The operator's view of a real stack (issue 13): Flower, /metrics and the logs.

One stack, as `make run` starts it (`settle serve` worker, webhooks, beat, flower and
web, on a Redis key prefix of its own, one shared metrics directory, JSON logs):
- idle for 60 s, Flower's task history gains fewer than 20 tasks, and the logs stay
  quiet (the 1 Hz webhook dispatcher made it 60+ tasks and ~216 lines a minute);
- after some traffic, /metrics (scraped from the gateway) shows every metric the
  issue names, recorded by the workers' processes; Flower names the drain tasks by
  lane and shows a refused webhook attempt as RETRY, not SUCCESS;
- the worker's JSON log lines carry the request id of the request that woke the
  lane, and one INFO line per transfer outcome.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from domain.db import make_engine, make_session_factory
from domain.db_roles import RoleUrls
from settle import processes
from settle.harness import Process, delete_redis_keys, free_port, migrated_database
from tests.factories import (
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
    wait_terminal,
)
from tests.processes import running_gateway
from tests.receiver import running_receiver
from tests.services import fresh_broker_url

pytestmark = pytest.mark.e2e

FLOWER_USER, FLOWER_PASSWORD = "ops", secrets.token_urlsafe(12)
IDLE_SECONDS = 60


@dataclass
class Stack:
    api: httpx.Client
    flower: str
    workers: dict[str, Process]
    sessions: sessionmaker[Session]  # the stack's own database, as the app role

    def flower_tasks(self) -> dict[str, Any]:
        response = httpx.get(
            f"{self.flower}/api/tasks", auth=(FLOWER_USER, FLOWER_PASSWORD), timeout=10
        )
        assert response.status_code == 200, response.text
        tasks: dict[str, Any] = response.json()
        return tasks

    def log_lines(self) -> int:
        return sum(len(p.log().splitlines()) for p in self.workers.values())


def _wait_for_flower(base_url: str, process: Process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            workers = httpx.get(
                f"{base_url}/api/workers?refresh=1", auth=(FLOWER_USER, FLOWER_PASSWORD), timeout=5
            )
            if workers.status_code == 200 and len(workers.json()) >= 2:
                return
        except httpx.HTTPError:
            pass
        if process.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"flower did not see the workers:\n{process.log()[-4000:]}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def own_services(services: Any) -> Iterator[tuple[RoleUrls, str]]:
    """A database and a broker of the stack's own. Every worker that consumes the
    webhooks queue claims due retries from its whole database: on the suite's shared
    one, the package's live worker (default retry schedule, no private addresses)
    would take this stack's retries. On RabbitMQ a vhost of its own keeps its messages
    from that worker too."""
    with (
        migrated_database(services.server_url, "settle_obs") as (_, roles),
        fresh_broker_url(services) as broker_url,
    ):
        yield roles, broker_url


@pytest.fixture(scope="module")
def stack(services: Any, own_services: tuple[RoleUrls, str]) -> Iterator[Stack]:
    roles, broker_url = own_services
    prefix = f"settle-obs-{secrets.token_hex(4)}:"
    scratch = Path(tempfile.mkdtemp(prefix="settle-obs-"))
    metrics_dir = scratch / "metrics"
    metrics_dir.mkdir()
    flower_port = free_port()
    # The suite sweeps every second to keep other tests short; this stack runs the
    # defaults, as `make run` does.
    base = {k: v for k, v in os.environ.items() if not k.startswith("SETTLE_SWEEP_")}
    env = {
        **base,
        "SETTLE_REDIS_PREFIX": prefix,
        "SETTLE_BROKER_URL": broker_url,
        "DATABASE_URL": roles.app_url,
        "SETTLE_MIGRATION_DATABASE_URL": roles.owner_url,
        # The sealer's checkpoints belong to this database, not the suite's.
        "SETTLE_AUDIT_CHECKPOINT_PATH": str(scratch / "audit-checkpoints.jsonl"),
        "SETTLE_VERIFY_AT_START": "true",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "SETTLE_LOG_FORMAT": "json",
        "SETTLE_WEBHOOK_ALLOW_PRIVATE": "true",
        # A retry after 1 s, so the test sees a refused attempt retried and delivered.
        "SETTLE_WEBHOOK_RETRY_SCHEDULE": "[0, 1, 1]",
        "SETTLE_WORKER_CONCURRENCY": "1",
        "SETTLE_WEBHOOK_CONCURRENCY": "4",
        "SETTLE_BEAT_SCHEDULE": str(scratch / "beat-schedule"),
        "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}",
        "SETTLE_FLOWER_ADDRESS": "127.0.0.1",
        "SETTLE_FLOWER_PORT": str(flower_port),
    }
    started: dict[str, Process] = {}
    try:
        for name in ("worker", "webhooks", "beat", "flower"):
            started[name] = Process(name, processes.serve_argv(name), env)
        started["worker"].wait_for_log("ready.")
        started["webhooks"].wait_for_log("ready.")
        base_flower = f"http://127.0.0.1:{flower_port}"
        _wait_for_flower(base_flower, started["flower"])
        with (
            running_gateway(env) as base_url,
            httpx.Client(base_url=base_url, timeout=30) as api,
        ):
            engine = make_engine(roles.app_url)
            try:
                yield Stack(api, base_flower, started, make_session_factory(engine))
            finally:
                engine.dispose()
    finally:
        for process in started.values():
            process.stop()
        delete_redis_keys(os.environ["REDIS_URL"], prefix)
        shutil.rmtree(scratch, ignore_errors=True)


def test_an_idle_stack_adds_few_tasks_to_flower_and_few_log_lines(stack):
    time.sleep(5)  # beat's start-up verify and first sweep, the workers' own start-up
    tasks_before, lines_before = len(stack.flower_tasks()), stack.log_lines()
    time.sleep(IDLE_SECONDS)
    tasks_after, lines_after = len(stack.flower_tasks()), stack.log_lines()
    gained, lines = tasks_after - tasks_before, lines_after - lines_before
    print(f"idle {IDLE_SECONDS} s: {gained} task(s) in Flower, {lines} log line(s)")
    assert gained < 20, f"{gained} tasks in {IDLE_SECONDS} s of idling"
    assert lines < 40, f"{lines} log lines in {IDLE_SECONDS} s of idling"


def _deliveries(sessions: sessionmaker[Session], endpoint_id: str) -> str:
    """The endpoint's deliveries and their attempts, for a failure message."""
    with sessions() as session:
        rows = session.execute(
            text(
                "SELECT d.id, d.status, d.attempts, d.next_attempt_at, d.last_status_code,"
                " d.last_error, now() AS now FROM webhook_deliveries d"
                " WHERE d.endpoint_id = :id ORDER BY d.created_at"
            ),
            {"id": endpoint_id},
        ).all()
    return "\n".join(str(tuple(row)) for row in rows)


def _scrape(api: httpx.Client) -> str:
    response = api.get("/metrics")
    assert response.status_code == 200
    return response.text


def _value(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert match, f"{sample} not on /metrics"
    return float(match.group(1))


def test_metrics_flower_and_logs_tell_what_happened(stack):
    api = stack.api
    operator = operator_headers(api, stack.sessions)
    alice = register_and_login(api)
    a, b = open_account(api, alice), open_account(api, register_and_login(api))
    request_id = f"obs-{secrets.token_hex(6)}"
    deposit = api.post(
        "/v1/deposits",
        json={"account_id": a["id"], "amount": 5_000, "currency": "USD"},
        headers={**operator, "Idempotency-Key": secrets.token_hex(8), "X-Request-ID": request_id},
    )
    assert deposit.status_code == 202, deposit.text
    assert wait_terminal(api, operator, deposit.json()["id"])["status"] == "succeeded"

    with running_receiver() as receiver:
        receiver.script = [503]  # the first attempt is refused, the retry delivered
        hook = api.post(
            "/v1/webhook-endpoints",
            headers=alice,
            json={"url": receiver.url, "events": ["transfer.succeeded", "transfer.failed"]},
        )
        assert hook.status_code == 201, hook.text
        sent = post_transfer(api, alice, a["id"], b["number"], 1_200).json()
        refused = post_transfer(api, alice, a["id"], b["number"], 999_999).json()
        assert wait_terminal(api, alice, sent["id"])["status"] == "succeeded"
        assert wait_terminal(api, alice, refused["id"])["failure_code"] == "insufficient_funds"
        try:
            receiver.wait_for(3, timeout=30)  # 503, then both delivered
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\n{_deliveries(stack.sessions, hook.json()['id'])}"
                f"\nwebhooks worker:\n{stack.workers['webhooks'].log()[-3000:]}"
            ) from exc
        post_deposit(api, operator, a["id"], 1)  # one more, so a backlog is measured live

    deadline = time.monotonic() + 30
    while True:
        text = _scrape(api)
        if (
            'settle_webhook_attempts_total{outcome="succeeded"}' in text
            and 'settle_webhook_attempts_total{outcome="retry"}' in text
            and "settle_ledger_verify_ok 1.0" in text
        ) or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    # Recorded by the transfer worker's and webhooks worker's processes, summed here.
    assert _value(text, 'settle_transfers_settled_total{kind="deposit"}') >= 1
    assert _value(text, 'settle_transfers_settled_total{kind="transfer"}') >= 1
    assert (
        _value(text, 'settle_transfers_failed_total{code="insufficient_funds",kind="transfer"}')
        == 1
    )
    assert _value(text, 'settle_webhook_attempts_total{outcome="retry"}') >= 1
    assert _value(text, 'settle_webhook_attempts_total{outcome="succeeded"}') >= 2
    assert _value(text, 'settle_transfer_latency_seconds_count{status="succeeded"}') >= 2
    assert _value(text, 'settle_transfer_latency_seconds_count{status="failed"}') == 1
    assert _value(text, "settle_webhook_latency_seconds_count") >= 2
    assert _value(text, "settle_drain_batch_size_count") >= 3
    # Read at scrape time from PostgreSQL and Redis.
    assert _value(text, "settle_transfers_pending") >= 0
    assert _value(text, "settle_transfers_oldest_pending_age_seconds") >= 0
    assert _value(text, 'settle_queue_depth{queue="transfers"}') >= 0
    assert _value(text, 'settle_queue_depth{queue="webhooks"}') >= 0
    # Beat verified the ledger as it started, not five minutes later.
    assert _value(text, "settle_ledger_verify_ok") == 1
    assert _value(text, "settle_ledger_verify_last_run_timestamp_seconds") > 0
    assert _value(text, 'settle_transfers_accepted_total{kind="transfer"}') >= 2

    tasks = stack.flower_tasks().values()
    drains = [t for t in tasks if t["name"] == "settle.drain_lane"]
    assert drains and all(re.fullmatch(r"lane \d+ of \d+ \(.+\)", t["args"]) for t in drains), [
        t["args"] for t in drains
    ]
    states = {t["state"] for t in tasks if t["name"] == "settle.deliver_webhooks"}
    assert "RETRY" in states and "SUCCESS" in states, states
    assert not [t for t in tasks if t["name"] == "settle.dispatch_due_webhooks"]

    # Every logging line is one JSON object; Celery's start-up banner is printed, not logged.
    worker_lines = [
        json.loads(line)
        for line in stack.workers["worker"].log().splitlines()
        if line.startswith("{")
    ]
    woken = [line for line in worker_lines if line.get("request_id") == request_id]
    assert woken, "no worker log line names the request that woke the lane"
    outcomes = {line["transfer_id"]: line for line in worker_lines if "transfer_id" in line}
    assert outcomes[sent["id"]]["status"] == "succeeded"
    assert outcomes[sent["id"]]["level"] == "INFO"
    assert outcomes[refused["id"]]["failure_code"] == "insufficient_funds"

    # `SETTLE_SCREENSHOTS=docs/images make test ...`: how the README's pictures are made.
    if os.environ.get("SETTLE_SCREENSHOTS") and shutil.which("chromium"):
        _screenshots(stack, Path(os.environ["SETTLE_SCREENSHOTS"]))


def _screenshots(stack: Stack, into: Path) -> None:
    """Flower's pages as an operator sees them after some traffic, by headless Chromium."""
    api = stack.api
    operator = operator_headers(api, stack.sessions)
    carol = register_and_login(api)
    c, d = open_account(api, carol), open_account(api, register_and_login(api))
    post_deposit(api, operator, c["id"], 10_000)
    with running_receiver() as receiver:
        receiver.script = [503]
        hook = api.post(
            "/v1/webhook-endpoints",
            headers=carol,
            json={"url": receiver.url, "events": ["transfer.succeeded", "transfer.failed"]},
        )
        assert hook.status_code == 201, hook.text
        for amount in (100, 250, 75, 20_000, 310, 42):
            post_transfer(api, carol, c["id"], d["number"], amount)
        receiver.wait_for(7, timeout=30)
        time.sleep(2)
    into.mkdir(parents=True, exist_ok=True)
    drain = next(
        task_id
        for task_id, task in reversed(list(stack.flower_tasks().items()))
        if task["name"] == "settle.drain_lane"
    )
    retried = next(
        task_id
        for task_id, task in stack.flower_tasks().items()
        if task["name"] == "settle.deliver_webhooks" and task["state"] == "RETRY"
    )
    host = stack.flower.removeprefix("http://")
    pages = {
        "flower-tasks.png": "/tasks",
        "flower-workers.png": "/workers",
        "flower-drain.png": f"/task/{drain}",
        "flower-webhook-retry.png": f"/task/{retried}",
    }
    for name, path in pages.items():
        subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--virtual-time-budget=5000",
                "--window-size=1500,900",
                f"--screenshot={into / name}",
                f"http://{FLOWER_USER}:{FLOWER_PASSWORD}@{host}{path}",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
