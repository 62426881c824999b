"""Money rules the database enforces by itself, even against a buggy or malicious writer."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from tests.factories import open_account, operator_headers, post_deposit, register_and_login


@pytest.fixture
def funded(client, session_factory, drain_pending):
    alice = register_and_login(client)
    account = open_account(client, alice)
    post_deposit(client, operator_headers(client, session_factory), account["id"], 1_000)
    drain_pending()
    return uuid.UUID(account["id"])


def _execute(session_factory, sql, **params):
    with session_factory() as session, session.begin():
        session.execute(text(sql), params)


def test_ledger_entries_cannot_be_updated_or_deleted(owner_session_factory, funded):
    """The triggers hold even for the table owner (the app role is not even granted
    these: tests/integration/test_database_roles.py)."""
    session_factory = owner_session_factory
    with pytest.raises(DBAPIError, match="append-only"):
        _execute(
            session_factory,
            "UPDATE ledger_entries SET amount = amount * 2 WHERE account_id = :a",
            a=funded,
        )
    with pytest.raises(DBAPIError, match="append-only"):
        _execute(session_factory, "DELETE FROM ledger_entries WHERE account_id = :a", a=funded)
    with pytest.raises(DBAPIError, match="append-only"):
        _execute(session_factory, "TRUNCATE ledger_entries CASCADE")


def test_balance_cannot_be_edited_away_from_the_ledger(session_factory, funded):
    with pytest.raises(DBAPIError, match="disagrees with its ledger"):
        _execute(session_factory, "UPDATE accounts SET balance = 1000000 WHERE id = :a", a=funded)


def test_customer_balance_never_below_overdraft_limit(session_factory, funded):
    # accounts_available_floor (balance - held) is checked first and implies the old floor.
    with pytest.raises(IntegrityError, match=r"accounts_(available|balance)_floor"):
        _execute(session_factory, "UPDATE accounts SET balance = -1 WHERE id = :a", a=funded)


def _new_transfer_sql():
    return """
        INSERT INTO transfers (id, kind, status, source_account_id, destination_account_id,
                               amount, currency, initiated_by, completed_at, lane)
        SELECT :new, kind, 'succeeded', source_account_id, destination_account_id, 5,
               currency, initiated_by, now(), lane
          FROM transfers WHERE destination_account_id = :a LIMIT 1;
        INSERT INTO ledger_entries (transfer_id, account_id, amount, currency,
                                    balance_before, balance_after, sequence)
        VALUES (:new, :a, 5, 'USD', 1000, 1005, :seq);
        UPDATE accounts SET balance = 1005, last_sequence = :seq WHERE id = :a;
    """


def test_one_legged_transfer_is_refused_at_commit(session_factory, funded):
    with pytest.raises(DBAPIError, match="unbalanced"):
        _execute(session_factory, _new_transfer_sql(), new=uuid.uuid4(), a=funded, seq=2)


def test_sequence_gap_is_refused_at_commit(session_factory, funded):
    # A balanced pair of legs, but the customer's leg skips sequence numbers 2..6.
    sql = """
        INSERT INTO transfers (id, kind, status, source_account_id, destination_account_id,
                               amount, currency, initiated_by, completed_at, lane)
        SELECT :new, 'withdrawal', 'succeeded', destination_account_id, source_account_id, 5,
               currency, initiated_by, now(), settle_lane(destination_account_id)
          FROM transfers WHERE destination_account_id = :a LIMIT 1;
        INSERT INTO ledger_entries (transfer_id, account_id, amount, currency,
                                    balance_before, balance_after, sequence)
        VALUES (:new, :a, -5, 'USD', 1000, 995, 7);
        INSERT INTO ledger_entries (transfer_id, account_id, amount, currency,
                                    balance_before, balance_after, sequence)
        SELECT :new, id, 5, 'USD', balance, balance + 5, last_sequence + 1
          FROM accounts WHERE kind = 'system' AND currency = 'USD';
    """
    with pytest.raises(DBAPIError, match="gap in sequence"):
        _execute(session_factory, sql, new=uuid.uuid4(), a=funded)
