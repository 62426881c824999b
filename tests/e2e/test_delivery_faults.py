"""Broker faults at the edges: a message delivered twice at once, and Redis down at accept time."""

from __future__ import annotations

import time
import uuid

import pytest
from celery import Celery
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from domain.models import LedgerEntry, Transfer
from settle.broker import DRAIN_LANE_TASK, TRANSFERS_QUEUE, celery_config
from tests.e2e.outage import assert_the_sweeper_delivers, deposit_during_outage
from tests.factories import (
    lane_of,
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
)
from tests.processes import purge_queue, queue_depth, running_worker, settings_env

pytestmark = pytest.mark.e2e


def test_same_message_delivered_twice_concurrently_has_one_effect(isolated, session_factory):
    from gateway.app import create_app
    from workers.tasks import drain

    with TestClient(create_app(isolated)) as client:
        operator = operator_headers(client, session_factory)
        alice, bob = register_and_login(client), register_and_login(client)
        a, b = open_account(client, alice), open_account(client, bob)
        deposit = post_deposit(client, operator, a["id"], 20_000)
        drain(lane_of(uuid.UUID(deposit["source_account_id"])))  # fund it; not the drain under test
        ids = [
            post_transfer(client, alice, a["id"], b["number"], 100).json()["id"] for _ in range(250)
        ]  # 200 fit, 50 must fail
    purge_queue(isolated)

    publisher = Celery("duplicate-publisher")
    publisher.conf.update(celery_config(isolated))
    task_id = str(uuid.uuid4())
    for _ in range(2):  # byte-for-byte the same message, twice
        publisher.send_task(
            DRAIN_LANE_TASK,
            args=[lane_of(uuid.UUID(a["id"])), isolated.lanes],
            task_id=task_id,
            queue=TRANSFERS_QUEUE,
        )
    publisher.close()
    assert queue_depth(isolated) == 2

    env = settings_env(isolated, SETTLE_DRAIN_BATCH_SIZE="10")
    with running_worker(env, concurrency=1) as first, running_worker(env, concurrency=1) as second:
        deadline = time.monotonic() + 60
        while True:
            with session_factory() as session:
                pending = session.scalar(
                    select(func.count())
                    .select_from(Transfer)
                    .where(Transfer.id.in_(ids), Transfer.status == "pending")
                )
            if not pending:
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        received = sum(
            log.count(f"Task {DRAIN_LANE_TASK}[{task_id}] received")
            for log in (first.log(), second.log())
        )
    assert received == 2, "both copies were delivered"
    with session_factory() as session:
        statuses = [session.get(Transfer, uuid.UUID(i)).status for i in ids]
        entries = session.scalar(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.transfer_id.in_([uuid.UUID(i) for i in ids]))
        )
    assert statuses == ["succeeded"] * 200 + ["failed"] * 50
    assert entries == 400


def test_redis_down_at_accept_time_still_answers_202_and_the_sweeper_delivers(
    isolated, session_factory
):
    dead_redis = isolated.model_copy(update={"redis_url": "unix:///nonexistent/redis.sock"})
    accepted = deposit_during_outage(dead_redis, session_factory)
    if isolated.uses_rabbitmq:  # Redis is only the rate-limit and marker store
        expected = {"database": "ok", "broker": "ok", "redis": "unavailable"}
    else:
        expected = {"database": "ok", "broker": "unavailable"}
    assert accepted.ready_checks == expected
    assert_the_sweeper_delivers(isolated, accepted)
