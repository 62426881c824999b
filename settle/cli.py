"""The `settle` CLI: migrate, create-user, verify, and `serve NAME` for every process."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from pathlib import Path

from domain.db import make_engine, make_session_factory
from domain.enums import Role
from domain.errors import DomainError
from domain.migrate import migrate
from domain.services import users, verify
from domain.uow import unit_of_work
from settle import processes, web
from settle.config import get_settings


def _database_url() -> str:
    url = get_settings().database_url
    if not url:
        sys.exit("settle: DATABASE_URL is not set")
    return url


def cmd_migrate(_: argparse.Namespace) -> int:
    """Upgrades as the owner (SETTLE_MIGRATION_DATABASE_URL), then grants the app role.

    Refuses (exit 2, after migrating) in production when the app role is more than an
    app role, so that compose does not start the app on a superuser connection.
    """
    settings = get_settings()
    app_url = _database_url()
    warnings = migrate(owner_url=settings.owner_database_url, app_url=app_url)
    print("database is at the latest migration")
    if not settings.migration_database_url:
        warnings.append(
            "SETTLE_MIGRATION_DATABASE_URL is not set: DATABASE_URL migrates, so the app"
            " role owns the tables and can switch off the database's guards"
        )
    for warning in warnings:
        print(f"settle: WARNING: {warning}", file=sys.stderr)
    if warnings and settings.environment == "production":
        print(
            "settle: refusing: in production the app role (DATABASE_URL) must be neither"
            ' a superuser nor the owner; see README "Database roles"',
            file=sys.stderr,
        )
        return 2
    return 0


def cmd_create_user(args: argparse.Namespace) -> int:
    password = args.password or getpass.getpass("password: ")
    engine = make_engine(_database_url(), pool_size=1, max_overflow=0)
    try:
        with unit_of_work(make_session_factory(engine)) as uow:
            user = users.register(
                session=uow.session,
                cmd=users.RegisterUser(email=args.email, password=password, role=args.role),
            )
            print(f"created {user.role} {user.email} ({user.id})")
    except DomainError as exc:
        print(f"settle: {exc.detail}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    engine = make_engine(
        _database_url(), pool_size=1, max_overflow=0, application_name="settle-verify"
    )
    factory = make_session_factory(engine)
    try:
        with unit_of_work(factory) as uow:
            settings = get_settings()
            report = verify.verify(
                session=uow.session,
                keys=settings.audit_keyring,
                checkpoints=settings.audit_checkpoints,
            )
        if args.record:
            with unit_of_work(factory) as uow:
                verify.record(session=uow.session, report=report)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        totals = report.as_dict()["totals"]
        print(
            f"checked {totals['accounts']} accounts, {totals['entries']} entries, "
            f"{totals['transfers']} transfers, {totals['audit_events']} audit events"
        )
        for name, rows in report.problems.items():
            status = "ok" if not rows else f"FAILED ({len(rows)} shown)"
            print(f"  {name:<40} {status}")
            for row in rows:
                print(f"      {row}")
        print("ledger OK" if report.ok else "ledger MISMATCH")
    return 0 if report.ok else 1


def cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    if args.name == "web":
        if args.single:
            return web.serve_one(settings)
        return web.supervise(settings)
    try:
        argv = processes.argv(args.name, settings)
    except processes.ProcessConfigError as exc:
        print(f"settle: {exc}", file=sys.stderr)
        return 2
    if args.name == "beat":
        Path(settings.beat_schedule).parent.mkdir(parents=True, exist_ok=True)
    # Replace this process, so signals from honcho or Docker reach Celery directly.
    os.execv(argv[0], argv)  # noqa: S606  # nosec B606


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="settle", description="Operate a Settle deployment.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    create = sub.add_parser("create-user", help="create a user with any role")
    create.add_argument("--email", required=True)
    create.add_argument("--password", help="prompted for when omitted (keeps it out of history)")
    create.add_argument("--role", choices=[r.value for r in Role], default="customer")
    create.set_defaults(func=cmd_create_user)
    check = sub.add_parser(
        "verify",
        help="recompute balances from entries, check every transfer and the audit chain; "
        "exit 1 on any mismatch",
    )
    check.add_argument("--json", action="store_true", help="machine-readable report")
    check.add_argument(
        "--record", action="store_true", help="store the result (feeds the /metrics gauges)"
    )
    check.set_defaults(func=cmd_verify)
    serve = sub.add_parser(
        "serve",
        help="run one of the processes (what the Procfile and docker-compose start)",
        description="web: gateway processes (one per core, SETTLE_WEB_PROCESSES); "
        "worker: transfers queue; webhooks: webhooks queue; beat: the scheduler; "
        "flower: operator UI (needs FLOWER_BASIC_AUTH).",
    )
    serve.add_argument("name", choices=processes.NAMES)
    # Internal: what each supervised `web` child runs.
    serve.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
