"""Atomic batches stay all-or-nothing while worker processes are SIGKILLed mid-drain."""

from __future__ import annotations

import signal
import time
import uuid

import psutil
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from domain.models import Account, LedgerEntry, Transfer
from tests.factories import idem, open_account, operator_headers, post_deposit, register_and_login
from tests.processes import running_worker, settings_env

pytestmark = pytest.mark.e2e

BATCHES = 30
ITEMS = 20


def test_atomic_batches_survive_sigkilled_workers(isolated, session_factory):
    from gateway.app import create_app

    env = settings_env(isolated, SETTLE_DRAIN_BATCH_SIZE="25")
    with TestClient(create_app(isolated)) as client:
        operator = operator_headers(client, session_factory)
        owner = register_and_login(client)
        sources = [open_account(client, owner) for _ in range(3)]
        sinks = [open_account(client, register_and_login(client)) for _ in range(3)]
        deposits = [
            uuid.UUID(post_deposit(client, operator, source["id"], 1_000_000)["id"])
            for source in sources
        ]
        # Applied before any batch is submitted: a deposit is drained in the settlement
        # account's lane, and nothing orders it before the batches that spend it (a
        # batch applied first would fail, rightly, with insufficient_funds).
        with running_worker(env, concurrency=1):
            _wait_applied(session_factory, deposits)
        batch_ids, doomed = [], set()
        for b in range(BATCHES):
            items = [
                {
                    "source_account_id": sources[(b + i) % 3]["id"],
                    "destination_account_number": sinks[i % 3]["number"],
                    "amount": 10 + i,
                    "currency": "USD",
                }
                for i in range(ITEMS)
            ]
            if b % 3 == 0:  # one item too large: the whole batch must fail
                items[ITEMS // 2]["amount"] = 99_000_000
                doomed.add(b)
            response = client.post(
                "/v1/transfer-batches",
                json={"atomic": True, "transfers": items},
                headers={**owner, **idem()},
            )
            assert response.status_code == 202, response.text
            batch_ids.append(response.json()["id"])

    kills = 0
    deadline = time.monotonic() + 90
    while _pending(session_factory, batch_ids) and time.monotonic() < deadline:
        with running_worker(env, concurrency=2, beat=True) as worker:
            time.sleep(0.3 + 0.2 * kills)
            children = psutil.Process(worker.popen.pid).children(recursive=True)
            if children and kills < 3:
                children[0].send_signal(signal.SIGKILL)
                kills += 1
                time.sleep(1.0)
                continue
            # Enough killing: the last worker gets to finish (restarting it every second
            # would measure start-up time, which on a busy machine is most of a second).
            while _pending(session_factory, batch_ids) and time.monotonic() < deadline:
                time.sleep(0.5)
    assert not _pending(session_factory, batch_ids), "batches still pending"
    assert kills >= 1

    with session_factory() as session:
        for b, batch_id in enumerate(batch_ids):
            rows = session.scalars(
                select(Transfer).where(Transfer.batch_id == uuid.UUID(batch_id))
            ).all()
            statuses = {t.status for t in rows}
            codes = {t.failure_code for t in rows}
            assert statuses == ({"failed"} if b in doomed else {"succeeded"}), (b, statuses, codes)
            entries = session.scalar(
                select(func.count())
                .select_from(LedgerEntry)
                .where(LedgerEntry.transfer_id.in_([t.id for t in rows]))
            )
            assert entries == (0 if b in doomed else 2 * ITEMS)
        ids = [uuid.UUID(a["id"]) for a in sources + sinks]
        total = session.scalar(select(func.sum(Account.balance)).where(Account.id.in_(ids)))
        assert total == 3 * 1_000_000


def _pending(session_factory, batch_ids):
    with session_factory() as session:
        return session.scalar(
            select(func.count())
            .select_from(Transfer)
            .where(
                Transfer.batch_id.in_([uuid.UUID(b) for b in batch_ids]),
                Transfer.status == "pending",
            )
        )


def _wait_applied(session_factory, ids, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        with session_factory() as session:
            statuses = set(session.scalars(select(Transfer.status).where(Transfer.id.in_(ids))))
        if statuses == {"succeeded"}:
            return
        assert time.monotonic() < deadline, f"deposits not applied: {statuses}"
        time.sleep(0.1)
