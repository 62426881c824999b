"""Prometheus metrics that more than one kind of process records, and the scrape itself.

Every process of a host writes its counters and histograms into one directory,
`PROMETHEUS_MULTIPROC_DIR` (prometheus_client's multiprocess mode: `make run` and
docker-compose set it and empty it at start), so the gateway's `/metrics` serves
the sum over the gateway processes, the transfer workers, the webhooks worker and
beat. What describes the system rather than a process (backlog, oldest pending,
queue depths, the latest verify) is read at scrape time from PostgreSQL and Redis
by `StateCollector`, once per scrape, whichever process answers it.

The engine is benchmarked: metrics are recorded once per batch (a counter increment
per kind and outcome present in the batch, one histogram observation per transfer,
which in multiprocess mode is a write to a memory-mapped file).
"""

from __future__ import annotations

import logging
import os
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger("settle.metrics")

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

# Seconds: the engine settles most transfers within tens of milliseconds; the tail
# (a backlog, a lost wake-up waiting for the sweeper) runs to tens of seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)

TRANSFERS_SETTLED = Counter(
    "settle_transfers_settled_total", "Transfers the engine applied (succeeded)", ["kind"]
)
TRANSFERS_FAILED = Counter(
    "settle_transfers_failed_total",
    "Transfers the engine failed, by kind and failure code",
    ["kind", "code"],
)
TRANSFER_LATENCY = Histogram(
    "settle_transfer_latency_seconds",
    "From acceptance (the 202) to the terminal state, per transfer",
    ["status"],
    buckets=LATENCY_BUCKETS,
)
DRAIN_BATCH_SIZE = Histogram(
    "settle_drain_batch_size",
    "Transfers brought to a terminal state per engine batch",
    buckets=BATCH_BUCKETS,
)
WEBHOOK_ATTEMPTS = Counter(
    "settle_webhook_attempts_total",
    "Webhook delivery attempts by outcome: succeeded, retry (another attempt is "
    "scheduled) or failed (no attempt left, or the endpoint was disabled)",
    ["outcome"],
)
WEBHOOK_LATENCY = Histogram(
    "settle_webhook_latency_seconds",
    "From the commit of the event to its successful delivery (retries included)",
    buckets=LATENCY_BUCKETS,
)


class Finished(Protocol):
    """What the metrics need of one transfer that reached a terminal state
    (domain.services.engine.Finished)."""

    @property
    def kind(self) -> str: ...
    @property
    def code(self) -> str | None: ...
    @property
    def created_at(self) -> datetime: ...


def record_batch(finished: Sequence[Finished], now: datetime) -> None:
    """One engine batch: counts per (kind, code) present, latencies, the batch size."""
    if not finished:
        return
    DRAIN_BATCH_SIZE.observe(len(finished))
    for (kind, code), count in Tally((f.kind, f.code) for f in finished).items():
        if code is None:
            TRANSFERS_SETTLED.labels(kind).inc(count)
        else:
            TRANSFERS_FAILED.labels(kind, code).inc(count)
    settled, failed = TRANSFER_LATENCY.labels("succeeded"), TRANSFER_LATENCY.labels("failed")
    for item in finished:
        (settled if item.code is None else failed).observe((now - item.created_at).total_seconds())


def record_webhook_attempt(outcome: str, event_at: datetime | None = None) -> None:
    WEBHOOK_ATTEMPTS.labels(outcome).inc()
    if outcome == "succeeded" and event_at is not None:
        WEBHOOK_LATENCY.observe((datetime.now(UTC) - event_at).total_seconds())


State = Callable[[], dict[str, Any]]


class StateCollector(Collector):
    """Gauges read at scrape time: `read()` returns the facts (see `state_families`)."""

    def __init__(self, read: State) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            state = self._read()
        except Exception:
            logger.warning("could not read the system state for /metrics", exc_info=True)
            up = GaugeMetricFamily(
                "settle_state_up", "1 if /metrics could read PostgreSQL and Redis, else 0"
            )
            up.add_metric([], 0)
            yield up
            return
        yield from state_families(state)


def _gauge(name: str, documentation: str, value: float | None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    if value is not None:
        family.add_metric([], value)
    return family


def state_families(state: dict[str, Any]) -> Iterator[GaugeMetricFamily]:
    yield _gauge("settle_state_up", "1 if /metrics could read PostgreSQL and Redis, else 0", 1)
    yield _gauge(
        "settle_transfers_pending", "Transfers accepted and not yet applied", state["pending"]
    )
    yield _gauge(
        "settle_transfers_oldest_pending_age_seconds",
        "Age of the oldest pending transfer (0 when none is pending)",
        state["oldest_pending_age"],
    )
    depth = GaugeMetricFamily(
        "settle_queue_depth", "Messages waiting in each broker queue", labels=["queue"]
    )
    for queue, length in sorted(state["queues"].items()):
        depth.add_metric([queue], length)
    yield depth
    yield _gauge(
        "settle_webhook_deliveries_pending",
        "Webhook deliveries not yet delivered nor given up",
        state["webhooks_pending"],
    )
    yield _gauge(
        "settle_transfers_quarantined",
        "Transfers the engine failed with internal_error because applying them kept breaking "
        "a database invariant (all time; each one needs a look)",
        state["quarantined"],
    )
    verify = state.get("verify")
    yield _gauge(
        "settle_ledger_verify_ok",
        "1 if the latest `settle verify` run found no problem, 0 if it found one; "
        "absent until the first run (beat runs one at start)",
        None if verify is None else (1 if verify["ok"] else 0),
    )
    yield _gauge(
        "settle_ledger_verify_problems",
        "Problems found by the latest `settle verify` run",
        None if verify is None else verify["problems"],
    )
    yield _gauge(
        "settle_ledger_verify_last_run_timestamp_seconds",
        "When the latest verification ran",
        None if verify is None else verify["ran_at"],
    )


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_VARIABLE) or None


def exposition(state: Collector | None) -> bytes:
    """The text of /metrics: every process's metrics (or this one's), then the state."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    if state is not None:
        extra = CollectorRegistry()
        extra.register(state)
        body += generate_latest(extra)
    return body


def reset_multiprocess_dir(path: Path) -> None:
    """Empty (or create) the directory before any process of a new run starts."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
