"""The audit trail is anchored outside the database: a keyed chain and signed checkpoints.

Finding 3 (issue 10). On main, someone with the table owner's rights deleted the
newest audit rows, rewound the chain head and recomputed the hashes, and `settle
verify` still said OK: the chain was plain SHA-256 and its only anchor, the head, was
in the same database. Here the same attacker (the owner, every user trigger disabled)
cannot recompute the hashes without SETTLE_AUDIT_KEY, and the checkpoint that
`settle verify` wrote outside the database shows the chain was cut.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from domain.audit_anchor import CheckpointFile
from domain.services.audit import GENESIS_HASH, event_hash
from settle.config import DEV_AUDIT_KEY
from tests.factories import (
    open_account,
    operator_headers,
    post_deposit,
    register_and_login,
    seal_all,
)

SETTLE = Path(sys.executable).parent / "settle"
EVENT_COLUMNS = (
    "id, xid, occurred_at, event_type, actor_id, subject_type, subject_id, request_id, data"
)


def _verify(checkpoints: Path):
    result = subprocess.run(
        [SETTLE, "verify", "--json"],
        env={**os.environ, "SETTLE_AUDIT_CHECKPOINT_PATH": str(checkpoints)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return result.returncode, json.loads(result.stdout)


@pytest.fixture
def checkpoints(tmp_path):
    return tmp_path / "checkpoints.jsonl"


@pytest.fixture
def chain(client, session_factory, drain_pending, checkpoints):
    """Activity, sealed, verified once (which writes a checkpoint at the chain's head)."""
    operator = operator_headers(client, session_factory)
    account = open_account(client, register_and_login(client))
    for amount in (100, 200, 300):
        post_deposit(client, operator, account["id"], amount)
    drain_pending()
    seal_all(session_factory)
    code, report = _verify(checkpoints)
    assert code == 0, report
    saved, problems = CheckpointFile(checkpoints).read()
    assert not problems
    with session_factory() as session:
        head = session.execute(text("SELECT last_seq, last_hash FROM audit_chain_head")).one()
    assert (saved[-1].chain_seq, saved[-1].hash) == tuple(head)
    return head


@contextmanager
def _put_back_afterwards(owner_session_factory):
    """Whatever the attacker changes in the audit tables is restored, so the rest of
    the run verifies."""
    with owner_session_factory() as session:
        seals = session.execute(text("SELECT * FROM audit_seals")).all()
        events = session.execute(text(f"SELECT {EVENT_COLUMNS} FROM audit_events")).all()
        head = session.execute(text("SELECT last_seq, last_hash FROM audit_chain_head")).one()
    try:
        yield
    finally:
        with owner_session_factory() as session, session.begin():
            _guards(session, "DISABLE")
            session.execute(text("DELETE FROM audit_seals"))
            session.execute(text("DELETE FROM audit_events"))
            for event in events:
                session.execute(
                    text(
                        f"INSERT INTO audit_events ({EVENT_COLUMNS}) OVERRIDING SYSTEM VALUE"
                        " VALUES (:id, CAST(:xid AS xid8), :occurred_at, :event_type,"
                        " :actor_id, :subject_type, :subject_id, :request_id,"
                        " CAST(:data AS jsonb))"
                    ),
                    dict(event._mapping, xid=str(event.xid), data=json.dumps(event.data)),
                )
            for seal in seals:
                session.execute(
                    text(
                        "INSERT INTO audit_seals (audit_id, chain_seq, prev_hash, hash, key_id)"
                        " VALUES (:audit_id, :chain_seq, :prev_hash, :hash, :key_id)"
                    ),
                    dict(seal._mapping),
                )
            session.execute(
                text("UPDATE audit_chain_head SET last_seq = :s, last_hash = :h"),
                {"s": head.last_seq, "h": head.last_hash},
            )
            _guards(session, "ENABLE")


def _guards(session, action):
    """The owner switching every user trigger of the audit tables off (or on again)."""
    for table in ("audit_seals", "audit_events"):
        session.execute(text(f"ALTER TABLE {table} {action} TRIGGER USER"))


def _cut_newest(session, count):
    """Delete the newest `count` sealed rows and rewind the head to what is left."""
    newest = session.execute(
        text("SELECT audit_id FROM audit_seals ORDER BY chain_seq DESC LIMIT :n"), {"n": count}
    ).scalars()
    ids = list(newest)
    session.execute(text("DELETE FROM audit_seals WHERE audit_id = ANY(:ids)"), {"ids": ids})
    session.execute(text("DELETE FROM audit_events WHERE id = ANY(:ids)"), {"ids": ids})
    seq, digest = session.execute(
        text("SELECT chain_seq, hash FROM audit_seals ORDER BY chain_seq DESC LIMIT 1")
    ).one()
    session.execute(
        text("UPDATE audit_chain_head SET last_seq = :s, last_hash = :h"), {"s": seq, "h": digest}
    )
    return seq


def _reseal_from(session, first_seq, key):
    """Recompute every seal from `first_seq` on, with `key`, as the sealer would."""
    rows = session.execute(
        text(
            "SELECT a.id, a.occurred_at, a.event_type, a.actor_id, a.subject_type,"
            " a.subject_id, a.request_id, a.data, s.chain_seq, s.prev_hash"
            " FROM audit_seals s JOIN audit_events a ON a.id = s.audit_id"
            " WHERE s.chain_seq >= :f ORDER BY s.chain_seq"
        ),
        {"f": first_seq},
    ).all()
    prev = rows[0].prev_hash if rows else GENESIS_HASH
    session.execute(text("DELETE FROM audit_seals WHERE chain_seq >= :f"), {"f": first_seq})
    for row in rows:
        digest = event_hash(row, chain_seq=row.chain_seq, prev_hash=prev, key=key)
        session.execute(
            text(
                "INSERT INTO audit_seals (audit_id, chain_seq, prev_hash, hash, key_id)"
                " VALUES (:i, :s, :p, :h, 'default')"
            ),
            {"i": row.id, "s": row.chain_seq, "p": prev, "h": digest},
        )
        prev = digest
    session.execute(
        text("UPDATE audit_chain_head SET last_seq = :s, last_hash = :h"),
        {"s": rows[-1].chain_seq, "h": prev},
    )


def test_cutting_the_newest_rows_and_rewriting_the_chain_as_owner_fails_verify(
    chain, owner_session_factory, checkpoints
):
    last_seq, _ = chain
    with (
        _put_back_afterwards(owner_session_factory),
        owner_session_factory() as session,
    ):
        with session.begin():
            _guards(session, "DISABLE")
            kept = _cut_newest(session, 2)
            # Hide an older event too, and recompute every hash after it without the key
            # (the best the attacker can do: the public development key).
            victim = kept - 3
            session.execute(
                text(
                    "UPDATE audit_events SET data = data || '{\"amount\": 1}'"
                    " WHERE id = (SELECT audit_id FROM audit_seals WHERE chain_seq = :s)"
                ),
                {"s": victim},
            )
            _reseal_from(session, victim, DEV_AUDIT_KEY.encode())
            _guards(session, "ENABLE")
        code, report = _verify(checkpoints)
        assert _verify(checkpoints)[0] == 1  # a failing verify writes no checkpoint
    assert code == 1
    [broken] = report["problems"]["audit_chain"]
    assert broken == {
        "chain_seq": victim,
        "error": "hash does not match contents under the audit key",
    }
    [cut] = report["problems"]["audit_checkpoints"]
    assert cut["checkpoint"] == last_seq
    assert cut["error"].startswith(f"chain ends at seq {kept} but the checkpoint of")
    assert "chain cut" in cut["error"]


def test_a_clean_cut_of_the_newest_rows_is_caught_by_the_checkpoint_alone(
    chain, owner_session_factory, checkpoints
):
    """Every remaining link is genuine: only the checkpoint can tell rows are missing."""
    with (
        _put_back_afterwards(owner_session_factory),
        owner_session_factory() as session,
    ):
        with session.begin():
            _guards(session, "DISABLE")
            kept = _cut_newest(session, 1)
            _guards(session, "ENABLE")
        code, report = _verify(checkpoints)
    assert code == 1
    assert "audit_chain" not in report["problems"]
    [cut] = report["problems"]["audit_checkpoints"]
    assert cut["error"].startswith(f"chain ends at seq {kept} but the checkpoint")


def test_a_forged_or_garbled_checkpoint_is_reported(chain, checkpoints):
    with checkpoints.open("a") as f:
        f.write('{"chain_seq": 1, "hash": "00", "at": "x", "key_id": "default", "mac": "00"}\n')
        f.write("not json\n")
    code, report = _verify(checkpoints)
    assert code == 1
    errors = [p["error"] for p in report["problems"]["audit_checkpoints"]]
    assert errors == [
        "not a checkpoint",
        "checkpoint signature does not verify under the audit key",
    ]
