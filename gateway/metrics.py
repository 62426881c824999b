"""Prometheus metrics of the gateway process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

TRANSFERS_ACCEPTED = Counter(
    "settle_transfers_accepted_total", "Money requests accepted (202), replays excluded", ["kind"]
)
WAKEUPS_FAILED = Counter(
    "settle_wakeups_publish_failed_total",
    "Wake-ups that could not be published (the sweeper recovers them)",
)

LEDGER_VERIFY_OK = Gauge(
    "settle_ledger_verify_ok", "1 if the latest `settle verify` run found no problem, else 0"
)
LEDGER_VERIFY_PROBLEMS = Gauge(
    "settle_ledger_verify_problems", "Problems found by the latest `settle verify` run"
)
LEDGER_VERIFY_TIMESTAMP = Gauge(
    "settle_ledger_verify_last_run_timestamp_seconds", "When the latest verification ran"
)

TRANSFERS_QUARANTINED = Gauge(
    "settle_transfers_quarantined",
    "Transfers the engine failed with internal_error because applying them kept breaking "
    "a database invariant (all time; each one needs a look)",
)

SECURITY_EVENTS = Counter(
    "settle_security_events_total", "Security events written to the audit trail", ["event_type"]
)
RATE_LIMITED = Counter("settle_rate_limited_total", "Requests refused with 429", ["bucket"])
ANOMALIES = Counter("settle_anomalies_total", "Anomaly flags raised", ["kind"])
