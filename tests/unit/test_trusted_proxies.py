"""X-Forwarded-For is believed only from configured proxies (issue 10, finding 5).

A real uvicorn server runs with the exact Config a gateway process uses
(settle/web.py `gateway_config`) in front of an app that answers with the client
address the gateway keys its rate limits on (gateway/security_events.py
`client_address`). Fails on the old code: its Config set `proxy_headers=True` and
left uvicorn's default of trusting 127.0.0.1, so a loopback client picked its
own identity.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

from gateway.security_events import client_address
from settle.config import Settings
from settle.harness import free_port
from settle.web import gateway_config


def _echo() -> FastAPI:
    app = FastAPI()

    @app.get("/whoami")
    def whoami(request: Request) -> dict[str, str]:
        return {"client": client_address(request)}

    return app


@contextmanager
def _serving(**overrides: object) -> Iterator[str]:
    port = free_port()
    settings = Settings(http_port=port, http_access_log=False, log_level="warning", **overrides)  # type: ignore[arg-type]
    server = uvicorn.Server(gateway_config(settings, app=_echo()))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _whoami(base_url: str) -> str:
    answer = httpx.get(f"{base_url}/whoami", headers={"X-Forwarded-For": "203.0.113.9"})
    client: str = answer.json()["client"]
    return client


def test_a_loopback_client_cannot_choose_its_identity_by_default(monkeypatch):
    # uvicorn's own variable no longer widens trust either.
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    with _serving() as base_url:
        assert _whoami(base_url) == "127.0.0.1"


def test_a_configured_proxy_is_believed():
    with _serving(trusted_proxies=["127.0.0.0/8"]) as base_url:
        assert _whoami(base_url) == "203.0.113.9"


def test_a_proxy_that_is_not_configured_is_not_believed():
    with _serving(trusted_proxies=["10.0.0.2"]) as base_url:
        assert _whoami(base_url) == "127.0.0.1"


def test_malformed_proxy_entries_are_refused_at_start():
    with pytest.raises(ValueError):
        Settings(trusted_proxies=["not-an-address"])
