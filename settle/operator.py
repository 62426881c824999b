"""What the `settle` CLI needs around the ledger: finding the running stack, probing its
processes, and acting as an operator through the gateway's API.

The commands that only read (status, accounts find, transfers show, verify) go to the
database directly, as the app role of DATABASE_URL. The commands that change something
on someone's behalf (deposit, webhooks redeliver) log in as an operator and call the
API, so they pass the same checks as any operator request: role, separation of duties,
four eyes, rate limits, lockout, audit with the operator as actor.

Every way of finding nothing raises `NothingRunning` with a message that says what to
start or set, checked before any password is asked for.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import Engine, make_url, text
from sqlalchemy.exc import ArgumentError, OperationalError

from domain.db import make_engine
from settle.broker import (
    TRANSFERS_QUEUE,
    WEBHOOKS_QUEUE,
    celery_config,
    redis_client,
    redis_client_name,
)
from settle.config import RUN_ENV_FILE, Settings

START_HINT = "start `make run` in another terminal (in this checkout)"
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=3.0)


class NothingRunning(Exception):
    """The stack (or the part a command needs) cannot be reached; the message says why."""


class ApiRefused(Exception):
    """The gateway answered with a problem; `str()` is its detail and code."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status, self.problem = status, problem
        detail = problem.get("detail") or problem.get("title") or f"HTTP {status}"
        super().__init__(f"{detail} ({problem.get('code', status)})")


def _where_urls_come_from() -> str:
    if Path(RUN_ENV_FILE).exists():
        return f"{RUN_ENV_FILE}, written by `make run`"
    return "the environment or .env"


def database_engine(
    settings: Settings, *, connections: int = 1, application_name: str = "settle-cli"
) -> Engine:
    """An engine whose database answered a first query; NothingRunning otherwise."""
    if not settings.database_url:
        raise NothingRunning(
            "no Settle to talk to: DATABASE_URL is not set, and no `make run` is running in "
            f"this directory (it writes {RUN_ENV_FILE} while it runs). Either {START_HINT}, "
            "or set DATABASE_URL (and REDIS_URL) to a running deployment's"
        )
    try:
        url = make_url(settings.database_url)
    except ArgumentError as exc:
        raise NothingRunning(f"DATABASE_URL is not a database URL: {exc}") from exc
    where = url.host or url.query.get("host") or "its unix socket"
    engine = make_engine(
        settings.database_url,
        pool_size=connections,
        max_overflow=0,
        application_name=application_name,
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise NothingRunning(
            f"cannot reach PostgreSQL at {where}{':' + str(url.port) if url.port else ''} "
            f"({reason}). DATABASE_URL comes from {_where_urls_come_from()}: {START_HINT}, "
            "or point DATABASE_URL at a running database"
        ) from exc
    return engine


def reachable_host(bound: str) -> str:
    """Where to reach a server bound to `bound` from this machine: a server bound to
    every interface is reached on loopback."""
    return "127.0.0.1" if bound in ("0.0.0.0", "::", "") else bound  # noqa: S104  # nosec B104


def api_url(settings: Settings, override: str | None = None) -> str:
    if override:
        return override.rstrip("/")
    return f"http://{reachable_host(settings.http_host)}:{settings.http_port}"


def require_gateway(api: str) -> None:
    """NothingRunning unless the gateway at `api` says it is ready."""
    try:
        response = httpx.get(f"{api}/readyz", timeout=HTTP_TIMEOUT)
    except httpx.HTTPError as exc:
        raise NothingRunning(
            f"no Settle gateway answers at {api} ({exc.__class__.__name__}: {exc}). "
            f"{START_HINT}, or pass --api with the gateway's URL"
        ) from exc
    if response.status_code != 200:
        raise NothingRunning(
            f"the gateway at {api} is not ready (GET /readyz answered {response.status_code}: "
            f"{response.text[:200]}); see `make run`'s output"
        )


@dataclass
class OperatorClient:
    """The API, logged in as one operator (POST /v1/auth/token)."""

    api: str
    token: str

    @classmethod
    def login(cls, api: str, email: str, password: str) -> OperatorClient:
        body = _call("POST", f"{api}/v1/auth/token", json={"email": email, "password": password})
        return cls(api=api, token=str(body["access_token"]))

    def _headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **extra}

    def deposit(
        self,
        *,
        account_id: str,
        amount: int,
        currency: str,
        description: str | None,
        idempotency_key: str,
    ) -> tuple[str, dict[str, Any]]:
        """(Location, body): a transfer, or an approval when four eyes are needed."""
        payload: dict[str, Any] = {"account_id": account_id, "amount": amount, "currency": currency}
        if description:
            payload["description"] = description
        response = _request(
            "POST",
            f"{self.api}/v1/deposits",
            json=payload,
            headers=self._headers(**{"Idempotency-Key": idempotency_key}),
        )
        return response.headers.get("location", ""), response.json()

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return _call("GET", f"{self.api}{path}", params=params, headers=self._headers())

    def redeliver(self, delivery_id: str) -> dict[str, Any]:
        return _call(
            "POST",
            f"{self.api}/v1/admin/webhook-deliveries/{delivery_id}/redeliver",
            headers=self._headers(),
        )


