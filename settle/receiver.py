"""`settle webhooks listen`: a local webhook receiver for trying Settle out.

It prints one line per delivery (event type, the transfer and amount, or the balance
that crossed an alert's threshold; whether the Standard Webhooks signature verifies
with the secret given) and answers 204, or 400 when a
secret is given and the signature does not verify, as a real receiver should. Bound to
loopback only. Settle reaches it in development with SETTLE_WEBHOOK_ALLOW_PRIVATE=true
(see README "Walkthrough"). Not a production receiver: no persistence, no deduplication.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from domain import webhook_signing

# A delivery older than this is refused, as the Standard Webhooks spec recommends.
TOLERANCE_SECONDS = 300


def describe(body: bytes) -> str:
    """One line for a delivery: the event, and what it is about (a transfer or hold, a
    balance that crossed an alert's threshold, a completed batch, a test ping)."""
    try:
        event: dict[str, Any] = json.loads(body)
        kind, data = str(event.get("type")), event.get("data", {})
        head = f"{kind} {event.get('id')}"
        if kind.startswith("balance."):
            return (
                f"{head} account {data.get('account_id')} balance {data.get('balance_before')}"
                f" -> {data.get('balance')} {data.get('currency')}"
                f" (threshold {data.get('threshold')})"
            )
        if kind == "batch.completed":
            return (
                f"{head} batch {data.get('id')} {data.get('item_count')} transfers:"
                f" {data.get('succeeded')} succeeded, {data.get('failed')} failed,"
                f" {data.get('canceled')} canceled"
            )
        if "transfer" in data:
            transfer = data["transfer"]
            return (
                f"{head} transfer {transfer.get('id')} "
                f"{transfer.get('amount')} {transfer.get('currency')} {transfer.get('status')}"
            )
        return head
    except (ValueError, AttributeError, TypeError):
        return f"{len(body)} bytes that are not a Settle event"


def verdict(secret: str | None, headers: Any, body: bytes) -> tuple[bool, str]:
    if not secret:
        return True, "signature not checked (no --secret)"
    try:
        timestamp = int(headers.get("webhook-timestamp", ""))
    except ValueError:
        return False, "no webhook-timestamp"
    if abs(time.time() - timestamp) > TOLERANCE_SECONDS:
        return False, "timestamp too old or in the future"
    ok = webhook_signing.verify(
        secret,
        msg_id=headers.get("webhook-id", ""),
        timestamp=timestamp,
        body=body,
        header=headers.get("webhook-signature", ""),
    )
    return ok, "signature ok" if ok else "signature INVALID"


def listen(*, port: int, secret: str | None, count: int | None, timeout: float | None) -> int:
    """Serve until `count` deliveries arrived (or forever); 1 if `timeout` passes first."""
    received = 0
    done = threading.Event()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            nonlocal received
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            ok, why = verdict(secret, self.headers, body)
            self.send_response(204 if ok else 400)
            self.end_headers()
            with lock:
                print(f"{describe(body)} ({why})", flush=True)
                if ok:
                    received += 1
                    if count is not None and received >= count:
                        done.set()

        def do_GET(self) -> None:
            # So a script can wait until the receiver listens (README walkthrough).
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.end_headers()
            self.wfile.write(b"settle webhooks listen: POST deliveries here\n")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per delivery is printed above

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"listening on http://127.0.0.1:{server.server_port}/", file=sys.stderr, flush=True)
    try:
        finished = done.wait(timeout)
    except KeyboardInterrupt:
        finished = True
    finally:
        server.shutdown()
        server.server_close()
    if not finished:
        print(f"settle: no delivery within {timeout:g} s", file=sys.stderr)
        return 1
    return 0
