"""The audit sealer: a thread of beat's process that seals the audit chain, off the money path.

Sealing (`domain.services.audit.seal`) chains the audit rows of finished transactions:
one transaction that reads them, HMACs each and inserts their seals. It used to run at
the end of a drain, at most every half second per worker process: a drain that
sealed held its lane (and the worker process) for the seal as well, 15 % of the
transfer worker's time when applying batches, and a tail on the latency of whatever
waited behind it. Beat's process is otherwise idle, and there is one per deployment
(standbys too: a second sealer finds the chain head locked and seals nothing).

Every `every_seconds` it seals what is final; a full seal (SEAL_BATCH rows) is followed
by another at once, so a backlog drains at full speed. An error (PostgreSQL restarting,
say) is logged and the next round tries again: rows wait unsealed, nothing is lost.
The periodic sweep (workers/tasks.py) also seals, so rows are sealed even while this
thread is down; `settle verify` reports rows left unsealed for long.
"""

from __future__ import annotations

import logging
import threading

from domain.services import audit, draining

logger = logging.getLogger("settle.audit")

SEAL_EVERY_SECONDS = 0.5
# After a failed round, wait this long before the next (a database that is down is
# not hammered twice a second).
RETRY_AFTER_SECONDS = 5.0


class AuditSealer:
    """Seals every `every_seconds` in a daemon thread until `stop()`."""

    def __init__(
        self,
        *,
        units: draining.Units,
        keys: audit.AuditKeys,
        every_seconds: float = SEAL_EVERY_SECONDS,
        retry_after_seconds: float = RETRY_AFTER_SECONDS,
    ) -> None:
        self.units = units
        self.keys = keys
        self.every_seconds = every_seconds
        self.retry_after_seconds = retry_after_seconds
        self.sealed = 0  # rows sealed by this thread so far
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="settle-audit-sealer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def seal_once(self) -> int:
        """One round: rows sealed (a full round means more may be waiting)."""
        sealed = draining.seal_audit(self.units, keys=self.keys)
        self.sealed += sealed
        return sealed

    def _run(self) -> None:
        wait = 0.0
        while not self._stopping.wait(wait):
            try:
                full = self.seal_once() >= audit.SEAL_BATCH
            except Exception:
                logger.exception("sealing the audit chain failed; trying again")
                wait = self.retry_after_seconds
                continue
            wait = 0.0 if full else self.every_seconds
