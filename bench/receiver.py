"""A local webhook receiver that records when each transfer's event arrived.

Deliberately minimal (it answers 204 to everything and does not verify signatures):
the figure is commit → receipt, and verification is the consumer's cost, not
Settle's. The tests have their own scriptable receiver (tests/receiver.py).

It runs on the bench's event loop as a bare aiohttp server (no routing, no access
log): Settle opens a connection per attempt, and a thread per connection with
http.server's header parsing cost several times the CPU per webhook, taken from the
machine under test.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

from aiohttp import web

PATH = "/settle-webhooks"


@dataclass
class Receipts:
    """First receipt per transfer id: (wall-clock receipt time, transfer completed_at)."""

    url: str = ""
    first: dict[str, tuple[float, float]] = field(default_factory=dict)
    requests: int = 0
    malformed: int = 0

    def record(self, body: bytes, received_at: float) -> None:
        self.requests += 1
        try:
            transfer = json.loads(body)["data"]["transfer"]
            completed = datetime.fromisoformat(transfer["completed_at"]).timestamp()
            transfer_id = str(transfer["id"])
        except (ValueError, KeyError, TypeError):
            self.malformed += 1
            return
        # Delivery is at least once; the first arrival is the one a consumer acts on.
        self.first.setdefault(transfer_id, (received_at, completed))


@asynccontextmanager
async def running_receiver() -> AsyncIterator[Receipts]:
    """Listens on 127.0.0.1 (a free port) while the context is open."""
    receipts = Receipts()

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        receipts.record(body, time.time())
        return web.Response(status=204)

    server = web.Server(handle, access_log=None)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    receipts.url = f"http://127.0.0.1:{port}{PATH}"
    try:
        yield receipts
    finally:
        await runner.cleanup()
