"""The audit chain is sealed after commit, in commit order, and tampering shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from domain.services import audit
from domain.uow import unit_of_work
from tests.factories import open_account, operator_headers, post_deposit, register_and_login

SETTLE = Path(sys.executable).parent / "settle"


def _verify_json():
    result = subprocess.run(
        [SETTLE, "verify", "--json"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return result.returncode, json.loads(result.stdout)


def _seal_all(session_factory, timeout=30.0):
    """Seal until nothing is left unsealed. Rows become sealable once every older
    writing transaction in the PostgreSQL cluster has ended, so on a busy shared
    server this can take a moment."""
    deadline = time.monotonic() + timeout
    while True:
        with unit_of_work(session_factory) as uow:
            audit.seal(uow.session)
            left = uow.session.scalar(text("SELECT count(*) FROM audit_events WHERE hash IS NULL"))
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.1)


def _activity(client, session_factory, drain_pending):
    operator = operator_headers(client, session_factory)
    account = open_account(client, register_and_login(client))
    for amount in (100, 200, 300):
        post_deposit(client, operator, account["id"], amount)
    drain_pending()
    _seal_all(session_factory)


def test_rows_are_sealed_in_commit_order_with_a_gapless_chain(
    client, session_factory, drain_pending
):
    _activity(client, session_factory, drain_pending)
    with session_factory() as session:
        rows = session.execute(
            text("SELECT chain_seq, xid::text::bigint, id FROM audit_events ORDER BY chain_seq")
        ).all()
        unsealed = session.scalar(text("SELECT count(*) FROM audit_events WHERE hash IS NULL"))
    sealed = [r for r in rows if r[0] is not None]
    assert [r[0] for r in sealed] == list(range(1, len(sealed) + 1))
    assert [(r[1], r[2]) for r in sealed] == sorted((r[1], r[2]) for r in sealed)
    assert unsealed == 0


def test_content_of_audit_rows_cannot_change_and_seals_cannot_be_redone(
    client, session_factory, drain_pending
):
    _activity(client, session_factory, drain_pending)
    attempts = [
        "UPDATE audit_events SET data = '{}' WHERE chain_seq = 1",
        "UPDATE audit_events SET hash = repeat('0', 64) WHERE chain_seq = 1",
        "DELETE FROM audit_events WHERE chain_seq = 1",
    ]
    for statement in attempts:
        with (
            session_factory() as session,
            session.begin(),
            pytest.raises(DBAPIError, match="append-only"),
        ):
            session.execute(text(statement))


def test_a_sealed_row_removed_from_the_middle_is_named_by_verify(
    client, session_factory, drain_pending
):
    _activity(client, session_factory, drain_pending)
    columns = (
        "id, xid, chain_seq, occurred_at, event_type, actor_id, subject_type, subject_id,"
        " request_id, data, prev_hash, hash"
    )
    with session_factory() as session, session.begin():
        middle = session.scalar(text("SELECT max(chain_seq) / 2 FROM audit_events"))
        row = session.execute(
            text(f"SELECT {columns} FROM audit_events WHERE chain_seq = :s"), {"s": middle}
        ).one()
        session.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_delete"))
        session.execute(text("DELETE FROM audit_events WHERE chain_seq = :s"), {"s": middle})
        session.execute(text("ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_delete"))
    try:
        code, report = _verify_json()
        assert code == 1
        [problem] = report["problems"]["audit_chain"]
        assert problem["chain_seq"] == middle + 1
        assert problem["error"] == f"expected seq {middle}"
    finally:  # put the row back exactly as it was, so the chain verifies again
        values = dict(row._mapping, data=json.dumps(row.data), xid=str(row.xid))
        with session_factory() as session, session.begin():
            session.execute(
                text(
                    f"INSERT INTO audit_events ({columns}) OVERRIDING SYSTEM VALUE VALUES"
                    " (:id, CAST(:xid AS xid8), :chain_seq, :occurred_at, :event_type,"
                    " :actor_id, :subject_type, :subject_id, :request_id, CAST(:data AS jsonb),"
                    " :prev_hash, :hash)"
                ),
                values,
            )
    assert _verify_json()[0] == 0


def test_an_unsealed_row_left_behind_is_reported(session_factory):
    with session_factory() as session, session.begin():
        session.execute(
            text(
                "INSERT INTO audit_events (occurred_at, event_type, data)"
                " VALUES (now() - interval '1 hour', 'test.stale', '{}')"
            )
        )
    try:
        code, report = _verify_json()
        assert code == 1
        problems = report["problems"]["audit_chain"]
        assert any(p["error"].startswith("left unsealed") for p in problems)
    finally:
        _seal_all(session_factory)
    assert _verify_json()[0] == 0
