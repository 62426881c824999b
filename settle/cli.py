"""The `settle` CLI: daily operation (status, accounts find, deposit, transfers show,
webhooks redeliver, verify, create-user), migrate, and `serve NAME` for every process.

Each command first finds what it needs running (settle/operator.py) and says what to
start when nothing is; only then does it ask for a password. The ledger look-ups live
in domain/services/operations.py; this module parses arguments and prints.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from domain import password_policy
from domain.db import make_session_factory
from domain.enums import Role
from domain.errors import DomainError
from domain.money import is_valid_account_number
from domain.services import operations, users, verify
from domain.uow import unit_of_work
from settle import logs, metrics, operator, processes
from settle.config import get_settings


class CliError(Exception):
    """A refusal to print as `settle: MESSAGE` (exit 2)."""


def _database_url() -> str:
    url = get_settings().database_url
    if not url:
        raise operator.NothingRunning(
            "DATABASE_URL is not set and no `make run` is running in this directory: "
            f"{operator.START_HINT}, or set DATABASE_URL"
        )
    return url


def _engine() -> Engine:
    return operator.database_engine(get_settings())


def _read_password(args: argparse.Namespace, prompt: str, *, confirm: bool = False) -> str:
    """From --password-stdin (one line), else prompted for (twice when `confirm`)."""
    if getattr(args, "password_stdin", False):
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise CliError("--password-stdin: standard input held no password")
        return line
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("again, to confirm: ") != first:
        raise CliError("the two passwords differ; nothing was changed")
    return first


def cmd_migrate(_: argparse.Namespace) -> int:
    """Upgrades as the owner (SETTLE_MIGRATION_DATABASE_URL), then grants the app role.

    Refuses (exit 2, after migrating) in production when the app role is more than an
    app role, so that compose does not start the app on a superuser connection.
    """
    from domain.migrate import migrate  # alembic: imported by the one command that uses it

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
    engine = _engine()  # before any prompt: refuse at once when nothing is running
    factory = make_session_factory(engine)
    try:
        with unit_of_work(factory) as uow:
            email = users.check_new_user(session=uow.session, email=args.email, role=args.role)
        password = args.password
        if password is None:
            password = _read_password(args, f"password for {email}: ", confirm=True)
        password_policy.check(password, email=email)
        with unit_of_work(factory) as uow:
            user = users.register(
                session=uow.session,
                cmd=users.RegisterUser(email=email, password=password, role=args.role),
            )
            print(f"created {user.role} {user.email} ({user.id})")
    finally:
        engine.dispose()
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    # Two connections: the SQL checks run on the second while the first walks the
    # audit chain (domain/services/verify.py), both on one snapshot.
    engine = operator.database_engine(
        get_settings(), connections=2, application_name="settle-verify"
    )
    factory = make_session_factory(engine)
    try:
        with unit_of_work(factory) as uow, factory() as checks_session:
            settings = get_settings()
            report = verify.verify(
                session=uow.session,
                keys=settings.audit_keyring,
                checkpoints=settings.audit_checkpoints,
                checks_session=checks_session,
                chain_jobs=args.jobs,
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
            if rows and (first := _first_bad_row(rows[0])):
                print(f"      first bad row: {first}")
            for row in rows:
                print(f"      {row}")
        seconds = report.as_dict()["seconds"]
        print("took " + ", ".join(f"{part} {value} s" for part, value in seconds.items()))
        print("ledger OK" if report.ok else "ledger MISMATCH")
    return 0 if report.ok else 1


def _first_bad_row(row: dict[str, object]) -> str:
    """ "entry 123 of account 4000…", from what a check names (see verification_repo)."""
    parts = []
    if row.get("entry") is not None:
        parts.append(f"entry {row['entry']}")
    if row.get("account") is not None:
        parts.append(f"of account {row['account']}" if parts else f"account {row['account']}")
    if row.get("transfer") is not None:
        parts.append(f"(transfer {row['transfer']})")
    return " ".join(parts)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cmd_status(args: argparse.Namespace) -> int:
    """Processes, backlog, failing webhooks, last verify. Exit 1 when something needs
    attention: gateway not ready, no worker answering, Redis unreachable, verify failed."""
    settings = get_settings()
    engine = _engine()
    try:
        with unit_of_work(make_session_factory(engine)) as uow:
            overview = operations.overview(session=uow.session)
    finally:
        engine.dispose()
    api = operator.api_url(settings, args.api)
    found = operator.probe_processes(settings, api)
    problems = []
    if found.gateway != "ready":
        problems.append(f"the gateway is {found.gateway}")
    if found.redis != "ok":
        problems.append(f"Redis is {found.redis}")
    elif not found.workers:
        problems.append("no Celery worker answers")
    if overview.last_verify and not overview.last_verify.ok:
        problems.append("the last verify FAILED: run `settle verify`")
    if args.json:
        print(json.dumps(_status_json(found, overview, api, problems), indent=2, default=str))
        return 1 if problems else 0
    now = datetime.now(UTC)
    print("processes")
    print(f"  gateway    {api}  {found.gateway}")
    print(f"  workers    {', '.join(found.workers) or 'none answering'}")
    print(f"  flower     {found.flower}")
    print(f"  redis      {found.redis}")
    print("transfers")
    print(f"  pending          {overview.pending}")
    print(f"  oldest pending   {_ago(overview.oldest_pending_age_seconds)}")
    print(f"  quarantined      {overview.quarantined}")
    queued = ", ".join(f"{q} {n}" for q, n in found.queued.items()) or "-"
    print(f"  queued messages  {queued}")
    print("webhooks")
    if not overview.failing_webhooks:
        print("  no failing endpoints")
    for endpoint in overview.failing_webhooks:
        last = endpoint.last_error or (
            f"HTTP {endpoint.last_status_code}" if endpoint.last_status_code else "-"
        )
        since = (
            f", failing for {_ago((now - endpoint.failing_since).total_seconds())}"
            if endpoint.failing_since
            else ""
        )
        print(
            f"  {endpoint.url}  [{endpoint.status}{since}] {endpoint.retrying} retrying, "
            f"{endpoint.failed} failed in 24 h; last: {last}"
        )
    print("ledger")
    if overview.last_verify is None:
        print("  last verify  never (run `settle verify --record`)")
    else:
        lv = overview.last_verify
        verdict = "ok" if lv.ok else f"FAILED ({lv.problems} problems)"
        age = _ago((now - lv.ran_at).total_seconds())
        print(f"  last verify  {lv.ran_at:%Y-%m-%d %H:%M:%S} UTC ({age} ago): {verdict}")
    for problem in problems:
        print(f"settle: attention: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _status_json(
    found: operator.Processes,
    overview: operations.Overview,
    api: str,
    problems: list[str],
) -> dict[str, Any]:
    return {
        "processes": {
            "gateway": {"url": api, "state": found.gateway},
            "workers": found.workers,
            "flower": found.flower,
            "redis": found.redis,
        },
        "transfers": {
            "pending": overview.pending,
            "oldest_pending_age_seconds": overview.oldest_pending_age_seconds,
            "quarantined": overview.quarantined,
            "queued_messages": found.queued,
        },
        "failing_webhooks": [vars(endpoint) for endpoint in overview.failing_webhooks],
        "last_verify": vars(overview.last_verify) if overview.last_verify else None,
        "problems": problems,
    }


def cmd_accounts_find(args: argparse.Namespace) -> int:
    engine = _engine()
    try:
        with unit_of_work(make_session_factory(engine)) as uow:
            found = operations.find_accounts(
                session=uow.session, number=args.number, email=args.email
            )
    finally:
        engine.dispose()
    if args.json:
        print(
            json.dumps(
                [
                    {**f.account.model_dump(mode="json"), "kind": f.kind, "owner": f.owner_email}
                    for f in found
                ],
                indent=2,
            )
        )
        return 0 if found else 1
    if not found:
        what = f"number {args.number}" if args.number else f"owner {args.email}"
        hint = ""
        if args.number and not is_valid_account_number(args.number.strip()):
            hint = " (and it fails its check digit: a typo?)"
        print(f"settle: no account with {what}{hint}", file=sys.stderr)
        return 1
    print(f"{'number':<14}{'currency':<9}{'balance':>14}  {'status':<8}{'kind':<10}owner / id")
    for f in found:
        a = f.account
        print(
            f"{a.number:<14}{a.currency:<9}{a.balance:>14}  {a.status:<8}{f.kind:<10}"
            f"{f.owner_email or '-'}  {a.id}"
        )
    return 0


def cmd_transfers_show(args: argparse.Namespace) -> int:
    try:
        transfer_id = uuid.UUID(args.id)
    except ValueError as exc:
        raise CliError(f"{args.id!r} is not a transfer id (a UUID, as in Location)") from exc
    engine = _engine()
    try:
        with unit_of_work(make_session_factory(engine)) as uow:
            details = operations.transfer_details(session=uow.session, transfer_id=transfer_id)
    finally:
        engine.dispose()
    t = details.transfer
    if args.json:
        print(
            json.dumps(
                {
                    "transfer": t.model_dump(mode="json"),
                    "source_number": details.source_number,
                    "destination_number": details.destination_number,
                    "entries": [e.model_dump(mode="json") for e in details.entries],
                    "deliveries": [vars(d) for d in details.deliveries],
                },
                indent=2,
                default=str,
            )
        )
        return 0
    status = t.status if not t.failure_code else f"{t.status} ({t.failure_code})"
    print(f"transfer     {t.id}")
    print(f"kind         {t.kind}")
    print(f"status       {status}")
    print(f"amount       {t.amount} {t.currency} (minor units)")
    print(f"from         {details.source_number}  ({t.source_account_id})")
    print(f"to           {details.destination_number}  ({t.destination_account_id})")
    if t.description:
        print(f"description  {t.description}")
    print(f"created      {t.created_at:%Y-%m-%d %H:%M:%S.%f} UTC")
    if t.completed_at:
        took = (t.completed_at - t.created_at).total_seconds() * 1000
        print(f"completed    {t.completed_at:%Y-%m-%d %H:%M:%S.%f} UTC ({took:.0f} ms)")
    print("entries" if details.entries else "entries      none")
    for e in details.entries:
        print(
            f"  {e.account_id}  {e.amount:>+12}  balance {e.balance_before} -> "
            f"{e.balance_after}  (seq {e.sequence})"
        )
    print("webhooks" if details.deliveries else "webhooks     none")
    for d in details.deliveries:
        last = d.last_error or (f"HTTP {d.last_status_code}" if d.last_status_code else "-")
        print(
            f"  {d.id}  {d.event_type:<20} {d.status:<9} {d.attempts} attempt(s), last {last}"
            f"  {d.url}"
        )
    return 0


def _operator_client(args: argparse.Namespace) -> operator.OperatorClient:
    """Logged in as --as EMAIL, once the gateway is known to answer."""
    api = operator.api_url(get_settings(), args.api)
    operator.require_gateway(api)
    password = _read_password(args, f"password for {args.operator}: ")
    return operator.OperatorClient.login(api, args.operator, password)


def _account_id(account: str) -> str:
    """An account id, from an id or an account number (looked up in the database)."""
    try:
        return str(uuid.UUID(account))
    except ValueError:
        pass
    engine = _engine()
    try:
        with unit_of_work(make_session_factory(engine)) as uow:
            found = operations.find_accounts(session=uow.session, number=account)
    finally:
        engine.dispose()
    if not found:
        typo = "" if is_valid_account_number(account) else " (it fails its check digit: a typo?)"
        raise CliError(f"no account has the number {account}{typo}")
    return str(found[0].account.id)


def cmd_deposit(args: argparse.Namespace) -> int:
    account_id = _account_id(args.account)  # the database first, then the password
    client = _operator_client(args)
    location, body = client.deposit(
        account_id=account_id,
        amount=args.amount,
        currency=args.currency,
        description=args.description,
        idempotency_key=args.idempotency_key or f"settle-cli-{uuid.uuid4()}",
    )
    if location.startswith("/v1/admin/approvals/"):
        print(
            f"deposit waits for approval {body['id']}: at or above the approval threshold, "
            f"another operator must approve it (POST /v1/admin/approvals/{body['id']}/approve)"
        )
        return 0
    print(f"deposit {body['id']} accepted: {body['amount']} {body['currency']} (pending)")
    if args.wait <= 0:
        return 0
    final = client.get(location, wait=min(args.wait, 30))
    print(
        f"deposit {final['id']} {final['status']}"
        + (f" ({final['failure_code']})" if final.get("failure_code") else "")
    )
    return 0 if final["status"] == "succeeded" else 1


def cmd_webhooks_redeliver(args: argparse.Namespace) -> int:
    try:
        delivery_id = str(uuid.UUID(args.id))
    except ValueError as exc:
        raise CliError(f"{args.id!r} is not a delivery id (a UUID)") from exc
    client = _operator_client(args)
    body = client.redeliver(delivery_id)
    print(f"delivery {body.get('id', delivery_id)} queued again ({body.get('status', 'pending')})")
    return 0


def cmd_webhooks_listen(args: argparse.Namespace) -> int:
    from settle.receiver import listen

    return listen(port=args.port, secret=args.secret, count=args.count, timeout=args.timeout)


def cmd_serve(args: argparse.Namespace) -> int:
    from settle import web  # uvicorn: only `serve web` needs it

    settings = get_settings()
    logs.configure(log_format=settings.log_format, level=settings.log_level)
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
    if args.name == "flower":
        # Flower serves its own /metrics from its own registry; kept out of the shared
        # directory, so the gateway's /metrics does not repeat Flower's.
        os.environ.pop(metrics.MULTIPROC_VARIABLE, None)
    # Replace this process, so signals from honcho or Docker reach Celery directly.
    os.execv(argv[0], argv)  # noqa: S606  # nosec B606


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="settle", description="Operate a Settle deployment.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    create = sub.add_parser("create-user", help="create a user with any role")
    create.add_argument("--email", required=True)
    secret = create.add_mutually_exclusive_group()
    secret.add_argument(
        "--password", help="prompted for (twice) when omitted, which keeps it out of history"
    )
    secret.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    create.add_argument("--role", choices=[r.value for r in Role], default="customer")
    create.set_defaults(func=cmd_create_user)

    status = sub.add_parser(
        "status",
        help="processes, backlog, oldest pending, failing webhooks, last verify "
        "(exit 1 when something needs attention)",
    )
    _api_option(status)
    status.add_argument("--json", action="store_true", help="machine-readable")
    status.set_defaults(func=cmd_status)

    accounts = sub.add_parser("accounts", help="look accounts up").add_subparsers(
        dest="accounts_command", required=True
    )
    find = accounts.add_parser("find", help="by account number, or by owner's email")
    which = find.add_mutually_exclusive_group(required=True)
    which.add_argument("--number", help="an account number")
    which.add_argument("--email", help="the owner's email (any form of it)")
    find.add_argument("--json", action="store_true", help="machine-readable")
    find.set_defaults(func=cmd_accounts_find)

    deposit = sub.add_parser(
        "deposit",
        help="deposit into an account, as an operator (through the API: audited, four eyes "
        "above the approval threshold)",
    )
    deposit.add_argument("--account", required=True, help="account number or id")
    deposit.add_argument(
        "--amount", required=True, type=_minor_units, help="integer minor units: 1250 is 12.50"
    )
    deposit.add_argument("--currency", required=True, type=str.upper)
    deposit.add_argument("--description")
    deposit.add_argument(
        "--idempotency-key", help="to retry a deposit safely, pass the key of the first try"
    )
    deposit.add_argument(
        "--wait", type=float, default=10, help="seconds to wait for the outcome (0: don't)"
    )
    _operator_options(deposit)
    deposit.set_defaults(func=cmd_deposit)

    transfers = sub.add_parser("transfers", help="look transfers up").add_subparsers(
        dest="transfers_command", required=True
    )
    show = transfers.add_parser("show", help="a transfer, its entries and its webhooks")
    show.add_argument("id", help="the transfer id (the last part of its Location)")
    show.add_argument("--json", action="store_true", help="machine-readable")
    show.set_defaults(func=cmd_transfers_show)

    hooks = sub.add_parser("webhooks", help="webhook deliveries").add_subparsers(
        dest="webhooks_command", required=True
    )
    redeliver = hooks.add_parser(
        "redeliver", help="send a delivery again now, as an operator (through the API)"
    )
    redeliver.add_argument("id", help="the delivery id (from `settle transfers show`)")
    _operator_options(redeliver)
    redeliver.set_defaults(func=cmd_webhooks_redeliver)
    receive = hooks.add_parser(
        "listen",
        help="a local receiver for trying webhooks out: prints each delivery, checks its "
        "signature (development; Settle reaches it with SETTLE_WEBHOOK_ALLOW_PRIVATE=true)",
    )
    receive.add_argument("--port", type=int, default=9000, help="on 127.0.0.1 (default 9000)")
    receive.add_argument("--secret", help="the endpoint's whsec_ secret: verify signatures")
    receive.add_argument("--count", type=int, help="stop after this many deliveries")
    receive.add_argument("--timeout", type=float, help="give up (exit 1) after these seconds")
    receive.set_defaults(func=cmd_webhooks_listen)
    check = sub.add_parser(
        "verify",
        help="recompute balances from entries, check every transfer and the audit chain; "
        "exit 1 on any mismatch",
    )
    check.add_argument("--json", action="store_true", help="machine-readable report")
    check.add_argument(
        "--jobs",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="processes that hash the audit chain (default: one per core, at most 4)",
    )
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


def _minor_units(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an integer: amounts are minor units, 1250 for 12.50"
        ) from None


def _api_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api",
        help="the gateway's URL (default: from SETTLE_HTTP_HOST and SETTLE_HTTP_PORT, "
        "which `make run` uses)",
    )


def _operator_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--as",
        dest="operator",
        required=True,
        metavar="EMAIL",
        help="the operator to act as (asked for its password)",
    )
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    _api_option(parser)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return int(func(args))
    except operator.NothingRunning as exc:
        print(f"settle: {exc}", file=sys.stderr)
        return 2
    except operator.ApiRefused as exc:
        print(f"settle: the API refused: {exc}", file=sys.stderr)
        return 2
    except DomainError as exc:
        print(f"settle: {exc.detail}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"settle: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, EOFError):
        print("\nsettle: interrupted; nothing more was done", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
