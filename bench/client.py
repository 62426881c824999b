"""The load generator's HTTP side: one asyncio httpx client over a few keep-alive
connections, the bench's users and accounts, and request bodies.

asyncio keeps the generator to a fraction of one core at the rates Settle reaches
on a small machine; the report prints the bench process's CPU share so a saturated
client is never mistaken for a slow server.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from domain.db import make_engine, make_session_factory, transaction
from domain.services import users

PASSWORD = "benchmark password 1"
CURRENCY = "USD"
FUNDS = 1_000_000
HOT_SOURCE_FUNDS = 100_000_000


class BenchError(Exception):
    """A failed HTTP call, a transfer that never settled: the run is not trustworthy."""


@dataclass
class Accounts:
    ids: list[str]
    numbers: list[str]
    hot_destination: int = 0  # index of the account every hot-destination transfer pays
    hot_source: int = 1  # index of the account that pays every hot-source transfer


@dataclass
class Api:
    client: httpx.AsyncClient
    customer: dict[str, str] = field(default_factory=dict)
    operator: dict[str, str] = field(default_factory=dict)
    customer_id: str = ""

    async def post(self, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
        return await self.client.post(path, json=body, headers=headers)

    async def money(self, path: str, body: Any, *, operator: bool = False) -> httpx.Response:
        auth = self.operator if operator else self.customer
        return await self.post(path, body, {**auth, "Idempotency-Key": str(uuid.uuid4())})


def open_client(base_url: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60)


def transfer_body(accounts: Accounts, source: int, destination: int) -> dict[str, Any]:
    return {
        "source_account_id": accounts.ids[source],
        "destination_account_number": accounts.numbers[destination],
        "amount": 1,
        "currency": CURRENCY,
    }


def expect(response: httpx.Response, status: int, what: str) -> dict[str, Any]:
    if response.status_code != status:
        raise BenchError(f"{what}: HTTP {response.status_code} {response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body


def _make_operator(database_url: str) -> str:
    """Operators cannot be registered over the API; the CLI's way, in process."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with transaction(make_session_factory(engine)) as session:
            user = users.register(
                session=session,
                cmd=users.RegisterUser(
                    email=f"op-{secrets.token_hex(4)}@bench.example",
                    password=PASSWORD,
                    role="operator",
                ),
            )
            return user.email
    finally:
        engine.dispose()


async def _login(api: Api, email: str) -> dict[str, str]:
    body = expect(
        await api.post("/v1/auth/token", {"email": email, "password": PASSWORD}, {}),
        200,
        "login",
    )
    return {"Authorization": f"Bearer {body['access_token']}"}


async def sign_in(api: Api, database_url: str) -> None:
    email = f"customer-{secrets.token_hex(4)}@bench.example"
    registered = expect(
        await api.post("/v1/auth/register", {"email": email, "password": PASSWORD}, {}),
        201,
        "register",
    )
    api.customer_id = str(registered["id"])
    api.customer = await _login(api, email)
    api.operator = await _login(api, await asyncio.to_thread(_make_operator, database_url))


async def open_funded_accounts(api: Api, count: int, concurrency: int) -> Accounts:
    """`count` customer accounts, each funded by an operator deposit (the hot source
    with far more, so it can pay a whole scenario). Returns once the requests were
    accepted; the caller waits for the deposits to settle."""
    gate = asyncio.Semaphore(concurrency)

    async def open_one(index: int) -> tuple[str, str]:
        async with gate:
            account = expect(
                await api.post("/v1/accounts", {"currency": CURRENCY}, api.customer),
                201,
                "open account",
            )
            funds = HOT_SOURCE_FUNDS if index == 1 else FUNDS
            body = {"account_id": account["id"], "amount": funds, "currency": CURRENCY}
            expect(await api.money("/v1/deposits", body, operator=True), 202, "deposit")
            return str(account["id"]), str(account["number"])

    opened = await asyncio.gather(*(open_one(i) for i in range(count)))
    return Accounts(ids=[a for a, _ in opened], numbers=[n for _, n in opened])
