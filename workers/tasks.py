"""Thin Celery tasks: parse arguments, open units of work, call the domain, retry on transients."""

from __future__ import annotations

import logging
import subprocess
import uuid
from contextlib import AbstractContextManager

from celery import Task
from sqlalchemy.exc import OperationalError

from domain.lanes import SLOTS, Lanes
from domain.services import draining, sweeper, transfers, webhooks
from domain.uow import UnitOfWork, unit_of_work
from settle.broker import (
    DELIVER_WEBHOOK_TASK,
    DISPATCH_WEBHOOKS_TASK,
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
            idle_timeout_seconds=settings.drain_idle_timeout_seconds,
        ),
        sealer=resources.sealer(),
    )


def seal_audit() -> int:
    settings = get_settings()
    return draining.seal_audit(
        _units,
        keys=settings.audit_keyring,
        idle_timeout_seconds=settings.drain_idle_timeout_seconds,
    )


@app.task(name=DRAIN_LANE_TASK, bind=True, max_retries=MAX_DRAIN_RETRIES)
def drain_lane(self: Task, lane: int, lane_count: int = SLOTS) -> int:
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
        return 0
    task_id = self.request.id or ""
    guard = resources.delivery_guard(ttl_seconds=2 * VISIBILITY_TIMEOUT_SECONDS)
    if task_id and not guard.admit(task_id):
        return 0  # poison message: acknowledged and dropped; the sweeper re-wakes the lane
    try:
        applied = drain(lane, lanes.count)
    except OperationalError as exc:
        # Connection lost, PostgreSQL restarting, lock timeout: the failed batch
        # rolled back as a whole, so trying again later is safe.
        logger.warning("drain of lane %s hit %s; retrying", lane, type(exc).__name__)
        raise self.retry(exc=exc, countdown=min(2**self.request.retries, 30)) from exc
    guard.forget(task_id)
    return applied


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


@app.task(name=SWEEP_PENDING_TASK)
def sweep_pending() -> int:
    woken = wake_stale_lanes()
    seal_audit()
    return woken


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


def deliver(delivery_id: uuid.UUID) -> str | None:
    """One attempt: plan (short read), send (no transaction open), record (short write)."""
    settings = get_settings()
    factory = resources.session_factory()
    box = resources.secret_box()
    with unit_of_work(factory) as uow:
        plan = webhooks.plan_attempt(session=uow.session, delivery_id=delivery_id, box=box)
    if plan is None:
        return None
    outcome = webhook_sender.send(
        plan,
        policy=settings.webhook_policy,
        timeout=settings.webhook_timeout_seconds,
    )
    with unit_of_work(factory) as uow:
        delivery = webhooks.record_attempt(
            session=uow.session,
            delivery_id=delivery_id,
            status_code=outcome.status_code,
            error=outcome.error,
            duration_ms=outcome.duration_ms,
            policy=settings.webhook_policy,
        )
    return delivery.status if delivery else None


@app.task(name=DELIVER_WEBHOOK_TASK, ignore_result=True)
def deliver_webhook(delivery_id: str) -> str | None:
    try:
        return deliver(uuid.UUID(delivery_id))
    except ValueError:
        logger.error("deliver_webhook: dropping malformed delivery id %r", delivery_id)
        return None


@app.task(name=DISPATCH_WEBHOOKS_TASK)
def dispatch_due_webhooks() -> int:
    """Sends deliveries that are due: retries, redeliveries, and lost immediate sends."""
    settings = get_settings()
    with unit_of_work(resources.session_factory(), resources.ports()) as uow:
        due = webhooks.claim_due(
            session=uow.session, lease_seconds=2 * settings.webhook_timeout_seconds + 30
        )
        uow.send_deliveries(due)
    return len(due)


@app.task(name=PURGE_IDEMPOTENCY_TASK)
def purge_idempotency_keys() -> int:
    settings = get_settings()
    with unit_of_work(resources.session_factory()) as uow:
        purged = transfers.purge_idempotency_keys(
            session=uow.session, retention_seconds=settings.idempotency_retention_seconds
        )
    logger.info("purged %d idempotency key(s) past retention", purged)
    return purged


@app.task(name=VERIFY_LEDGER_TASK)
def verify_ledger() -> bool:
    # Within the soft time limit (two thirds of the hard one), with a margin to log.
    limit = get_settings().task_time_limit_seconds * 2 / 3
    return verify_in_own_process(timeout=max(1.0, limit - 5))
