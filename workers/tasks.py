"""Thin Celery tasks: parse arguments, open units of work, call the domain, retry on transients."""

from __future__ import annotations

import logging
import subprocess
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

from celery import Task
from celery.exceptions import Retry
from sqlalchemy.exc import OperationalError

from domain.lanes import SLOTS, Lanes
from domain.services import draining, engine, sweeper, transfers, webhooks
from domain.uow import UnitOfWork, unit_of_work
from settle import metrics
from settle.broker import (
    DELIVER_WEBHOOK_TASK,
    DELIVER_WEBHOOKS_TASK,
    DRAIN_LANE_TASK,
    PURGE_IDEMPOTENCY_TASK,
    SWEEP_PENDING_TASK,
    VERIFY_LEDGER_TASK,
    VISIBILITY_TIMEOUT_SECONDS,
)
from settle.config import get_settings
from settle.processes import settle_argv
from workers import resources, webhook_sender
from workers.celery_app import app

logger = logging.getLogger("settle.workers")
outcomes_log = logging.getLogger("settle.transfers")

MAX_DRAIN_RETRIES = 10


def _units() -> AbstractContextManager[UnitOfWork]:
    return unit_of_work(resources.session_factory(), resources.ports())


def drain(lane: int, lane_count: int | None = None) -> int:
    """Apply the lane's pending transfers (domain/services/draining.py)."""
    settings = get_settings()
    lanes = Lanes(lane_count or settings.lanes)
    return draining.drain_lane(
        lane=lane,
        lanes=lanes,
        units=_units,
        claims=resources.lane_claims(lanes),
        policy=draining.DrainPolicy(
            batch_size=settings.drain_batch_size,
            limits=settings.engine_limits,
            linger_seconds=settings.drain_linger_seconds,
            gather_seconds=settings.drain_gather_seconds,
            # Hand the lane on long before the soft time limit (two thirds of the hard
            # one) could end the drain in the middle of a batch.
            max_run_seconds=min(30.0, settings.task_time_limit_seconds / 3),
        ),
        report=report_batch,
    )


def report_batch(result: engine.BatchResult) -> None:
    """One INFO line per transfer outcome, and the batch's metrics (counted once)."""
    finished = result.finished
    metrics.record_batch(finished, finished[0].completed_at)
    if not (get_settings().log_transfer_outcomes and outcomes_log.isEnabledFor(logging.INFO)):
        return
    for item in finished:
        latency_ms = round((item.completed_at - item.created_at).total_seconds() * 1000, 1)
        outcomes_log.info(
            "transfer %s %s%s: %s of %d %s, %.1f ms after acceptance",
            item.id,
            item.status,
            f" ({item.code})" if item.code else "",
            item.kind,
            item.amount,
            item.currency,
            latency_ms,
            extra={
                "transfer_id": str(item.id),
                "status": str(item.status),
                "failure_code": item.code,
                "kind": item.kind,
                "latency_ms": latency_ms,
            },
        )


def seal_audit() -> int:
    settings = get_settings()
    return draining.seal_audit(_units, keys=settings.audit_keyring)


@app.task(name=DRAIN_LANE_TASK, bind=True, max_retries=MAX_DRAIN_RETRIES)
def drain_lane(self: Task, lane: int, lane_count: int = SLOTS) -> str:
    """Applies the lane's pending transfers; the result (shown in Flower) says how many."""
    # Messages published before lane counts existed name a slot: lane_count=SLOTS.
    try:
        lanes = Lanes(lane_count)
    except (TypeError, ValueError):
        lanes = None
    if (
        lanes is None
        or not isinstance(lane, int)
        or isinstance(lane, bool)
        or not 0 <= lane < lanes.count
    ):
        logger.error("drain_lane: dropping malformed lane %r of %r", lane, lane_count)
        return "dropped: malformed lane"
    task_id = self.request.id or ""
    guard = resources.delivery_guard(ttl_seconds=2 * VISIBILITY_TIMEOUT_SECONDS)
    if task_id and not guard.admit(task_id):
        # Poison message: acknowledged and dropped; the sweeper re-wakes the lane.
        return "dropped: delivered too often"
    try:
        applied = drain(lane, lanes.count)
    except OperationalError as exc:
        # Connection lost, PostgreSQL restarting, lock timeout: the failed batch
        # rolled back as a whole, so trying again later is safe.
        logger.warning("drain of lane %s hit %s; retrying", lane, type(exc).__name__)
        raise self.retry(exc=exc, countdown=min(2**self.request.retries, 30)) from exc
    guard.forget(task_id)
    return f"lane {lane} of {lanes.count}: {applied} transfer(s) settled or failed"


