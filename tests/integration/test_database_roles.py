"""Least privilege: on the app's own connection the database refuses everything that
could rewrite history or switch the guards off.

Finding 3 (issue 10). On main the app connected as a superuser, so every statement
below succeeded (`SET session_replication_role = replica` then let UPDATE ledger
entries and DELETE audit rows); each now fails because the app role (DATABASE_URL) is
neither a superuser nor the owner and is granted only domain/db_roles.APP_GRANTS.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from domain import db_roles
from tests.factories import open_account, operator_headers, post_deposit, register_and_login

SETTLE = Path(sys.executable).parent / "settle"

FORBIDDEN = {
    "update ledger entry": "UPDATE ledger_entries SET amount = amount",
    "delete ledger entry": "DELETE FROM ledger_entries",
    "truncate ledger": "TRUNCATE ledger_entries CASCADE",
    "update audit row": "UPDATE audit_events SET data = data",
    "delete audit row": "DELETE FROM audit_events",
    "truncate audit": "TRUNCATE audit_events CASCADE",
    "update seal": "UPDATE audit_seals SET hash = hash",
    "delete seal": "DELETE FROM audit_seals",
    "truncate seals": "TRUNCATE audit_seals",
    "delete transfer": "DELETE FROM transfers",
    "delete account": "DELETE FROM accounts",
    "truncate transfers": "TRUNCATE transfers CASCADE",
    "disable a trigger": "ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only",
    "disable user triggers": "ALTER TABLE audit_events DISABLE TRIGGER USER",
    "replica mode": "SET session_replication_role = replica",
    "replica mode, local": "SET LOCAL session_replication_role = replica",
    "drop table": "DROP TABLE ledger_entries",
    "alter table": "ALTER TABLE accounts ADD COLUMN backdoor integer",
    "drop constraint": "ALTER TABLE accounts DROP CONSTRAINT accounts_balance_floor",
    "replace a function": (
        "CREATE OR REPLACE FUNCTION settle_refuse_change() RETURNS trigger"
        " LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$"
    ),
    "create table": "CREATE TABLE backdoor (id integer)",
    "rewind the alembic version": "UPDATE alembic_version SET version_num = '0001'",
    "setval": "SELECT setval(pg_get_serial_sequence('audit_events', 'id'), 1)",
}


@pytest.fixture
def funded(client, session_factory, drain_pending):
    operator = operator_headers(client, session_factory)
    account = open_account(client, register_and_login(client))
    post_deposit(client, operator, account["id"], 1_000)
    drain_pending()
    return account


@pytest.mark.parametrize("statement", list(FORBIDDEN.values()), ids=list(FORBIDDEN))
def test_the_app_role_is_refused(session_factory, funded, statement):
    with (
        session_factory() as session,
        session.begin(),
        pytest.raises(DBAPIError, match=r"permission denied|must be owner"),
    ):
        session.execute(text(statement))


def test_the_app_role_is_no_superuser_and_owns_nothing(engine, settings):
    assert settings.migration_database_url
    with engine.connect() as conn:
        assert db_roles.app_role_problems(conn) == []
        owners = set(
            conn.execute(
                text("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
            )
            .scalars()
            .all()
        )
        me = conn.execute(text("SELECT current_user")).scalar_one()
    assert me not in owners


def test_every_table_has_a_grant_policy(engine):
    with engine.connect() as conn:
        tables = set(
            conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
            .scalars()
            .all()
        )
    assert tables == set(db_roles.APP_GRANTS)


def _migrate(**env):
    # Production also insists on a metrics token (finding 4); irrelevant here.
    return subprocess.run(
        [SETTLE, "migrate"],
        env={**os.environ, "SETTLE_METRICS_TOKEN": "m" * 40, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_migrate_grants_the_app_role_and_refuses_an_owner_app_role_in_production(services):
    ok = _migrate(SETTLE_ENVIRONMENT="production")
    assert ok.returncode == 0, ok.stderr
    assert "WARNING" not in ok.stderr
    # One role for everything: the app would own the tables.
    single = _migrate(
        SETTLE_ENVIRONMENT="production",
        DATABASE_URL=services.owner_url,
        SETTLE_MIGRATION_DATABASE_URL="",
    )
    assert single.returncode == 2
    assert "owns" in single.stderr and "refusing" in single.stderr
    relaxed = _migrate(DATABASE_URL=services.owner_url, SETTLE_MIGRATION_DATABASE_URL="")
    assert relaxed.returncode == 0  # outside production: a loud warning only
    assert "WARNING" in relaxed.stderr
