"""Backup and restore (README "Operating it", "Backup and restore"), then `settle verify`.

The procedure as documented: `pg_dump --format=custom` as the owner role, `pg_restore
--no-owner --no-privileges` into an empty database owned by the owner role, `settle
migrate` to give the app role exactly its grants, then `settle verify` on the copy as
the app role, against a copy of the checkpoint file. Runs on a private database of
the test server, with the server's own pg_dump/pg_restore (the machine's PostgreSQL
packages, or the embedded server's binaries); skipped when none fits the server, except
under SETTLE_REQUIRE_BACKUP_TOOLS (set by .ci/run), where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from settle.harness import execute_as_admin
from tests.factories import (
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
    seal_all,
)

SETTLE = Path(sys.executable).parent / "settle"


def _major(binary: Path) -> int | None:
    result = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    found = re.search(r"\) (\d+)", result.stdout)
    return int(found.group(1)) if result.returncode == 0 and found else None


def _postgres_tools(server_major: int) -> tuple[Path, Path] | None:
    """pg_dump and pg_restore able to dump this server (same major version or newer):
    the machine's (on PATH), else the embedded server's own binaries."""
    directories = []
    if found := shutil.which("pg_dump"):
        directories.append(Path(found).parent)
    try:
        from pgserver._commands import POSTGRES_BIN_PATH  # type: ignore[import-untyped]

        directories.append(Path(POSTGRES_BIN_PATH))
    except ImportError:
        pass
    for directory in directories:
        dump, restore = directory / "pg_dump", directory / "pg_restore"
        if dump.exists() and restore.exists() and (_major(dump) or 0) >= server_major:
            return dump, restore
    return None


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URI without the password, and the environment that carries it."""
    parsed = make_url(url)
    uri = parsed.set(drivername="postgresql", password=None).render_as_string()
    return uri, {"PGPASSWORD": parsed.password or ""}


def _run(args: list[object], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _ledger(url: str) -> dict[str, object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                "balances": dict(conn.execute(text("SELECT number, balance FROM accounts")).all()),
                "entries": conn.execute(text("SELECT count(*) FROM ledger_entries")).scalar(),
                "head": tuple(
                    conn.execute(text("SELECT last_seq, last_hash FROM audit_chain_head")).one()
                ),
            }
    finally:
        engine.dispose()


def test_a_restored_backup_verifies(
    client, session_factory, drain_pending, services, settings, tmp_path
):
    operator = operator_headers(client, session_factory)
    alice, bob = register_and_login(client), register_and_login(client)
    a, b = open_account(client, alice), open_account(client, bob)
    post_deposit(client, operator, a["id"], 10_000)
    drain_pending()
    for amount in (1_000, 2_500, 99_999):  # the last one fails: no entries
        post_transfer(client, alice, a["id"], b["number"], amount)
    drain_pending()
    seal_all(session_factory)

    with session_factory() as session:
        server_major = int(session.execute(text("SHOW server_version_num")).scalar_one()) // 10000
    tools = _postgres_tools(server_major)
    if tools is None:
        missing = f"no pg_dump/pg_restore for PostgreSQL {server_major} on this machine"
        if os.environ.get("SETTLE_REQUIRE_BACKUP_TOOLS"):  # .ci/run: never skipped there
            pytest.fail(missing)
        pytest.skip(missing)
    pg_dump, pg_restore = tools

    # 1. Back up, as the owner (it can read every table), in pg_dump's custom format.
    backup = tmp_path / "settle.dump"
    source, source_env = _libpq(services.owner_url)
    dumped = _run(
        [pg_dump, "--format=custom", f"--file={backup}", f"--dbname={source}"], source_env
    )
    assert dumped.returncode == 0, dumped.stderr
    checkpoints = tmp_path / "checkpoints.jsonl"  # the checkpoint file as of the backup
    if settings.audit_checkpoint_path and Path(settings.audit_checkpoint_path).exists():
        shutil.copy(settings.audit_checkpoint_path, checkpoints)

    # 2. Restore into an empty database that the owner role owns.
    owner = make_url(services.owner_url)
    name = f"settle_restore_{secrets.token_hex(4)}"
    execute_as_admin(services.server_url, f'CREATE DATABASE "{name}" OWNER "{owner.username}"')
    try:
        owner_url = owner.set(database=name).render_as_string(hide_password=False)
        app_url = (
            make_url(services.database_url).set(database=name).render_as_string(hide_password=False)
        )
        target, target_env = _libpq(owner_url)
        restored = _run(
            [pg_restore, "--no-owner", "--no-privileges", "--exit-on-error",
             f"--dbname={target}", backup],
            target_env,
        )  # fmt: skip
        assert restored.returncode == 0, restored.stderr

        # 3. The app role gets exactly its grants on the copy.
        copy_env = {
            "DATABASE_URL": app_url,
            "SETTLE_MIGRATION_DATABASE_URL": owner_url,
            "SETTLE_AUDIT_CHECKPOINT_PATH": str(checkpoints),
        }
        migrated = _run([SETTLE, "migrate"], copy_env)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        assert "WARNING" not in migrated.stderr, migrated.stderr

        # 4. Verify the copy, as the app role: every check, the chain, the checkpoints.
        verified = _run([SETTLE, "verify", "--json"], copy_env)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        report = json.loads(verified.stdout)
        assert report["ok"] is True
        assert report["totals"]["entries"] > 0 and report["totals"]["audit_events"] > 0
        assert _ledger(app_url) == _ledger(services.database_url)

        # The copy is no weaker than the original: the app role still cannot rewrite it.
        engine = create_engine(app_url)
        try:
            with engine.begin() as conn, pytest.raises(Exception, match="permission denied"):
                conn.execute(text("UPDATE ledger_entries SET amount = amount"))
        finally:
            engine.dispose()
    finally:
        execute_as_admin(services.server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
