"""A real local HTTP server that receives webhooks, for tests; scripted per request.
With `tls`, it answers HTTPS (HTTP/1.1, connections kept alive) on `address`."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    # Status codes to answer, in order; once used up, `default_status`.
    script: list[int] = field(default_factory=list)
    default_status: int = 200
    delay_seconds: float = 0.0
    redirect_to: str | None = None

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"received {len(self.requests)} of {count} requests")
            time.sleep(0.02)
        return self.requests


@contextmanager
def running_receiver(
    *, tls: ssl.SSLContext | None = None, address: str = "127.0.0.1", host: str | None = None
) -> Iterator[Receiver]:
    """`host`: the name in the receiver's URL (default: the address)."""
    lock = threading.Lock()
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        if tls is not None:
            protocol_version = "HTTP/1.1"  # keeps the connection open between requests

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with lock:
                receiver.requests.append(
                    Received(
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        time.monotonic(),
                    )
                )
                status = receiver.script.pop(0) if receiver.script else receiver.default_status
            if receiver.delay_seconds:
                time.sleep(receiver.delay_seconds)
            self.send_response(status)
            if receiver.redirect_to and 300 <= status < 400:
                self.send_header("Location", receiver.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in address else socket.AF_INET

    server = Server((address, 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    name = host or (f"[{address}]" if ":" in address else address)
    receiver = Receiver(url=f"{scheme}://{name}:{server.server_address[1]}/hooks")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
