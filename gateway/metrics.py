"""Prometheus metrics the gateway records (counters; summed over every gateway process
in multiprocess mode). Metrics other processes record, and the gauges read at scrape
time, are in settle/metrics.py."""

from __future__ import annotations

from prometheus_client import Counter

TRANSFERS_ACCEPTED = Counter(
    "settle_transfers_accepted_total", "Money requests accepted (202), replays excluded", ["kind"]
)
WAKEUPS_FAILED = Counter(
    "settle_wakeups_publish_failed_total",
    "Wake-ups that could not be published (the sweeper recovers them)",
)

SECURITY_EVENTS = Counter(
    "settle_security_events_total", "Security events written to the audit trail", ["event_type"]
)
RATE_LIMITED = Counter("settle_rate_limited_total", "Requests refused with 429", ["bucket"])
ANOMALIES = Counter("settle_anomalies_total", "Anomaly flags raised", ["kind"])
