"""`settle verify`: passes on a healthy ledger, names what is wrong on a tampered one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import psutil
from sqlalchemy import text

from tests.factories import (
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
    seal_all,
)

SETTLE = Path(sys.executable).parent / "settle"


def _verify(*args):
    return subprocess.run(
        [SETTLE, "verify", *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _activity(client, session_factory, drain_pending):
    operator = operator_headers(client, session_factory)
    alice, bob = register_and_login(client), register_and_login(client)
    a, b = open_account(client, alice), open_account(client, bob)
    post_deposit(client, operator, a["id"], 5_000)
    drain_pending()
    post_transfer(client, alice, a["id"], b["number"], 1_200)
    post_transfer(client, alice, a["id"], b["number"], 9_999)  # fails
    drain_pending()
    return a


@contextmanager
def _triggers_disabled(session_factory, table, trigger):
    """Simulates an attacker with the owner's rights who bypasses the database's own guards.

    `session_factory` must be the owner's: the app role may not disable triggers.
    """
    with session_factory() as session, session.begin():
        session.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}"))
    try:
        yield
    finally:
        with session_factory() as session, session.begin():
            session.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}"))


def test_verify_passes_on_a_healthy_ledger_and_records_for_metrics(
    client, session_factory, drain_pending
):
    _activity(client, session_factory, drain_pending)
    result = _verify("--record")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ledger OK" in result.stdout
    metrics = client.get("/metrics").text
    assert "settle_ledger_verify_ok 1.0" in metrics
    assert "settle_ledger_verify_problems 0.0" in metrics


def test_verify_detects_a_balance_edited_behind_the_ledgers_back(
    client, session_factory, owner_session_factory, drain_pending
):
    account = _activity(client, session_factory, drain_pending)
    edit = "UPDATE accounts SET balance = balance + :d WHERE id = :a"
    owner = owner_session_factory
    with _triggers_disabled(owner, "accounts", "accounts_balance_matches_ledger"):
        with owner() as session, session.begin():
            session.execute(text(edit), {"d": 1, "a": account["id"]})
        try:
            result = _verify("--json")
            assert result.returncode == 1
            report = json.loads(result.stdout)
            assert [p["account"] for p in report["problems"]["balance_matches_entries"]] == [
                account["number"]
            ]
        finally:
            with owner() as session, session.begin():
                session.execute(text(edit), {"d": -1, "a": account["id"]})
    assert _verify().returncode == 0


def test_verify_names_the_first_broken_audit_row(
    client, session_factory, owner_session_factory, drain_pending
):
    _activity(client, session_factory, drain_pending)
    seal_all(session_factory)
    with session_factory() as session:
        seq, original = session.execute(
            text(
                "SELECT s.chain_seq, a.data FROM audit_seals s JOIN audit_events a"
                " ON a.id = s.audit_id ORDER BY s.chain_seq LIMIT 1 OFFSET 2"
            )
        ).one()
    change = (
        "UPDATE audit_events SET data = CAST(:d AS jsonb)"
        " WHERE id = (SELECT audit_id FROM audit_seals WHERE chain_seq = :s)"
    )
    owner = owner_session_factory
    with _triggers_disabled(owner, "audit_events", "audit_events_append_only"):
        with owner() as session, session.begin():
            session.execute(text(change), {"d": json.dumps({**original, "amount": 1}), "s": seq})
        try:
            result = _verify("--json")
            assert result.returncode == 1
            [problem] = json.loads(result.stdout)["problems"]["audit_chain"]
            assert problem["chain_seq"] == seq
        finally:
            with owner() as session, session.begin():
                session.execute(text(change), {"d": json.dumps(original), "s": seq})
    assert _verify().returncode == 0


def test_the_beat_task_verifies_in_a_process_of_its_own_and_records_the_result(
    client, session_factory, owner_session_factory, drain_pending, caplog
):
    """The soak found the pool child that ran this task 15 % larger after each run (the
    ledger's peak stayed resident): it now runs `settle verify --record` as a child."""
    from domain.repositories import verification as verification_repo
    from workers import tasks

    account = _activity(client, session_factory, drain_pending)
    seal_all(session_factory)
    children_before = set(psutil.Process().children())
    assert tasks.verify_ledger() is True
    assert set(psutil.Process().children()) == children_before  # it ran, and it ended
    assert "settle_ledger_verify_ok 1.0" in client.get("/metrics").text

    edit = "UPDATE accounts SET balance = balance + :d WHERE id = :a"
    owner = owner_session_factory
    with _triggers_disabled(owner, "accounts", "accounts_balance_matches_ledger"):
        with owner() as session, session.begin():
            session.execute(text(edit), {"d": 1, "a": account["id"]})
        try:
            assert tasks.verify_ledger() is False
            assert "ledger verification did not pass" in caplog.text
            with session_factory() as session:
                latest = verification_repo.latest(session)
            assert latest is not None and not latest.ok and latest.problems >= 1
        finally:
            with owner() as session, session.begin():
                session.execute(text(edit), {"d": -1, "a": account["id"]})
