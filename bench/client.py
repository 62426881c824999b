"""The load generator's HTTP side: one aiohttp session over a few keep-alive
connections, the bench's users and accounts, and request bodies.

The client runs on the machine it measures, so every microsecond it spends per request
is taken from Settle. aiohttp (a C response parser) costs about a tenth of httpx's CPU
per request; on top of that the hot path does as little as it can: URLs are built once,
bodies serialised before the clock starts, headers are small prebuilt dicts, and there
is no cookie jar. The report
prints the bench process's CPU share so a saturated client is never mistaken for a slow
server.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from domain.db import make_engine, make_session_factory
from domain.services import users
from domain.uow import unit_of_work

PASSWORD = "benchmark password 1"
CURRENCY = "USD"
FUNDS = 1_000_000
HOT_SOURCE_FUNDS = 100_000_000
TIMEOUT_SECONDS = 60
# Idle keep-alive connections are closed by the client before uvicorn's 5 s keep-alive
# timeout closes them, so a request is never sent on a connection the server is closing
# (a POST is not retried on a stale connection).
KEEPALIVE_SECONDS = 3.0
JSON = "application/json"


class BenchError(Exception):
    """A failed HTTP call, a transfer that never settled: the run is not trustworthy."""


class TransportError(BenchError):
    """No HTTP answer at all: refused or reset connection, timeout."""


@dataclass(frozen=True, slots=True)
class Response:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass
class Accounts:
    ids: list[str]
    numbers: list[str]
    hot_destination: int = 0  # index of the account every hot-destination transfer pays
    hot_source: int = 1  # index of the account that pays every hot-source transfer


@dataclass
class Api:
    session: aiohttp.ClientSession
    base_url: str
    customer: dict[str, str] = field(default_factory=dict)
    operator: dict[str, str] = field(default_factory=dict)
    customer_id: str = ""
    _urls: dict[str, URL] = field(default_factory=dict, repr=False)
    # Customer's and operator's headers for money POSTs, less the Idempotency-Key.
    _money_headers: dict[bool, dict[str, str]] = field(default_factory=dict, repr=False)

    def url(self, path: str) -> URL:
        """Absolute URL of a path; built once per distinct path, so pass fixed paths."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self.base_url + path)
        return url

    async def request(
        self,
        method: str,
        url: URL,
        headers: dict[str, str],
        data: bytes | None = None,
    ) -> Response:
        try:
            async with self.session.request(method, url, data=data, headers=headers) as answer:
                return Response(answer.status, await answer.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportError(f"{method} {url.path}: {exc!r}") from exc

    async def post(self, path: str, body: Any, headers: dict[str, str]) -> Response:
        data = encode(body)
        return await self.request("POST", self.url(path), {**headers, "Content-Type": JSON}, data)

    async def get(self, path: str, headers: dict[str, str]) -> Response:
        return await self.request("GET", URL(self.base_url + path), headers)

    async def delete(self, path: str, headers: dict[str, str]) -> Response:
        return await self.request("DELETE", URL(self.base_url + path), headers)

    def sign_as(self, customer: dict[str, str], operator: dict[str, str]) -> None:
        self.customer, self.operator = customer, operator
        self._money_headers = {
            False: {**customer, "Content-Type": JSON},
            True: {**operator, "Content-Type": JSON},
        }

    async def money(self, path: str, body: Any, *, operator: bool = False) -> Response:
        """POST with a fresh Idempotency-Key; `body` may be pre-serialised bytes."""
        headers = self._money_headers[operator].copy()  # one small dict: the key varies
        # Random keys, as real clients send them (the server indexes them).
        headers["Idempotency-Key"] = str(uuid.uuid4())
        data = body if isinstance(body, bytes) else encode(body)
        return await self.request("POST", self.url(path), headers, data)


def open_client(connections: int) -> aiohttp.ClientSession:
    """One session, at most `connections` keep-alive connections (requests beyond that
    wait for a free one)."""
    connector = aiohttp.TCPConnector(
        limit=connections, limit_per_host=connections, keepalive_timeout=KEEPALIVE_SECONDS
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
        cookie_jar=aiohttp.DummyCookieJar(),  # Settle sets no cookies
    )


def encode(body: Any) -> bytes:
    """A request body as sent; scenarios serialise theirs before the clock starts."""
    return json.dumps(body, separators=(",", ":")).encode()


def transfer_body(accounts: Accounts, source: int, destination: int) -> dict[str, Any]:
    return {
        "source_account_id": accounts.ids[source],
        "destination_account_number": accounts.numbers[destination],
        "amount": 1,
        "currency": CURRENCY,
    }


def expect(response: Response, status: int, what: str) -> dict[str, Any]:
    if response.status_code != status:
        raise BenchError(f"{what}: HTTP {response.status_code} {response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body


def _make_operator(database_url: str) -> str:
    """Operators cannot be registered over the API; the CLI's way, in process."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with unit_of_work(make_session_factory(engine)) as uow:
            user = users.register(
                session=uow.session,
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
    customer = await _login(api, email)
    operator = await _login(api, await asyncio.to_thread(_make_operator, database_url))
    api.sign_as(customer, operator)


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
