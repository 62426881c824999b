"""Draining one lane: batches until it is empty, letting go of the lane, quarantine.

The policy a worker follows for a `drain_lane` message, as plain code over ports
so tests can run it without a broker:
- apply batches (one unit of work each) while the lane has work, for at most
  `slice_seconds`; then hand the lane on with a new message (keeping its marker),
  so one busy lane cannot hold a worker process while other lanes wait;
- however quiet the queue, a drain that has run `max_run_seconds` hands the lane on,
  so no drain runs into the task time limit under a load that never lets up;
- when a batch was not full, the lane was empty as of that read. With
  `linger_seconds`, the drain first waits that long for the lane's bell (rung by
  each wake-up that finds the marker held, settle/wakeups.py) and, when it rings,
  takes the next batch after `gather_seconds` (so the batch is not just the one
  transfer that rang): at moderate load a lane stays with one drain instead of
  costing a broker message, a task and a marker round trip per batch.
  When nothing rang (or other lanes' messages wait), it lets go as follows;
- letting go: release the marker, then look once more (READ COMMITTED: the look sees
  what committed before it began). A transfer committed before the release is seen
  now; one committed after it found no marker and published its own wake-up. Without
  a linger, the release and the look are the batch transaction's last steps, so they
  cost no unit of work of their own. (Released before the batch commits, the marker
  may let a second drain in early: it waits on the batch's row locks, then finds
  those transfers done.) With one, the look is a statement of its own. If the
  look finds work while other lanes' messages wait, the lane goes to the back of
  the queue (a new message) rather than being served again at once: with more lanes
  than worker processes, that is what keeps every lane's latency low;
- in big batches, accounts another lane's drain holds are skipped, not waited for: what
  needs them is deferred to the next batch (engine.apply_next_batch,
  `skip_locked_from`), which waits for the locks if the lane's oldest transfer was
  among the deferred;
- a batch that breaks a database invariant rolls back whole; the lane is then
  applied one transfer at a time, and a transfer that fails `quarantine_after` times
  is failed with `internal_error` (audited by the engine), so the rest of the lane
  goes on instead of the sweeper re-running a batch that can never succeed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.exc import IntegrityError

from domain.lanes import Lanes
from domain.rules import INTERNAL_ERROR, Limits
from domain.services import audit, engine, sweeper
from domain.uow import UnitOfWork

logger = logging.getLogger("settle.engine")


class LaneClaims(Protocol):
    """The lane markers (settle/wakeups.py) and the broker, as the drain sees them."""

    def refresh(self, lane: int) -> None: ...
    def release(self, lane: int) -> None: ...
    def claim(self, lane: int) -> bool: ...
    def hand_on(self, lane: int) -> None: ...
    def wait_for_bell(self, lane: int, timeout: float) -> bool:
        """Whether a wake-up rang for the lane within `timeout` seconds."""
        ...

    def others_waiting(self) -> bool:
        """Whether other drain messages wait in the queue (True if unknown)."""
        ...


@dataclass(frozen=True, kw_only=True)
class DrainPolicy:
    batch_size: int
    limits: Limits
    slice_seconds: float = 0.5
    # After a batch that was not full, wait this long for a wake-up before letting go
    # of the lane (0: let go inside the batch's transaction).
    linger_seconds: float = 0.0
    # After a ring, wait this long before the next batch's read, so it takes what else
    # arrives meanwhile: fewer, fuller batches, which is what keeps a busy machine's
    # latency low (a batch's fixed costs are most of a small batch's CPU).
    gather_seconds: float = 0.0
    # A drain that has run this long hands its lane on even if no other lane waits
    # (below the task's soft time limit, which would end it in the middle of a batch).
    max_run_seconds: float = 30.0
    # The marker is refreshed at most this often while the drain keeps the lane (well
    # within its expiry, settle/wakeups.py).
    refresh_every_seconds: float = 5.0
    quarantine_after: int = 3
    # In batches of at least this many transfers (None: never), defer what needs an
    # account another lane's drain holds rather than wait for it (engine.apply_next_batch);
    # a batch right after one that deferred the lane's oldest transfer waits for the
    # locks, so within a drain no transfer is passed over twice in a row.
    skip_locked_from: int | None = 20


Units = Callable[[], AbstractContextManager[UnitOfWork]]


def drain_lane(
    *,
    lane: int,
    lanes: Lanes,
    units: Units,
    claims: LaneClaims,
    policy: DrainPolicy,
    report: Callable[[engine.BatchResult], None] | None = None,
) -> int:
    """Apply the lane's pending transfers; returns how many reached a terminal state.

    `report` sees each committed batch (the worker logs and counts its outcomes)."""
    slots = lanes.slots(lane)
    applied = 0
    keeper = _Keeper(lane, claims, policy)
    linger = policy.linger_seconds > 0
    wait_for_locks = False
    while True:
        result = _apply_or_quarantine(
            slots,
            units,
            policy,
            lane=lane,
            claims=claims,
            skip_locked_from=None if wait_for_locks else policy.skip_locked_from,
            release=not linger,
        )
        wait_for_locks = result.deferred_oldest
        applied += result.applied
        if report is not None and result.finished:
            report(result)
        held_back = result.waiting and not result.applied
        # More is waiting right now: a full batch, deferred transfers, or a ring (something
        # was accepted since this batch's read) while the drain lingered.
        rung = (
            linger
            and not result.more
            and not held_back
            and not claims.others_waiting()
            and claims.wait_for_bell(lane, policy.linger_seconds)
        )
        if result.more or rung:
            if not keeper.stays():
                claims.hand_on(lane)
                break
            if rung:
                time.sleep(policy.gather_seconds)
            continue
        if linger:
            claims.release(lane)
            if not held_back:
                with units() as uow:
                    result.pending_after_release = sweeper.has_pending(
                        session=uow.session, slots=slots
                    )
        # Not full: the marker was let go (inside the batch's transaction, or just now).
        if held_back:
            break  # held back by another lane's atomic batch; that drain wakes us
        if not (result.pending_after_release and claims.claim(lane)):
            break
        if claims.others_waiting():
            claims.hand_on(lane)  # to the back of the queue, behind the other lanes
            break
    return applied


class _Keeper:
    """Whether a drain that has more to do keeps its lane: not past `max_run_seconds`,
    and past `slice_seconds` only while no other lane's message waits. Refreshes the
    marker (at most every `refresh_every_seconds`) when it does."""

    def __init__(self, lane: int, claims: LaneClaims, policy: DrainPolicy) -> None:
        self._lane, self._claims, self._policy = lane, claims, policy
        self._started = time.monotonic()
        self._refreshed: float | None = None

    def stays(self) -> bool:
        now = time.monotonic()
        ran = now - self._started
        if ran >= self._policy.max_run_seconds:
            return False
        if ran >= self._policy.slice_seconds and self._claims.others_waiting():
            return False
        if self._refreshed is None or now - self._refreshed >= self._policy.refresh_every_seconds:
            self._claims.refresh(self._lane)
            self._refreshed = now
        return True


def seal_audit(units: Units, *, keys: audit.AuditKeys) -> int:
    """One seal of the audit chain in a unit of work of its own (workers/audit_sealer.py
    runs it beside beat, the periodic sweep after its work): not part of a drain, so no
    lane waits for it."""
    with units() as uow:
        return audit.seal(uow.session, keys=keys)


def _apply(
    slots: Sequence[int],
    units: Units,
    policy: DrainPolicy,
    *,
    batch_size: int,
    lane: int,
    claims: LaneClaims,
    fail_with: str | None = None,
    skip_locked_from: int | None = None,
    release: bool = True,
) -> engine.BatchResult:
    with units() as uow:
        result = engine.apply_next_batch(
            uow=uow,
            slots=slots,
            batch_size=batch_size,
            limits=policy.limits,
            fail_with=fail_with,
            skip_locked_from=skip_locked_from,
        )
        if release and not result.more:
            claims.release(lane)
            result.pending_after_release = sweeper.has_pending(session=uow.session, slots=slots)
        return result


def _apply_or_quarantine(
    slots: Sequence[int],
    units: Units,
    policy: DrainPolicy,
    *,
    lane: int,
    claims: LaneClaims,
    skip_locked_from: int | None,
    release: bool,
) -> engine.BatchResult:
    def apply(
        batch_size: int, fail_with: str | None = None, skip_locked_from: int | None = None
    ) -> engine.BatchResult:
        return _apply(
            slots,
            units,
            policy,
            batch_size=batch_size,
            lane=lane,
            claims=claims,
            fail_with=fail_with,
            skip_locked_from=skip_locked_from,
            release=release,
        )

    try:
        return apply(policy.batch_size, skip_locked_from=skip_locked_from)
    except IntegrityError:
        logger.warning("a batch of slots %s broke a database invariant; isolating it", slots)
    for _ in range(policy.quarantine_after):
        try:
            return apply(1)
        except IntegrityError:
            logger.warning("a transfer of slots %s broke a database invariant again", slots)
    result = apply(1, fail_with=INTERNAL_ERROR)
    logger.error("quarantined transfer(s) %s of slots %s as internal_error", result.failed, slots)
    return result
