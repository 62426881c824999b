"""Prometheus metrics of the gateway process."""

from __future__ import annotations

from prometheus_client import Counter

TRANSFERS_ACCEPTED = Counter(
    "settle_transfers_accepted_total", "Money requests accepted (202), replays excluded", ["kind"]
)
WAKEUPS_FAILED = Counter(
    "settle_wakeups_publish_failed_total",
    "Wake-ups that could not be published (the sweeper recovers them)",
)
