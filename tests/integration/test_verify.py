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
    idem,
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


def _entries_of(session_factory, account_id):
    with session_factory() as session:
        return session.execute(
            text(
                "SELECT id, sequence, amount, balance_before, balance_after, transfer_id::text"
                " FROM ledger_entries WHERE account_id = :a ORDER BY sequence"
            ),
            {"a": account_id},
        ).all()


@contextmanager
def _entry_changed(owner_session_factory, entry_id, **changes):
    """The owner, append-only trigger off, rewrites one ledger entry (and puts it back)."""
    columns = ", ".join(f"{name} = {name} + :{name}" for name in changes)
    undo = {name: -delta for name, delta in changes.items()}
    edit = f"UPDATE ledger_entries SET {columns} WHERE id = :id"
    owner = owner_session_factory
    with _triggers_disabled(owner, "ledger_entries", "ledger_entries_append_only"):
        with owner() as session, session.begin():
            session.execute(text(edit), {**changes, "id": entry_id})
        try:
            yield
        finally:
            with owner() as session, session.begin():
                session.execute(text(edit), {**undo, "id": entry_id})


def test_verify_names_a_broken_balance_chain_by_entry_id_and_account_number(
    client, session_factory, owner_session_factory, drain_pending
):
    account = _activity(client, session_factory, drain_pending)
    deposit, payment = _entries_of(session_factory, account["id"])
    # The payment no longer starts where the deposit left the balance (arithmetic kept).
    with _entry_changed(owner_session_factory, payment.id, balance_before=1, balance_after=1):
        result = _verify("--json")
        text_result = _verify()
    assert result.returncode == 1
    [broken] = json.loads(result.stdout)["problems"]["balances_continue"]
    assert broken == {
        "entry": payment.id,
        "account": account["number"],
        "sequence": 2,
        "balance_before": deposit.balance_after + 1,
        "previous_after": deposit.balance_after,
    }
    assert text_result.returncode == 1
    assert f"first bad row: entry {payment.id} of account {account['number']}" in (
        text_result.stdout
    )
    assert _verify().returncode == 0


def test_verify_names_an_entry_whose_amount_was_changed(
    client, session_factory, owner_session_factory, drain_pending
):
    account = _activity(client, session_factory, drain_pending)
    _, payment = _entries_of(session_factory, account["id"])
    with _entry_changed(owner_session_factory, payment.id, amount=-1, balance_after=-1):
        result = _verify("--json")
    assert result.returncode == 1
    problems = json.loads(result.stdout)["problems"]
    [wrong_leg] = problems["entries_match_their_transfer"]
    assert (wrong_leg["entry"], wrong_leg["account"]) == (payment.id, account["number"])
    assert wrong_leg["transfer"] == payment.transfer_id
    [unbalanced] = problems["transfers_balanced"]
    assert unbalanced["transfer"] == payment.transfer_id
    assert unbalanced["total"] == -1
    assert payment.id in unbalanced["entries"]
    assert account["number"] in unbalanced["accounts"]
    [balance] = problems["balance_matches_entries"]
    assert balance["account"] == account["number"]
    assert balance["entry"] == payment.id  # the account's last entry
    assert balance["ledger"] == balance["balance"] - 1
    # The next entry of the account (none here) would be the one to break continuity.
    assert "balances_continue" not in problems
    assert _verify().returncode == 0


