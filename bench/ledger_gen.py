"""`python -m bench.ledger_gen`: a large, valid ledger, built straight through SQL.

For measuring `settle verify` (and anything else that reads the whole ledger) at
scale without driving a million transfers through HTTP. It writes what the gateway
and the engine would have written, as the app role (DATABASE_URL) with every
trigger on, so the database's own guards check each row as it arrives:

* customers (20 accounts each, the API's cap), one operator, one USD settlement
  account;
* one deposit per customer account, then `--transfers` random transfers between
  them, all `succeeded`, each with its two ledger entries (sequence, balance_before
  and balance_after computed set-based with window functions, chunk by chunk);
* two audit events per transfer (`transfer.accepted` as settle_accept writes it,
  `transfer.succeeded` as the engine writes it);
* then the real sealer (`domain.services.audit.seal`, under SETTLE_AUDIT_KEY)
  chains every audit event, exactly as workers and beat do.

With `--server URL` (a superuser URL) it first creates a database of its own with
an owner and an app role and migrates it, and prints the environment to reach it;
`--drop NAME --server URL` removes such a database and its roles. Without
`--server` it fills the (migrated, empty) database of DATABASE_URL.

Not part of the suite: 1,000,000 entries take a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import random
import secrets
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

from domain.db import make_engine, make_session_factory
from domain.migrate import migrate
from domain.money import new_account_number
from domain.passwords import hash_password
from domain.services import accounts as accounts_service
from domain.services import audit
from domain.uow import unit_of_work
from settle.config import get_settings
from settle.harness import create_database, drop_database

CURRENCY = "USD"
ACCOUNTS_PER_CUSTOMER = 20  # SETTLE_MAX_ACCOUNTS_PER_USER's default
DEPOSIT = 10_000_000  # minor units per account: far above what it can send here
MAX_AMOUNT = 10_000
SEAL_BATCH = 20_000

# One chunk of transfers in one statement: the transfers, both legs of each (the
# per-account sequence and running balance continue from the accounts' stored
# values), the new balances, and two audit rows per transfer. The deferred
# triggers check every entry and balance when the chunk commits.
_CHUNK = text(
    """
    WITH picked AS (
        SELECT * FROM unnest(CAST(:kinds AS text[]), CAST(:sources AS uuid[]),
                             CAST(:destinations AS uuid[]), CAST(:amounts AS bigint[]),
                             CAST(:initiators AS uuid[]), CAST(:at AS timestamptz[]))
               WITH ORDINALITY AS p(kind, source, destination, amount, initiator, at, n)
    ), inserted AS (
        INSERT INTO transfers (id, kind, status, source_account_id, destination_account_id,
                               amount, currency, initiated_by, created_at, completed_at, lane)
        SELECT gen_random_uuid(), kind, 'succeeded', source, destination, amount,
               :currency, initiator, at, at, settle_lane(source)
          FROM picked ORDER BY n
        RETURNING id, seq, kind, source_account_id, destination_account_id, amount,
                  initiated_by, completed_at
    ), legs AS (
        SELECT id, seq, source_account_id AS account_id, -amount AS amount, completed_at
          FROM inserted
        UNION ALL
        SELECT id, seq, destination_account_id, amount, completed_at FROM inserted
    ), numbered AS (
        SELECT l.id, l.seq, l.account_id, l.amount, l.completed_at,
               a.last_sequence + row_number() OVER w AS sequence,
               a.balance + sum(l.amount) OVER w AS balance_after
          FROM legs l JOIN accounts a ON a.id = l.account_id
        WINDOW w AS (PARTITION BY l.account_id ORDER BY l.seq)
    ), entries AS (
        INSERT INTO ledger_entries (transfer_id, account_id, amount, currency,
                                    balance_before, balance_after, sequence, created_at)
        SELECT id, account_id, amount, :currency, balance_after - amount, balance_after,
               sequence, completed_at
          FROM numbered ORDER BY seq, amount
        RETURNING id
    ), balances AS (
        UPDATE accounts a SET balance = last.balance_after, last_sequence = last.sequence
          FROM (SELECT DISTINCT ON (account_id) account_id, sequence, balance_after
                  FROM numbered ORDER BY account_id, sequence DESC) last
         WHERE a.id = last.account_id
        RETURNING a.id
    ), audited AS (
        INSERT INTO audit_events (occurred_at, event_type, actor_id, subject_type,
                                  subject_id, request_id, data)
        SELECT i.completed_at, e.event_type, i.initiated_by, 'transfer', i.id::text,
               CASE WHEN e.step = 1 THEN 'gen-' || i.seq END,
               jsonb_build_object('kind', i.kind, 'amount', i.amount, 'currency', :currency,
                                  'source_account_id', i.source_account_id,
                                  'destination_account_id', i.destination_account_id)
               || CASE WHEN e.step = 1 THEN jsonb_build_object('batch_id', NULL)
                       ELSE jsonb_build_object('failure_code', NULL) END
          FROM inserted i
         CROSS JOIN (VALUES (1, 'transfer.accepted'), (2, 'transfer.succeeded'))
               AS e(step, event_type)
         ORDER BY i.seq, e.step
        RETURNING id
    )
    SELECT (SELECT count(*) FROM inserted) AS transfers,
           (SELECT count(*) FROM entries) AS entries,
           (SELECT count(*) FROM balances) AS accounts,
           (SELECT count(*) FROM audited) AS audit_events
    """
)


def _log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def _customers_and_accounts(engine: Engine, accounts: int) -> tuple[list[str], list[str], str]:
    """Creates the people and accounts; returns account ids, their owners, the operator."""
    customers = -(-accounts // ACCOUNTS_PER_CUSTOMER)
    password = hash_password(secrets.token_urlsafe(24))  # nobody is meant to log in
    numbers: set[str] = set()
    while len(numbers) < accounts:
        numbers.add(new_account_number())
    tag = secrets.token_hex(3)
    with engine.begin() as conn:
        operator = str(uuid.uuid4())
        conn.execute(
            text(
                "INSERT INTO users (id, email, password_hash, role)"
                " VALUES (:id, :email, :pw, 'operator')"
            ),
            {"id": operator, "email": f"gen-{tag}-operator@example.com", "pw": password},
        )
        owners = [str(uuid.uuid4()) for _ in range(customers)]
        conn.execute(
            text(
                "INSERT INTO users (id, email, password_hash, role)"
                " SELECT u.id, 'gen-' || :tag || '-' || u.n || '@example.com', :pw, 'customer'"
                " FROM unnest(CAST(:ids AS uuid[])) WITH ORDINALITY AS u(id, n)"
            ),
            {"ids": owners, "tag": tag, "pw": password},
        )
        ids = [str(uuid.uuid4()) for _ in range(accounts)]
        account_owners = [owners[i // ACCOUNTS_PER_CUSTOMER] for i in range(accounts)]
        conn.execute(
            text(
                "INSERT INTO accounts (id, number, owner_id, kind, currency, name, status)"
                " SELECT a.id, a.number, a.owner, 'customer', :currency, 'Generated', 'active'"
                " FROM unnest(CAST(:ids AS uuid[]), CAST(:numbers AS text[]),"
                " CAST(:owners AS uuid[])) AS a(id, number, owner)"
            ),
            {
                "ids": ids,
                "numbers": sorted(numbers),
                "owners": account_owners,
                "currency": CURRENCY,
            },
        )
    return ids, account_owners, operator


def _write_chunk(engine: Engine, rows: list[tuple[str, str, str, int, str, datetime]]) -> None:
    columns = list(zip(*rows, strict=True))
    with engine.begin() as conn:
        counts = conn.execute(
            _CHUNK,
            {
                "kinds": list(columns[0]),
                "sources": list(columns[1]),
                "destinations": list(columns[2]),
                "amounts": list(columns[3]),
                "initiators": list(columns[4]),
                "at": list(columns[5]),
                "currency": CURRENCY,
            },
        ).one()
    if counts.transfers != len(rows) or counts.entries != 2 * len(rows):
        raise RuntimeError(f"chunk wrote {counts._mapping}, expected {len(rows)} transfers")


def generate(
    engine: Engine, *, accounts: int, transfers: int, chunk: int, seed: int
) -> dict[str, int]:
    with engine.connect() as conn:
        if conn.execute(text("SELECT EXISTS (SELECT 1 FROM ledger_entries)")).scalar_one():
            raise SystemExit("ledger_gen: the database already has ledger entries; use a fresh one")
    factory = make_session_factory(engine)
    with unit_of_work(factory) as uow:
        settlement = str(
            accounts_service.settlement_account(session=uow.session, currency=CURRENCY).id
        )
    ids, owners, operator = _customers_and_accounts(engine, accounts)
    _log(f"{accounts} accounts of {len(set(owners))} customers")

    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=30)
    step = timedelta(days=29) / max(1, accounts + transfers)
    # Deposits first (every account funded once), then random transfers.
    plan: list[tuple[str, str, str, int, str, datetime]] = [
        ("deposit", settlement, account, DEPOSIT, operator, start + n * step)
        for n, account in enumerate(ids)
    ]
    written = 0
    began = time.monotonic()
    for n in range(transfers):
        source, destination = rng.sample(range(accounts), 2)
        at = start + (accounts + n) * step
        plan.append(
            (
                "transfer",
                ids[source],
                ids[destination],
                rng.randint(1, MAX_AMOUNT),
                owners[source],
                at,
            )
        )
        if len(plan) >= chunk:
            _write_chunk(engine, plan)
            written += len(plan)
            plan = []
            _log(f"{written} transfers, {2 * written} entries ({time.monotonic() - began:.0f} s)")
    if plan:
        _write_chunk(engine, plan)
        written += len(plan)
    _log(
        f"{written} transfers written in {time.monotonic() - began:.0f} s; sealing the audit chain"
    )
    sealed = _seal_everything(engine)
    return {
        "accounts": accounts + 1,
        "transfers": written,
        "entries": 2 * written,
        "sealed": sealed,
    }


def _seal_everything(engine: Engine) -> int:
    keys = get_settings().audit_keyring
    factory = make_session_factory(engine)
    began, total = time.monotonic(), 0
    while True:
        with unit_of_work(factory) as uow:
            sealed = audit.seal(uow.session, keys=keys, limit=SEAL_BATCH)
        if sealed == 0:
            return total
        total += sealed
        if total % 200_000 < SEAL_BATCH:
            _log(f"{total} audit events sealed ({time.monotonic() - began:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger_gen", description=__doc__)
    parser.add_argument("--accounts", type=int, default=10_000, help="customer accounts")
    parser.add_argument(
        "--transfers", type=int, default=500_000, help="transfers between them (2 entries each)"
    )
    parser.add_argument("--chunk", type=int, default=25_000, help="transfers per transaction")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--server",
        metavar="URL",
        help="a superuser URL: create (and migrate) a database of its own there first",
    )
    parser.add_argument("--drop", metavar="NAME", help="with --server: drop a generated database")
    args = parser.parse_args(argv)
    if args.accounts < 2 or args.transfers < 0 or args.chunk < 1:
        parser.error("need at least 2 accounts, no negative transfers, a positive chunk")
    if args.drop:
        if not args.server:
            parser.error("--drop needs --server")
        drop_database(args.server, args.drop)
        print(f"dropped {args.drop} and its roles")
        return 0

    url = get_settings().database_url
    if args.server:
        name, roles = create_database(args.server, prefix="settle_ledger")
        migrate(owner_url=roles.owner_url, app_url=roles.app_url)
        url = roles.app_url
        print(f"created database {name}; to use it:")
        print(f"  export DATABASE_URL='{roles.app_url}'")
        print(f"  export SETTLE_MIGRATION_DATABASE_URL='{roles.owner_url}'")
        print(f"  drop it: python -m bench.ledger_gen --drop {name} --server URL", flush=True)
    if not url:
        parser.error("set DATABASE_URL (the app role of a migrated, empty database) or --server")
    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        totals = generate(
            engine,
            accounts=args.accounts,
            transfers=args.transfers,
            chunk=args.chunk,
            seed=args.seed,
        )
    finally:
        engine.dispose()
    _log(f"done: {totals}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
