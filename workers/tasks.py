"""Thin Celery tasks: parse ids, open the transaction, call the domain, retry transient errors."""

from __future__ import annotations

import logging
import uuid

from celery import Task
from sqlalchemy.exc import OperationalError

from domain.db import transaction
from domain.services import engine, sweeper, transfers, verify, webhooks
from settle.broker import (
    DELIVER_WEBHOOK_TASK,
    DISPATCH_WEBHOOKS_TASK,
    DRAIN_ACCOUNT_TASK,
    PURGE_IDEMPOTENCY_TASK,
    SWEEP_PENDING_TASK,
    TRANSFERS_QUEUE,
    VERIFY_LEDGER_TASK,
    VISIBILITY_TIMEOUT_SECONDS,
    WEBHOOKS_QUEUE,
)
from settle.config import get_settings
from workers import resources, webhook_sender
from workers.celery_app import app

logger = logging.getLogger("settle.workers")

MAX_DRAIN_RETRIES = 10


def drain(account_id: uuid.UUID) -> int:
    """Apply every pending transfer of `account_id`, one batch per transaction."""
    settings = get_settings()
    applied = 0
    while True:
        with transaction(resources.session_factory()) as session:
            result = engine.apply_next_batch(
                session=session,
                source_account_id=account_id,
                batch_size=settings.drain_batch_size,
                limits=settings.engine_limits,
            )
        applied += result.applied
        for delivery_id in result.deliveries:  # after commit: the rows exist now
            deliver_webhook.apply_async(args=[str(delivery_id)], queue=WEBHOOKS_QUEUE)
        if not result.more:
            return applied


@app.task(name=DRAIN_ACCOUNT_TASK, bind=True, max_retries=MAX_DRAIN_RETRIES)
def drain_account(self: Task, account_id: str) -> int:
    try:
        parsed = uuid.UUID(account_id)
    except ValueError:
        logger.error("drain_account: dropping malformed account id %r", account_id)
        return 0
    task_id = self.request.id or ""
    guard = resources.delivery_guard(ttl_seconds=2 * VISIBILITY_TIMEOUT_SECONDS)
    if task_id and not guard.admit(task_id):
        return 0  # poison message: acknowledged and dropped; the sweeper re-wakes the account
    try:
        applied = drain(parsed)
    except OperationalError as exc:
        # Connection lost, PostgreSQL restarting, lock timeout: the failed batch
        # rolled back as a whole, so trying again later is safe.
        logger.warning("drain of %s hit %s; retrying", account_id, type(exc).__name__)
        raise self.retry(exc=exc, countdown=min(2**self.request.retries, 30)) from exc
    guard.forget(task_id)
    return applied


def wake_stale_accounts() -> int:
    settings = get_settings()
    with transaction(resources.session_factory()) as session:
        stale = sweeper.accounts_needing_drain(
            session=session, stale_after_seconds=settings.sweep_stale_after_seconds
        )
    for account_id in stale:
        drain_account.apply_async(args=[str(account_id)], queue=TRANSFERS_QUEUE)
    if stale:
        logger.info("sweeper woke %d account(s) with stale pending transfers", len(stale))
    return len(stale)


@app.task(name=SWEEP_PENDING_TASK)
def sweep_pending() -> int:
    return wake_stale_accounts()


def verify_and_record() -> verify.Report:
    factory = resources.session_factory()
    with transaction(factory) as session:
        report = verify.verify(session=session)
    with transaction(factory) as session:
        verify.record(session=session, report=report)
    if not report.ok:
        logger.error(
            "ledger verification found %d problem(s): %s",
            report.problem_count,
            report.as_dict()["problems"],
        )
    return report


def deliver(delivery_id: uuid.UUID) -> str | None:
    """One attempt: plan (short read), send (no transaction open), record (short write)."""
    settings = get_settings()
    factory = resources.session_factory()
    box = resources.secret_box()
    with transaction(factory) as session:
        plan = webhooks.plan_attempt(session=session, delivery_id=delivery_id, box=box)
    if plan is None:
        return None
    outcome = webhook_sender.send(
        plan,
        allow_private=settings.webhook_allow_private,
        timeout=settings.webhook_timeout_seconds,
    )
    with transaction(factory) as session:
        delivery = webhooks.record_attempt(
            session=session,
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
    with transaction(resources.session_factory()) as session:
        due = webhooks.claim_due(
            session=session, lease_seconds=2 * settings.webhook_timeout_seconds + 30
        )
    for delivery_id in due:
        deliver_webhook.apply_async(args=[str(delivery_id)], queue=WEBHOOKS_QUEUE)
    return len(due)


@app.task(name=PURGE_IDEMPOTENCY_TASK)
def purge_idempotency_keys() -> int:
    settings = get_settings()
    with transaction(resources.session_factory()) as session:
        purged = transfers.purge_idempotency_keys(
            session=session, retention_seconds=settings.idempotency_retention_seconds
        )
    logger.info("purged %d idempotency key(s) past retention", purged)
    return purged


@app.task(name=VERIFY_LEDGER_TASK)
def verify_ledger() -> bool:
    return verify_and_record().ok