def test_verify_names_a_batch_whose_finished_count_is_wrong(
    client, session_factory, owner_session_factory, drain_pending
):
    operator = operator_headers(client, session_factory)
    owner = register_and_login(client)
    source, sink = open_account(client, owner), open_account(client, owner)
    post_deposit(client, operator, source["id"], 1_000)
    item = {
        "source_account_id": source["id"],
        "destination_account_number": sink["number"],
        "amount": 10,
        "currency": "USD",
    }
    batch = client.post(
        "/v1/transfer-batches", json={"transfers": [item, item]}, headers={**owner, **idem()}
    ).json()
    drain_pending()
    assert _verify().returncode == 0
    edit = "UPDATE transfer_batches SET finished_items = :n, completed_at = {at} WHERE id = :id"
    with _triggers_disabled(owner_session_factory, "transfer_batches", "transfer_batches_guard"):
        with owner_session_factory() as session, session.begin():
            session.execute(text(edit.format(at="NULL")), {"n": 1, "id": batch["id"]})
        try:
            result = _verify("--json")
        finally:
            with owner_session_factory() as session, session.begin():
                session.execute(text(edit.format(at="now()")), {"n": 2, "id": batch["id"]})
    assert result.returncode == 1
    [problem] = json.loads(result.stdout)["problems"]["batches_count_their_finished_transfers"]
    assert problem["batch"] == batch["id"]
    assert (problem["finished_items"], problem["finished"], problem["transfers"]) == (1, 2, 2)
    assert _verify().returncode == 0


def test_verify_names_the_entry_after_a_gap_in_the_sequence(
    client, session_factory, owner_session_factory, drain_pending
):
    account = _activity(client, session_factory, drain_pending)
    _, payment = _entries_of(session_factory, account["id"])
    with _entry_changed(owner_session_factory, payment.id, sequence=1):
        result = _verify("--json")
    assert result.returncode == 1
    gaps = json.loads(result.stdout)["problems"]["sequence_gapless"]
    assert gaps[0] == {
        "entry": payment.id,
        "account": account["number"],
        "sequence": 3,
        "expected": 2,
    }
    # ... and the account's stored last_sequence (2) no longer matches its last entry (3).
    assert gaps[1]["account"] == account["number"]
    assert (gaps[1]["sequence"], gaps[1]["expected"]) == (2, 3)
    assert _verify().returncode == 0


def test_verify_flags_rows_written_by_transactions_this_server_has_not_run(
    session_factory, owner_session_factory
):
    """What a logical restore into a younger server looks like: the sealer would never
    order new audit rows after these, so verify says so instead of passing."""
    with session_factory() as session, session.begin():
        next_xid = int(session.scalar(text("SELECT pg_snapshot_xmax(pg_current_snapshot())")))
        future = str(next_xid + 10_000_000)
        row_id = session.scalar(
            text(
                "INSERT INTO audit_events (occurred_at, event_type, data, xid)"
                " VALUES (now(), 'test.restored', '{}', CAST(:x AS xid8)) RETURNING id"
            ),
            {"x": future},
        )
    try:
        result = _verify("--json")
        assert result.returncode == 1
        [flagged] = json.loads(result.stdout)["problems"]["xids_not_in_the_future"]
        assert flagged["table"] == "audit_events"
        assert flagged["max_xid"] == future
    finally:
        guard = "audit_events_append_only"
        with (
            _triggers_disabled(owner_session_factory, "audit_events", guard),
            owner_session_factory() as session,
            session.begin(),
        ):
            session.execute(text("DELETE FROM audit_events WHERE id = :i"), {"i": row_id})
    assert _verify().returncode == 0


def test_the_chain_verifies_events_of_a_whole_second_and_of_other_zones(session_factory):
    """verify formats each instant in SQL exactly as the sealer's isoformat() does."""
    with session_factory() as session, session.begin():
        session.execute(
            text(
                "INSERT INTO audit_events (occurred_at, event_type, data) VALUES"
                " (date_trunc('second', now()), 'test.whole_second', '{}'),"
                " (CAST('1999-12-31 23:59:59.000001-08' AS timestamptz), 'test.zone',"
                "  CAST(:d AS jsonb))"
            ),
            {"d": json.dumps({"name": "Zoë", "n": [1, 2.5, None]})},
        )
    seal_all(session_factory)
    result = _verify("--json")
    assert result.returncode == 0, result.stdout


