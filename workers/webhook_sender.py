"""Sends one webhook attempt over HTTP, Standard Webhooks style, SSRF-safe.

The URL is resolved and vetted again here, and the connection goes to exactly the
vetted address (the Host header and TLS SNI keep the original name), so a DNS answer
that changed since registration cannot point Settle at an internal service.
Redirects are not followed: a 3xx is a failed attempt.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import OrderedDict
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx

from domain.errors import InvalidRequest
from domain.services.webhooks import AttemptOutcome, AttemptPlan, WebhookPolicy
from domain.webhook_signing import signature_header
from domain.webhook_urls import resolve

USER_AGENT = "Settle-Webhooks/1.0"
CLIENTS_PER_THREAD = 64
# What a failed attempt can raise: httpcore's network, timeout and protocol errors (a TLS
# failure is a ConnectError), named in the attempt's error as before.
_SEND_ERRORS = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
)

_local = threading.local()
_tls_lock = threading.Lock()
_tls_context: ssl.SSLContext | None = None


def _shared_tls_context() -> ssl.SSLContext:
    """One TLS context (the CA bundle, verification on) for every client of the process.

    Loading the CA bundle is most of what building an httpx client costs (~13 ms of CPU
    here): per client and thread, the first deliveries of a busy webhooks worker (32
    threads) spent a burst of CPU that stalled the whole machine for a few hundred ms.
    An SSLContext may be shared by any number of connections and threads.
    """
    global _tls_context
    with _tls_lock:
        if _tls_context is None:
            _tls_context = httpx.create_ssl_context()
        return _tls_context


def _client_for(target: tuple[str, str, str, int]) -> httpcore.ConnectionPool:
    """A kept-alive connection pool per (scheme, host name, vetted address, port) and thread.

    httpcore, the transport under httpx, used directly: httpx's client layer (URL and
    header models, cookies, auth, redirect handling, none of which a webhook needs) was
    about a fifth of the webhooks worker's CPU. httpcore never follows redirects and
    reads no proxy settings from the environment.

    Pools are reused (a kept-alive connection saves a handshake per delivery); keyed by
    the host *name* too, so a pooled TLS connection verified for one name is never
    reused for another name on the same address.
    Least recently used pools are closed past CLIENTS_PER_THREAD.
    """
    clients: OrderedDict[tuple[str, str, str, int], httpcore.ConnectionPool] | None = getattr(
        _local, "clients", None
    )
    if clients is None:
        clients = _local.clients = OrderedDict()
    client = clients.get(target)
    if client is None:
        # One sender per thread and target: one connection is all it uses.
        client = httpcore.ConnectionPool(
            ssl_context=_shared_tls_context(), max_connections=1, keepalive_expiry=5.0
        )
        clients[target] = client
        if len(clients) > CLIENTS_PER_THREAD:
            clients.popitem(last=False)[1].close()
    clients.move_to_end(target)
    return client


def send(plan: AttemptPlan, *, policy: WebhookPolicy, timeout: float) -> AttemptOutcome:
    started = time.monotonic()

    def outcome(status: int | None, error: str | None) -> AttemptOutcome:
        return AttemptOutcome(status, error, int((time.monotonic() - started) * 1000))

    try:
        target = resolve(
            plan.url, allow_private=policy.allow_private, allowed_ports=policy.allowed_ports
        )
    except InvalidRequest as exc:
        return outcome(None, exc.detail)
    address = target.addresses[0]
    parts = urlsplit(plan.url)
    literal = f"[{address}]" if address.version == 6 else str(address)
    pinned = urlunsplit(
        (parts.scheme, f"{literal}:{target.port}", parts.path or "/", parts.query, "")
    )
    default_port = 443 if parts.scheme == "https" else 80
    host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
    timestamp = int(time.time())
    headers: dict[bytes | str, bytes | str] = {
        "host": host_header,
        "content-type": "application/json",
        "content-length": str(len(plan.body)),
        "user-agent": USER_AGENT,
        "webhook-id": plan.msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(
            plan.secrets, msg_id=plan.msg_id, timestamp=timestamp, body=plan.body
        ),
    }
    extensions: dict[str, object] = {
        "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
    }
    if parts.scheme == "https":
        # TLS to the vetted address, verified for the host *name* (SNI and certificate).
        extensions["sni_hostname"] = target.host
    try:
        client = _client_for((parts.scheme, target.host, str(address), target.port))
        response = client.request(
            "POST", pinned, headers=headers, content=plan.body, extensions=extensions
        )
    except _SEND_ERRORS as exc:
        return outcome(None, f"{type(exc).__name__}: {exc}"[:500])
    code = response.status
    return outcome(code, None if 200 <= code < 300 else f"HTTP {code}")