def wake_stale_lanes() -> int:
    settings = get_settings()
    with unit_of_work(resources.session_factory()) as uow:
        stale = sweeper.slots_needing_drain(
            session=uow.session, stale_after_seconds=settings.sweep_stale_after_seconds
        )
    if not stale:
        return 0
    woken = resources.lane_waker().force(stale)
    logger.info("sweeper woke %d lane(s) with stale pending transfers", len(woken))
    return len(woken)


def expire_holds() -> int:
    """Every held hold past its expiry, a few hundred per unit of work."""
    total = 0
    while True:
        with _units() as uow:
            expired = sweeper.expire_holds(uow=uow)
        total += expired
        if expired < 500:
            if total:
                logger.info("sweeper expired %d hold(s)", total)
            return total


@app.task(name=SWEEP_PENDING_TASK)
def sweep_pending() -> str:
    """Wakes lanes with stale or newly due pending transfers, expires holds past their
    expiry, seals the audit chain; says so in Flower."""
    woken = wake_stale_lanes()
    expired = expire_holds()
    sealed = seal_audit()
    return f"woke {woken} lane(s), expired {expired} hold(s), sealed {sealed} audit row(s)"


def verify_in_own_process(*, timeout: float) -> bool:
    """`settle verify --record` as a child process; True when the ledger verified.

    Verification reads the whole ledger, so its peak memory grows with the ledger. In a
    long-lived pool child that memory stays resident after the task (the allocator
    keeps it): the soak saw the child that ran this task grow 15 % per run, 96 -> 112
    MiB at 20,000 transfers. A process of its own gives it back to the OS when it exits.
    """
    try:
        result = subprocess.run(  # noqa: S603 (our own CLI, fixed arguments)
            settle_argv("verify", "--record"),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        logger.error("ledger verification did not finish within %.0f s; killed", timeout)
        return False
    if result.returncode:  # 1: problems found (or the command failed: see stderr)
        logger.error(
            "ledger verification did not pass (exit %d):\n%s\n%s",
            result.returncode,
            result.stdout[-4000:],
            result.stderr[-4000:],
        )
    return result.returncode == 0


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt came to."""

    delivery_id: uuid.UUID
    status: str  # the delivery's status after it: succeeded, pending (retry due), failed
    status_code: int | None
    error: str | None

    @property
    def why(self) -> str:
        return f"HTTP {self.status_code}" if self.status_code is not None else str(self.error)


def attempt(delivery_ids: Sequence[uuid.UUID]) -> list[Attempt]:
    """One attempt for each delivery still pending: plan (one short read), send (no
    transaction open; one after the other, as they share an endpoint and its kept-alive
    connection), record (one short write)."""
    settings = get_settings()
    factory = resources.session_factory()
    box = resources.secret_box()
    with unit_of_work(factory) as uow:
        plans = webhooks.plan_attempts(session=uow.session, delivery_ids=delivery_ids, box=box)
    if not plans:
        return []
    outcomes = [
        (
            plan,
            webhook_sender.send(
                plan, policy=settings.webhook_policy, timeout=settings.webhook_timeout_seconds
            ),
        )
        for plan in plans
    ]
    with unit_of_work(factory) as uow:
        statuses = webhooks.record_attempts(
            session=uow.session, outcomes=outcomes, policy=settings.webhook_policy
        )
    attempts = []
    for plan, outcome in outcomes:
        status = statuses.get(plan.delivery_id, "failed")
        metrics.record_webhook_attempt("retry" if status == "pending" else status, plan.event_at)
        attempts.append(Attempt(plan.delivery_id, status, outcome.status_code, outcome.error))
    return attempts


def deliver(delivery_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """One attempt each; every attempted delivery's status afterwards."""
    return {a.delivery_id: a.status for a in attempt(delivery_ids)}


class WebhookAttemptFailed(Exception):
    """Attempts failed and others are scheduled (what Flower shows on RETRY)."""


class WebhookDeliveryFailed(Exception):
    """A delivery's last attempt failed: no retry left (Flower shows FAILURE)."""


def _deliver_message(raw: object) -> str:
    """A message's attempts, as its task's outcome: SUCCESS when every attempt
    succeeded, RETRY when one failed and the schedule has attempts left (the dispatcher
    sends the next one when due), FAILURE when one was given up. Never a green SUCCESS
    for a refused or unreachable receiver."""
    values = raw if isinstance(raw, list) else [raw]
    try:
        ids = [uuid.UUID(str(value)) for value in values]
    except ValueError:
        logger.error("deliver_webhooks: dropping malformed delivery ids %r", raw)
        return "dropped: malformed delivery ids"
    attempts = attempt(ids)
    if not attempts:
        return "nothing to send (delivered, given up or endpoint gone)"
    delivered = sum(a.status == "succeeded" for a in attempts)
    summary = f"{delivered} of {len(attempts)} delivered"
    given_up = [a for a in attempts if a.status == "failed"]
    if given_up:
        raise WebhookDeliveryFailed(
            f"{summary}; {len(given_up)} given up, no retry left ({given_up[0].why})"
        )
    retrying = [a for a in attempts if a.status == "pending"]
    if retrying:
        failed = f"{summary}; {len(retrying)} failed ({retrying[0].why}), retry scheduled"
        # Raising Retry ourselves (not self.retry()) records the RETRY state without
        # publishing a new message: the next attempt is the dispatcher's, at the time
        # the schedule set in the database, which survives restarts.
        raise Retry(failed, exc=WebhookAttemptFailed(failed))
    return summary


@app.task(name=DELIVER_WEBHOOKS_TASK, ignore_result=True, throws=(WebhookDeliveryFailed,))
def deliver_webhooks(delivery_ids: list[str]) -> str:
    return _deliver_message(delivery_ids)


@app.task(name=DELIVER_WEBHOOK_TASK, ignore_result=True, throws=(WebhookDeliveryFailed,))
def deliver_webhook(delivery_id: str) -> str:
    """The one-delivery message of earlier releases, still in queues after an upgrade."""
    return _deliver_message(delivery_id)


def dispatch_due() -> tuple[int, datetime | None]:
    """Queue every due delivery (leased); when the next pending one falls due."""
    settings = get_settings()
    with unit_of_work(resources.session_factory(), resources.ports()) as uow:
        due = webhooks.claim_due(
            session=uow.session, lease_seconds=2 * settings.webhook_timeout_seconds + 30
        )
        uow.send_deliveries(due)
        upcoming = webhooks.next_due(session=uow.session)
    return len(due), upcoming


@app.task(name=PURGE_IDEMPOTENCY_TASK)
def purge_idempotency_keys() -> str:
    settings = get_settings()
    with unit_of_work(resources.session_factory()) as uow:
        purged = transfers.purge_idempotency_keys(
            session=uow.session, retention_seconds=settings.idempotency_retention_seconds
        )
    # Celery's "succeeded" line (and Flower) show this; no second line of our own.
    return f"purged {purged} idempotency key(s) past retention"


@app.task(name=VERIFY_LEDGER_TASK)
def verify_ledger() -> str:
    # Within the soft time limit (two thirds of the hard one), with a margin to log.
    limit = get_settings().task_time_limit_seconds * 2 / 3
    ok = verify_in_own_process(timeout=max(1.0, limit - 5))
    return "ledger OK" if ok else "ledger MISMATCH or not verified (see this worker's log)"