def test_verify_on_one_connection_and_on_two_agree(
    client, session_factory, drain_pending, settings
):
    """Beat's verify runs every check on one connection; the CLI's on two, sharing one
    exported snapshot (the SQL checks beside the chain walk)."""
    from domain.services import verify

    _activity(client, session_factory, drain_pending)
    seal_all(session_factory)
    with session_factory() as one:
        single = verify.verify(session=one, keys=settings.audit_keyring)
    with session_factory() as main, session_factory() as checks:
        double = verify.verify(session=main, keys=settings.audit_keyring, checks_session=checks)
    assert single.ok and double.ok, (single.as_dict(), double.as_dict())
    assert (single.totals, single.audit_events) == (double.totals, double.audit_events)
    assert single.totals["entries"] > 0 and single.audit_events > 0
    assert set(double.seconds) == {"checks", "audit_chain"}


def test_the_chain_hashed_by_several_processes_names_the_same_first_broken_row(
    client, session_factory, owner_session_factory, drain_pending, settings, monkeypatch
):
    """`settle verify --jobs N` cuts the chain into N ranges, one process each; a range
    starts from its predecessor's stored hash. Whatever the cut, the report is the
    sequential walk's: same count, same first broken row."""
    from domain.services import verify

    monkeypatch.setattr(verify, "EVENTS_PER_JOB", 1)  # parallel even on a short chain
    _activity(client, session_factory, drain_pending)
    seal_all(session_factory)

    def both() -> tuple[verify.Report, verify.Report]:
        reports = []
        for jobs in (1, 3):
            with session_factory() as session:
                reports.append(
                    verify.verify(session=session, keys=settings.audit_keyring, chain_jobs=jobs)
                )
        return reports[0], reports[1]

    single, parallel = both()
    assert single.ok and parallel.ok, (single.as_dict(), parallel.as_dict())
    assert single.audit_events == parallel.audit_events > 3

    with session_factory() as session:
        last = session.scalar(text("SELECT max(chain_seq) FROM audit_seals"))
    change = (
        "UPDATE audit_events SET data = data || CAST(:t AS jsonb)"
        " WHERE id = (SELECT audit_id FROM audit_seals WHERE chain_seq = :s)"
    )
    undo = (
        "UPDATE audit_events SET data = data - 'tampered'"
        " WHERE id = (SELECT audit_id FROM audit_seals WHERE chain_seq = :s)"
    )
    # In the last range, and at the first row of the middle range (a range boundary).
    for victim in (last - 1, 1 + last // 3):
        with _triggers_disabled(owner_session_factory, "audit_events", "audit_events_append_only"):
            with owner_session_factory() as session, session.begin():
                session.execute(text(change), {"s": victim, "t": '{"tampered": true}'})
            try:
                single, parallel = both()
            finally:
                with owner_session_factory() as session, session.begin():
                    session.execute(text(undo), {"s": victim})
        error = "hash does not match contents under the audit key"
        expected = [{"chain_seq": victim, "error": error}]
        assert single.problems["audit_chain"] == expected
        assert parallel.problems["audit_chain"] == expected
        assert single.audit_events == parallel.audit_events


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
    assert tasks.verify_ledger() == "ledger OK"
    assert set(psutil.Process().children()) == children_before  # it ran, and it ended
    assert "settle_ledger_verify_ok 1.0" in client.get("/metrics").text

    edit = "UPDATE accounts SET balance = balance + :d WHERE id = :a"
    owner = owner_session_factory
    with _triggers_disabled(owner, "accounts", "accounts_balance_matches_ledger"):
        with owner() as session, session.begin():
            session.execute(text(edit), {"d": 1, "a": account["id"]})
        try:
            assert tasks.verify_ledger().startswith("ledger MISMATCH")
            assert "ledger verification did not pass" in caplog.text
            with session_factory() as session:
                latest = verification_repo.latest(session)
            assert latest is not None and not latest.ok and latest.problems >= 1
        finally:
            with owner() as session, session.begin():
                session.execute(text(edit), {"d": -1, "a": account["id"]})