def _request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    timeout = httpx.Timeout(45.0, connect=3.0) if "wait" in kwargs.get("params", {}) else None
    try:
        response = httpx.request(method, url, timeout=timeout or HTTP_TIMEOUT, **kwargs)
    except httpx.HTTPError as exc:
        raise NothingRunning(
            f"the gateway stopped answering ({exc}); is `make run` still up?"
        ) from exc
    if response.status_code >= 400:
        try:
            problem = response.json()
        except ValueError:
            problem = {"detail": response.text[:200]}
        raise ApiRefused(response.status_code, problem if isinstance(problem, dict) else {})
    return response


def _call(method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    body = _request(method, url, **kwargs).json()
    return body if isinstance(body, dict) else {"data": body}


@dataclass(frozen=True)
class Processes:
    gateway: str  # "ready", or why not
    workers: list[str]  # the names of the Celery workers that answered a ping
    flower: str
    redis: str
    queued: dict[str, int]  # messages waiting per queue


def probe_processes(settings: Settings, api: str) -> Processes:
    """Ask each process whether it is there; never raises for one that is not."""
    try:
        ready = httpx.get(f"{api}/readyz", timeout=httpx.Timeout(3.0))
        gateway = "ready" if ready.status_code == 200 else f"not ready ({ready.status_code})"
    except httpx.HTTPError as exc:
        gateway = f"not answering ({exc.__class__.__name__})"
    redis_state, queued = _redis_state(settings)
    workers: list[str] = []
    if redis_state == "ok":
        workers = _ping_workers(settings)
    return Processes(
        gateway=gateway,
        workers=workers,
        flower=_listening(settings.flower_address, settings.flower_port),
        redis=redis_state,
        queued=queued,
    )


def _redis_state(settings: Settings) -> tuple[str, dict[str, int]]:
    if not settings.redis_url:
        return "REDIS_URL is not set", {}
    client = redis_client(settings, name=redis_client_name("cli"))
    try:
        queued = {
            queue: int(client.llen(f"{settings.redis_prefix}{queue}"))
            for queue in (TRANSFERS_QUEUE, WEBHOOKS_QUEUE)
        }
        return "ok", queued
    except (redis.RedisError, OSError) as exc:
        return f"unreachable ({exc.__class__.__name__})", {}
    finally:
        client.close()


def _ping_workers(settings: Settings) -> list[str]:
    from celery import Celery  # heavy: only `settle status` pings

    app = Celery("settle-cli", set_as_current=False)
    app.conf.update(celery_config(settings, client_name="settle-cli"))
    try:
        replies = app.control.ping(timeout=1.0) or []
    except Exception:  # a broker hiccup: report "no answer", not a traceback
        return []
    finally:
        app.close()
    return sorted(name for reply in replies for name in reply)


def _listening(host: str, port: int) -> str:
    address = reachable_host(host)
    try:
        with socket.create_connection((address, port), timeout=1.0):
            return f"listening on http://{address}:{port}"
    except OSError:
        return f"not listening on {address}:{port}"
