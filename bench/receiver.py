"""A local webhook receiver that records when each transfer's event arrived.

Deliberately minimal (it answers 204 to everything and does not verify signatures):
the figure is commit → receipt, and verification is the consumer's cost, not
Settle's. The tests have their own scriptable receiver (tests/receiver.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Receipts:
    """First receipt per transfer id: (wall-clock receipt time, transfer completed_at)."""

    url: str
    first: dict[str, tuple[float, float]] = field(default_factory=dict)
    requests: int = 0
    malformed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, body: bytes, received_at: float) -> None:
        try:
            transfer = json.loads(body)["data"]["transfer"]
            completed = datetime.fromisoformat(transfer["completed_at"]).timestamp()
            transfer_id = str(transfer["id"])
        except (ValueError, KeyError, TypeError):
            with self.lock:
                self.requests += 1
                self.malformed += 1
            return
        with self.lock:
            self.requests += 1
            # Delivery is at least once; the first arrival is the one a consumer acts on.
            self.first.setdefault(transfer_id, (received_at, completed))


@contextmanager
def running_receiver() -> Iterator[Receipts]:
    receipts: Receipts

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real consumer would

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            receipts.record(body, time.time())
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receipts = Receipts(url=f"http://127.0.0.1:{server.server_address[1]}/settle-webhooks")
    thread = threading.Thread(target=server.serve_forever, name="bench-receiver", daemon=True)
    thread.start()
    try:
        yield receipts
    finally:
        server.shutdown()
        server.server_close()
