"""The two database roles: the owner, who migrates, and the app role, who does the rest.

The owner owns every table, function and sequence (it runs `settle migrate`). The app
role (DATABASE_URL) is granted exactly what the code does, after every upgrade, by
`grant_app_role`: no table privilege beyond APP_GRANTS, no TRUNCATE, no UPDATE or
DELETE of ledger entries, audit events or seals. As a non-owner and non-superuser it
can neither ALTER, DROP nor DISABLE TRIGGER, nor set `session_replication_role`
(superuser only): the database's own guards (domain/migrations) cannot be switched off
from the app's connection.

`provision_roles` creates both roles on a server where we are superuser: the embedded
server of `make run` (settle/devservices.py) and the test database (tests/services.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import Connection

# Table -> what the app role may do on it. A table missing here gets nothing (the app
# then fails loudly on it, and tests/integration/test_database_roles.py names it).
# SELECT ... FOR UPDATE needs UPDATE, so every table the code locks has UPDATE.
APP_GRANTS: dict[str, tuple[str, ...]] = {
    "users": ("SELECT", "INSERT", "UPDATE"),
    "accounts": ("SELECT", "INSERT", "UPDATE"),
    "transfers": ("SELECT", "INSERT", "UPDATE"),
    # UPDATE: the finished count and completion (a trigger refuses any other change).
    "transfer_batches": ("SELECT", "INSERT", "UPDATE"),
    "ledger_entries": ("SELECT", "INSERT"),
    "idempotency_keys": ("SELECT", "INSERT", "DELETE"),  # the retention purge
    "refresh_tokens": ("SELECT", "INSERT", "UPDATE"),
    "audit_events": ("SELECT", "INSERT"),
    "audit_seals": ("SELECT", "INSERT"),
    "audit_chain_head": ("SELECT", "UPDATE"),
    "ledger_verifications": ("SELECT", "INSERT"),
    "events": ("SELECT", "INSERT"),
    "webhook_endpoints": ("SELECT", "INSERT", "UPDATE"),
    "webhook_deliveries": ("SELECT", "INSERT", "UPDATE"),
    "webhook_attempts": ("SELECT", "INSERT"),
    # Decided once: a trigger refuses changes to a decided approval and any delete.
    "approvals": ("SELECT", "INSERT", "UPDATE"),
    # The engine updates their armed state; owners and operators delete them.
    "balance_alerts": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "alembic_version": ("SELECT",),
}
APP_FUNCTIONS = (
    "settle_lane(uuid)",
    "settle_accept(uuid, text, text, text[], uuid[], text[], bigint[], text[], text[],"
    " uuid, boolean, text, bigint, uuid[], timestamptz[], timestamptz[], integer[], integer,"
    " jsonb, jsonb)",
)


def _ident(connection: Connection, name: str) -> str:
    return str(connection.execute(text("SELECT quote_ident(:n)"), {"n": name}).scalar_one())


def grant_app_role(connection: Connection, app_role: str) -> list[str]:
    """Makes the app role's privileges exactly APP_GRANTS; returns tables left without any.

    Run as the owner, after the upgrade, in the upgrade's database. Idempotent.
    """
    role = _ident(connection, app_role)
    tables = list(
        connection.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        ).scalars()
    )
    connection.execute(text("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
    connection.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
    connection.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}"))
    connection.execute(text(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}"))
    ungranted = []
    for table in tables:
        privileges = APP_GRANTS.get(table)
        if privileges is None:
            ungranted.append(table)
            continue
        table_ident = _ident(connection, table)
        connection.execute(text(f"GRANT {', '.join(privileges)} ON {table_ident} TO {role}"))
    # nextval only (no setval: UPDATE is not granted).
    connection.execute(text(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}"))
    for function in APP_FUNCTIONS:
        connection.execute(text(f"GRANT EXECUTE ON FUNCTION {function} TO {role}"))
    return ungranted


def app_role_problems(connection: Connection) -> list[str]:
    """What makes the connection's role more than an app role should be."""
    problems = []
    row = connection.execute(
        text(
            "SELECT rolsuper, rolbypassrls, rolcreaterole, rolreplication FROM pg_roles"
            " WHERE rolname = current_user"
        )
    ).one()
    names = ("a superuser", "BYPASSRLS", "CREATEROLE", "REPLICATION")
    problems += [f"the app role is {name}" for name, flag in zip(names, row, strict=True) if flag]
    owned = connection.execute(
        text(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            " AND pg_has_role(current_user, tableowner, 'USAGE')"
        )
    ).scalar_one()
    if owned:
        problems.append(f"the app role owns (or acts as the owner of) {owned} table(s)")
    return problems


@dataclass(frozen=True)
class RoleUrls:
    owner_url: str
    app_url: str


def provision_roles(
    superuser_url: str,
    *,
    database: str,
    owner: str,
    owner_password: str,
    app: str,
    app_password: str,
) -> RoleUrls:
    """Creates (or updates) both roles, NOSUPERUSER, and gives the database to the owner.

    Tables, sequences and functions of an existing database that the superuser owns
    (a development database from before roles) are handed to the owner too.
    """
    server = make_url(superuser_url)
    engine = create_engine(
        server.set(database=database).render_as_string(hide_password=False),
        isolation_level="AUTOCOMMIT",
    )
    try:
        with engine.connect() as conn:
            for name, password in ((owner, owner_password), (app, app_password)):
                ident = _ident(conn, name)
                exists = conn.execute(
                    text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}
                ).first()
                verb = "ALTER" if exists else "CREATE"
                literal = conn.execute(
                    text("SELECT quote_literal(:p)"), {"p": password}
                ).scalar_one()
                conn.execute(
                    text(
                        f"{verb} ROLE {ident} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
                        f" NOREPLICATION NOBYPASSRLS PASSWORD {literal}"
                    )
                )
            owner_ident, db_ident = _ident(conn, owner), _ident(conn, database)
            conn.execute(text(f"ALTER DATABASE {db_ident} OWNER TO {owner_ident}"))
            conn.execute(text(f"ALTER SCHEMA public OWNER TO {owner_ident}"))
            conn.execute(text(HAND_OVER.replace(":owner", owner_ident)))
    finally:
        engine.dispose()

    def as_role(user: str, password: str) -> str:
        url = server.set(database=database, username=user, password=password)
        return url.render_as_string(hide_password=False)

    return RoleUrls(owner_url=as_role(owner, owner_password), app_url=as_role(app, app_password))


HAND_OVER = """
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT c.relname, c.relkind FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
                AND pg_get_userbyid(c.relowner) <> ':owner'
    LOOP
        EXECUTE format('ALTER TABLE public.%I OWNER TO :owner', r.relname);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
               JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> ':owner'
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO :owner', r.sig);
    END LOOP;
END $$;
"""
