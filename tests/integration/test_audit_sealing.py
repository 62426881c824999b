"""The audit chain is sealed after commit, in commit order, and tampering shows.

Seals live in `audit_seals` (INSERT-only); the app role can neither change nor remove
an audit row or a seal, and the table owner is stopped by triggers until it switches
them off (which verify then catches: see also test_audit_anchor.py).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.factories import (
    open_account,
    operator_headers,
    post_deposit,
    register_and_login,
    seal_all,
)

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


def _activity(client, session_factory, drain_pending):
    operator = operator_headers(client, session_factory)
    account = open_account(client, register_and_login(client))
    for amount in (100, 200, 300):
        post_deposit(client, operator, account["id"], amount)
    drain_pending()
    seal_all(session_factory)


SEALED = (
    "SELECT s.chain_seq, a.xid::text::bigint, a.id FROM audit_events a"
    " LEFT JOIN audit_seals s ON s.audit_id = a.id"
)


def test_rows_are_sealed_in_commit_order_with_a_gapless_chain(
    client, session_factory, drain_pending
):
    _activity(client, session_factory, drain_pending)
    with session_factory() as session:
        rows = session.execute(text(SEALED + " ORDER BY s.chain_seq")).all()
    sealed = [r for r in rows if r[0] is not None]
    unsealed = len(rows) - len(sealed)
    assert [r[0] for r in sealed] == list(range(1, len(sealed) + 1))
    assert [(r[1], r[2]) for r in sealed] == sorted((r[1], r[2]) for r in sealed)
    assert unsealed == 0, rows


def test_the_admin_trail_shows_each_rows_seal_and_null_while_unsealed(
    client, session_factory, drain_pending
):
    _activity(client, session_factory, drain_pending)
    operator = operator_headers(client, session_factory)
    with session_factory() as session:
        seals = {
            r.audit_id: (r.chain_seq, r.prev_hash, r.hash)
            for r in session.execute(text("SELECT * FROM audit_seals"))
        }
    page = client.get("/v1/admin/audit-events", params={"limit": 200}, headers=operator).json()
    shown = {e["id"]: (e["chain_seq"], e["prev_hash"], e["hash"]) for e in page["data"]}
    sealed = {i: v for i, v in shown.items() if i in seals}
    assert sealed and all(seals[i] == v for i, v in sealed.items())
    # The operator's own login, after the seal: not sealed yet, so its chain fields are null.
    assert all(v == (None, None, None) for i, v in shown.items() if i not in seals)


FIRST = "(SELECT audit_id FROM audit_seals WHERE chain_seq = 1)"
CHANGES = [
    f"UPDATE audit_events SET data = '{{}}' WHERE id = {FIRST}",
    "UPDATE audit_seals SET hash = repeat('0', 64) WHERE chain_seq = 1",
    "UPDATE audit_seals SET chain_seq = chain_seq + 1000000 WHERE chain_seq = 1",
    "DELETE FROM audit_seals WHERE chain_seq = 1",
    f"DELETE FROM audit_events WHERE id = {FIRST}",
    "TRUNCATE audit_seals CASCADE",
    "TRUNCATE audit_events CASCADE",
]


@pytest.mark.parametrize("statement", CHANGES)
def test_audit_rows_and_seals_cannot_change(
    client, session_factory, owner_session_factory, drain_pending, statement
):
    """Finding 3 (issue 10): the app role is not even granted UPDATE, DELETE or TRUNCATE
    on audit rows and seals (on main it could UPDATE audit_events to seal them); the
    owner is refused by the append-only triggers."""
    _activity(client, session_factory, drain_pending)
    for factory, refusal in (
        (session_factory, "permission denied"),
        (owner_session_factory, "append-only"),
    ):
        with factory() as session, session.begin(), pytest.raises(DBAPIError, match=refusal):
            session.execute(text(statement))


def test_a_sealed_row_removed_from_the_middle_is_named_by_verify(
    client, session_factory, owner_session_factory, drain_pending
):
    _activity(client, session_factory, drain_pending)
    event_columns = (
        "id, xid, occurred_at, event_type, actor_id, subject_type, subject_id, request_id, data"
    )
    with owner_session_factory() as session, session.begin():
        middle = session.scalar(text("SELECT max(chain_seq) / 2 FROM audit_seals"))
        seal = session.execute(
            text("SELECT * FROM audit_seals WHERE chain_seq = :s"), {"s": middle}
        ).one()
        row = session.execute(
            text(f"SELECT {event_columns} FROM audit_events WHERE id = :i"), {"i": seal.audit_id}
        ).one()
        session.execute(text("ALTER TABLE audit_seals DISABLE TRIGGER USER"))
        session.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        session.execute(text("DELETE FROM audit_seals WHERE chain_seq = :s"), {"s": middle})
        session.execute(text("DELETE FROM audit_events WHERE id = :i"), {"i": seal.audit_id})
        session.execute(text("ALTER TABLE audit_seals ENABLE TRIGGER USER"))
        session.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))
    try:
        code, report = _verify_json()
        assert code == 1
        [problem] = report["problems"]["audit_chain"]
        assert problem["chain_seq"] == middle + 1
        assert problem["error"] == f"expected seq {middle}"
    finally:  # put the row back exactly as it was, so the chain verifies again
        values = dict(row._mapping, data=json.dumps(row.data), xid=str(row.xid))
        with owner_session_factory() as session, session.begin():
            session.execute(
                text(
                    f"INSERT INTO audit_events ({event_columns}) OVERRIDING SYSTEM VALUE VALUES"
                    " (:id, CAST(:xid AS xid8), :occurred_at, :event_type, :actor_id,"
                    " :subject_type, :subject_id, :request_id, CAST(:data AS jsonb))"
                ),
                values,
            )
            session.execute(
                text(
                    "INSERT INTO audit_seals (audit_id, chain_seq, prev_hash, hash, key_id)"
                    " VALUES (:audit_id, :chain_seq, :prev_hash, :hash, :key_id)"
                ),
                dict(seal._mapping),
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
        seal_all(session_factory)
    assert _verify_json()[0] == 0


def _unsealed(session_factory, ids: list[int]) -> list[int]:
    with session_factory() as session:
        sealed = set(
            session.execute(
                text("SELECT audit_id FROM audit_seals WHERE audit_id = ANY(:ids)"), {"ids": ids}
            ).scalars()
        )
    return [i for i in ids if i not in sealed]


def _new_audit_rows(session_factory, count: int) -> list[int]:
    from domain.services import audit
    from domain.uow import unit_of_work

    with unit_of_work(session_factory) as uow:
        audit.append(
            uow.session,
            [audit.AuditRecord(event_type="test.sealer", data={"n": n}) for n in range(count)],
        )
        uow.session.flush()
        return list(
            uow.session.execute(
                text(
                    "SELECT id FROM audit_events WHERE event_type = 'test.sealer'"
                    " ORDER BY id DESC LIMIT :n"
                ),
                {"n": count},
            ).scalars()
        )


def _wait_sealed(session_factory, ids: list[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _unsealed(session_factory, ids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_the_sealer_thread_seals_what_commits_while_it_runs(session_factory, settings):
    """Beat's sealer (workers/audit_sealer.py), not the drains, seals the chain now."""
    from domain.uow import unit_of_work
    from workers.audit_sealer import AuditSealer

    sealer = AuditSealer(
        units=lambda: unit_of_work(session_factory),
        keys=settings.audit_keyring,
        every_seconds=0.05,
    )
    sealer.start()
    try:
        ids = _new_audit_rows(session_factory, 3)
        assert _wait_sealed(session_factory, ids) == []
        more = _new_audit_rows(session_factory, 2)
        assert _wait_sealed(session_factory, more) == []
    finally:
        sealer.stop()
    assert sealer.sealed >= 5


def test_the_sealer_thread_goes_on_after_a_failed_round(session_factory, settings, caplog):
    from domain.uow import unit_of_work
    from workers.audit_sealer import AuditSealer

    rounds = []

    def units():
        rounds.append(1)
        if len(rounds) == 1:
            raise ConnectionError("PostgreSQL is restarting")
        return unit_of_work(session_factory)

    ids = _new_audit_rows(session_factory, 2)
    sealer = AuditSealer(
        units=units, keys=settings.audit_keyring, every_seconds=0.05, retry_after_seconds=0.1
    )
    with caplog.at_level(logging.ERROR, logger="settle.audit"):
        sealer.start()
        try:
            assert _wait_sealed(session_factory, ids) == []
        finally:
            sealer.stop()
    assert len(rounds) >= 2
    assert "sealing the audit chain failed" in caplog.text
