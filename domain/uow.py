"""The unit of work: one transaction, and the effects that may only follow its commit.

Services write through `uow.session` (they flush, never commit) and ask for
effects on the unit of work: wake the engine for a lane, send webhook deliveries.
The boundary that opened the unit (a FastAPI dependency, a task) ends it: on
success it commits and only then runs the effects; on error it rolls back and
drops them. Effects are best-effort by design: each of them is also covered by a
sweeper (stale pending transfers, due webhook deliveries), so a failed publish
after a commit is logged, never raised.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger("settle.uow")


class LaneWaker(Protocol):
    """Publishes engine wake-ups for the lanes holding these slots (domain/lanes.py)."""

    def wake_slots(self, slots: Collection[int]) -> None: ...


class QueuedDelivery(NamedTuple):
    """A webhook delivery to send, and the endpoint it goes to.

    Senders group deliveries by endpoint: one message per endpoint keeps a slow
    endpoint from delaying anyone else's, and lets one kept-alive connection carry
    all of that endpoint's deliveries.
    """

    endpoint_id: uuid.UUID
    delivery_id: uuid.UUID


class DeliverySender(Protocol):
    """Queues webhook deliveries for sending."""

    def send(self, deliveries: Sequence[QueuedDelivery]) -> None: ...


@dataclass(frozen=True)
class Ports:
    waker: LaneWaker | None = None
    deliveries: DeliverySender | None = None


class UnitOfWork:
    def __init__(self, session: Session, ports: Ports | None = None) -> None:
        self.session = session
        self._ports = ports or Ports()
        self._effects: list[tuple[str, Callable[[], object]]] = []
        self._slots: set[int] = set()
        self._deliveries: list[QueuedDelivery] = []
        self.keep_when_refused = False

    def keep_on_refusal(self) -> None:
        """Commit this unit even though the request ends in an error.

        For writes that must outlive a refusal: revoking a token family whose
        spent refresh token was presented again, and auditing that.
        """
        self.keep_when_refused = True

    def after_commit(self, name: str, effect: Callable[[], object]) -> None:
        self._effects.append((name, effect))

    def wake_slots(self, slots: Collection[int]) -> None:
        """Wake the engine for the lanes of these slots once this unit commits."""
        self._slots.update(slots)

    def send_deliveries(self, deliveries: Sequence[QueuedDelivery]) -> None:
        self._deliveries.extend(deliveries)

    def commit(self) -> None:
        self.session.commit()
        self._run_effects()

    def rollback(self) -> None:
        self.session.rollback()
        self._discard()

    def _discard(self) -> None:
        self._effects.clear()
        self._slots.clear()
        self._deliveries.clear()

    def _run_effects(self) -> None:
        effects = list(self._effects)
        waker, sender = self._ports.waker, self._ports.deliveries
        if self._slots and waker is not None:
            slots = sorted(self._slots)
            effects.append(("wake lanes", lambda: waker.wake_slots(slots)))
        if self._deliveries and sender is not None:
            deliveries = list(self._deliveries)
            effects.append(("send deliveries", lambda: sender.send(deliveries)))
        self._discard()
        for name, effect in effects:
            try:
                effect()
            except Exception:
                logger.warning(
                    "after-commit effect %r failed; a sweeper covers it", name, exc_info=True
                )


@contextmanager
def unit_of_work(
    factory: sessionmaker[Session], ports: Ports | None = None
) -> Iterator[UnitOfWork]:
    """Commit (then run effects) if the block succeeds; roll back and drop them if not."""
    with factory() as session:
        uow = UnitOfWork(session, ports)
        try:
            yield uow
        except BaseException:
            if uow.keep_when_refused:
                uow.commit()
            else:
                uow.rollback()
            raise
        uow.commit()


class AsyncLaneWaker(Protocol):
    async def wake_slots(self, slots: Collection[int]) -> bool: ...


class AsyncConnectionPool(Protocol):
    def acquire(self) -> AbstractAsyncContextManager[Any]: ...


class AsyncUnitOfWork:
    """The accept path's unit of work, on the event loop.

    Acceptance writes with one statement that is its own transaction (see
    domain/repositories/acceptance.py), so there is nothing left to commit at the
    end: the unit's job is to run the effects only if that statement succeeded.
    """

    def __init__(self, conn: Any, waker: AsyncLaneWaker | None) -> None:
        self.conn = conn
        self._waker = waker
        self._slots: set[int] = set()
        self.wake_failed = False

    def wake_slots(self, slots: Collection[int]) -> None:
        self._slots.update(slots)

    async def run_effects(self) -> None:
        if self._slots and self._waker is not None:
            try:
                self.wake_failed = not await self._waker.wake_slots(self._slots)
            except Exception:
                self.wake_failed = True
                logger.warning("wake-up failed; the sweeper covers it", exc_info=True)
        self._slots.clear()


@asynccontextmanager
async def async_unit_of_work(
    pool: AsyncConnectionPool, waker: AsyncLaneWaker | None
) -> AsyncIterator[AsyncUnitOfWork]:
    async with pool.acquire() as conn:
        uow = AsyncUnitOfWork(conn, waker)
        yield uow  # an exception here skips the effects
    await uow.run_effects()
