"""End-to-end throughput: settled transfers per second, HTTP submit to terminal state,
next to what the same PostgreSQL does with direct SQL transfers, in one run.

    make bench            # or: .venv/bin/python -m bench.throughput --transfers 2000

Uses DATABASE_URL / REDIS_URL when set, else embedded servers in a temp dir; always
in a fresh database that is dropped afterwards. Figures are only comparable within
one run (the ratio), never across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg2
from sqlalchemy import create_engine, make_url, text

from domain.db import make_engine, make_session_factory, transaction
from domain.migrate import upgrade
from domain.services import users
from settle.devservices import start_missing_services, stop_all
from tests.processes import Process, running_gateway, worker_args

PASSWORD = "benchmark password 1"


def _fresh_database(server_url: str) -> tuple[str, str]:
    name = f"settle_bench_{secrets.token_hex(4)}"
    admin = create_engine(
        make_url(server_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, make_url(server_url).set(database=name).render_as_string(hide_password=False)


def _drop_database(server_url: str, name: str) -> None:
    admin = create_engine(
        make_url(server_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _pending(database_url: str) -> int:
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    with engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM transfers WHERE status = 'pending'"))
        value = int(count.scalar_one())
    engine.dispose()
    return value


def _wait_settled(database_url: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while _pending(database_url):
        if time.monotonic() > deadline:
            raise RuntimeError("transfers still pending")
        time.sleep(0.05)


class Bench:
    def __init__(self, base_url: str, database_url: str, clients: int) -> None:
        self.base_url, self.database_url, self.clients = base_url, database_url, clients
        factory = make_session_factory(make_engine(database_url, pool_size=1, max_overflow=0))
        with transaction(factory) as session:
            operator = users.register(
                session=session,
                cmd=users.RegisterUser(
                    email=f"op-{secrets.token_hex(4)}@bench.example",
                    password=PASSWORD,
                    role="operator",
                ),
            )
            customer = users.register(
                session=session,
                cmd=users.RegisterUser(
                    email=f"c-{secrets.token_hex(4)}@bench.example", password=PASSWORD
                ),
            )
        self.api = httpx.Client(base_url=base_url, timeout=60)
        self.submit_seconds: list[float] = []  # time until the last 202, per run
        self.operator = self._login(operator.email)
        self.customer = self._login(customer.email)

    def _login(self, email: str) -> dict[str, str]:
        token = self.api.post("/v1/auth/token", json={"email": email, "password": PASSWORD})
        return {"Authorization": f"Bearer {token.json()['access_token']}"}

    def open_funded_accounts(self, count: int, funds: int) -> list[dict[str, Any]]:
        def open_one(_: int) -> dict[str, Any]:
            with httpx.Client(base_url=self.base_url, timeout=60) as api:
                account: dict[str, Any] = api.post(
                    "/v1/accounts", json={"currency": "USD"}, headers=self.customer
                ).json()
                api.post(
                    "/v1/deposits",
                    json={"account_id": account["id"], "amount": funds, "currency": "USD"},
                    headers={**self.operator, "Idempotency-Key": str(uuid.uuid4())},
                )
                return account

        with ThreadPoolExecutor(self.clients) as pool:
            accounts = list(pool.map(open_one, range(count)))
        _wait_settled(self.database_url)
        return accounts

    def run(self, pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> float:
        """Submit every (source, destination) transfer over HTTP; seconds until all settled."""
        chunks = [pairs[i :: self.clients] for i in range(self.clients)]

        def submit(chunk: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
            with httpx.Client(base_url=self.base_url, timeout=60) as api:
                for source, destination in chunk:
                    response = api.post(
                        "/v1/transfers",
                        json={
                            "source_account_id": source["id"],
                            "destination_account_number": destination["number"],
                            "amount": 1,
                            "currency": "USD",
                        },
                        headers={**self.customer, "Idempotency-Key": str(uuid.uuid4())},
                    )
                    assert response.status_code == 202, response.text

        started = time.monotonic()
        with ThreadPoolExecutor(self.clients) as pool:
            list(pool.map(submit, chunks))
        self.submit_seconds.append(time.monotonic() - started)
        _wait_settled(self.database_url)
        return time.monotonic() - started


def direct_sql(database_url: str, pairs: list[tuple[str, str]], threads: int) -> float:
    """The same ledger writes (locks in id order, transfer row, two entries, balances,
    all triggers active), one transfer per transaction, with no gateway or broker."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM users LIMIT 1")
        initiator = cur.fetchone()[0]
    chunks = [pairs[i::threads] for i in range(threads)]

    def worker(chunk: list[tuple[str, str]]) -> None:
        conn = psycopg2.connect(dsn)
        cur = conn.cursor()
        for source, destination in chunk:
            cur.execute(
                "SELECT id, balance, last_sequence FROM accounts WHERE id IN (%s, %s) "
                "ORDER BY id FOR NO KEY UPDATE",
                (source, destination),
            )
            state = {str(row[0]): (row[1], row[2]) for row in cur.fetchall()}
            transfer_id = str(uuid.uuid4())
            cur.execute(
                "INSERT INTO transfers (id, kind, status, source_account_id, "
                "destination_account_id, amount, currency, initiated_by, completed_at) "
                "VALUES (%s, 'transfer', 'succeeded', %s, %s, 1, 'USD', %s, now())",
                (transfer_id, source, destination, initiator),
            )
            for account, amount in ((source, -1), (destination, 1)):
                balance, sequence = state[account]
                cur.execute(
                    "INSERT INTO ledger_entries (transfer_id, account_id, amount, currency, "
                    "balance_before, balance_after, sequence) VALUES (%s,%s,%s,'USD',%s,%s,%s)",
                    (transfer_id, account, amount, balance, balance + amount, sequence + 1),
                )
                cur.execute(
                    "UPDATE accounts SET balance = %s, last_sequence = %s WHERE id = %s",
                    (balance + amount, sequence + 1, account),
                )
            conn.commit()
        conn.close()

    started = time.monotonic()
    workers = [threading.Thread(target=worker, args=(chunk,)) for chunk in chunks]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--transfers", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--worker-concurrency", type=int, default=2)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="settle-bench-"))
    env = dict(os.environ)
    services = start_missing_services(tmp, env)
    name, database_url = _fresh_database(env["DATABASE_URL"])
    try:
        upgrade(database_url)
        env.update(
            DATABASE_URL=database_url,
            SETTLE_ENVIRONMENT="test",
            SETTLE_JWT_SECRET=secrets.token_urlsafe(48),
            SETTLE_WEBHOOK_ENCRYPTION_KEY=secrets.token_urlsafe(48),
            SETTLE_REDIS_PREFIX=f"settle-bench-{secrets.token_hex(3)}:",
            SETTLE_RATE_LIMIT_MONEY_PER_USER="100000000/60",
            SETTLE_RATE_LIMIT_LOGIN_PER_IP="100000/60",
        )
        worker = Process("worker", worker_args(concurrency=args.worker_concurrency), env)
        worker.wait_for_log("ready.")
        try:
            with running_gateway(env) as base_url:
                bench = Bench(base_url, database_url, args.clients)
                accounts = bench.open_funded_accounts(args.accounts, funds=10**6)
                rng = random.Random(1)
                spread = [tuple(rng.sample(accounts, 2)) for _ in range(args.transfers)]
                hot = accounts[0]
                to_hot = [(rng.choice(accounts[1:]), hot) for _ in range(args.transfers)]
                spread_seconds = bench.run(spread)  # type: ignore[arg-type]
                hot_seconds = bench.run(to_hot)
                submit_seconds = bench.submit_seconds
        finally:
            worker.stop()
        ids = [(s["id"], d["id"]) for s, d in spread]
        direct_spread = direct_sql(database_url, ids, args.worker_concurrency)
        hot_ids = [(s["id"], d["id"]) for s, d in to_hot]
        direct_hot = direct_sql(database_url, hot_ids, args.worker_concurrency)
    finally:
        _drop_database(env["DATABASE_URL"], name)
        stop_all(services)
        shutil.rmtree(tmp, ignore_errors=True)

    n = args.transfers
    result = {
        "transfers_per_scenario": n,
        "accounts": args.accounts,
        "http_clients": args.clients,
        "worker_concurrency": args.worker_concurrency,
        "end_to_end_per_second": {"spread": n / spread_seconds, "hot_destination": n / hot_seconds},
        "accepted_per_second": {
            "spread": n / submit_seconds[0],
            "hot_destination": n / submit_seconds[1],
        },
        "direct_sql_per_second": {"spread": n / direct_spread, "hot_destination": n / direct_hot},
        "ratio_end_to_end_over_direct_sql": {
            "spread": direct_spread / spread_seconds,
            "hot_destination": direct_hot / hot_seconds,
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
