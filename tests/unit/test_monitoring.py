"""What ships for monitoring holds together: alerts pass promtool (check and unit tests),
the dashboard and the alerts only name metrics Settle (or Flower) exports, and the
compose `monitoring` profile parses and is wired to both."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gateway import metrics as gateway_metrics
from settle import metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "settle.json"

# Gauges the gateway computes at scrape time (settle.metrics.state_families).
STATE_GAUGES = {
    "settle_state_up",
    "settle_transfers_pending",
    "settle_transfers_oldest_pending_age_seconds",
    "settle_queue_depth",
    "settle_webhook_deliveries_pending",
    "settle_transfers_quarantined",
    "settle_ledger_verify_ok",
    "settle_ledger_verify_problems",
    "settle_ledger_verify_last_run_timestamp_seconds",
}
FLOWER = {"flower_worker_online"}
PROMETHEUS_BUILTIN = {"up"}


def _exported() -> set[str]:
    names: set[str] = set()
    for module in (metrics, gateway_metrics):
        for value in vars(module).values():
            describe = getattr(value, "describe", None)
            if describe is None or not hasattr(value, "_name"):
                continue
            for family in describe():
                names.add(family.name)
                if family.type == "counter":
                    names.add(family.name + "_total")
                if family.type == "histogram":
                    names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
    return names | STATE_GAUGES | FLOWER | PROMETHEUS_BUILTIN


def _names_in(expr: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}", "", expr)
    without_strings = re.sub(r'"[^"]*"', "", without_labels)
    words = set(re.findall(r"[a-z_][a-z0-9_]*", without_strings))
    return {w for w in words if w.startswith(("settle_", "flower_")) or w == "up"}


def _alert_exprs() -> list[str]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_alerts_cover_what_the_issue_asks_for():
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {
        "SettleOldestPendingTooOld",
        "SettleLedgerVerifyFailed",
        "SettleWebhookFailuresClimbing",
        "SettleTransferWorkersMissing",
        "SettleWebhookWorkersMissing",
    } <= names


def test_alerts_and_dashboard_only_name_exported_metrics():
    exported = _exported()
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = _alert_exprs() + [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    unknown = {name for expr in exprs for name in _names_in(expr)} - exported
    assert not unknown, f"not exported by Settle or Flower: {sorted(unknown)}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_checks_and_unit_tests_the_alerts():
    for args in (
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ):
        result = subprocess.run(
            ["promtool", *args],
            cwd=PROMETHEUS,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_compose_monitoring_profile_is_wired():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert prometheus["profiles"] == ["monitoring"] and grafana["profiles"] == ["monitoring"]
    # Not started by a plain `docker compose up` (nor is the optional RabbitMQ broker).
    optional = {"prometheus", "grafana", "rabbitmq"}
    assert all("profiles" not in s for n, s in services.items() if n not in optional)
    # Published on the loopback only; Grafana refuses its default admin/admin.
    assert prometheus["ports"] == ["127.0.0.1:9090:9090"]
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    assert 'test -n "$$GF_SECURITY_ADMIN_PASSWORD"' in grafana["entrypoint"][-1]
    assert "./deploy/prometheus:/etc/prometheus/settle:ro" in prometheus["volumes"]
    assert (
        "./deploy/grafana/settle.json:/var/lib/grafana/dashboards/settle.json:ro"
        in (grafana["volumes"])
    )
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/settle/alerts.yml"]
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert targets == {"settle": ["gateway:8000"], "flower": ["flower:5555"]}
    datasource = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    assert {p["datasource"]["uid"] for p in json.loads(DASHBOARD.read_text())["panels"]} == {
        datasource["uid"]
    }
    # Every process that records metrics shares the multiprocess directory.
    for name in ("gateway", "worker", "webhooks", "beat"):
        service = services[name]
        assert service["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/var/lib/settle/metrics"
        assert "metrics:/var/lib/settle/metrics" in service["volumes"], name


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_the_exposition_passes_promtools_lint():
    state = {
        "pending": 3,
        "oldest_pending_age": 1.5,
        "queues": {"transfers": 2, "webhooks": 0},
        "webhooks_pending": 1,
        "quarantined": 0,
        "verify": {"ok": True, "problems": 0, "ran_at": 1_700_000_000.0},
    }
    metrics.record_webhook_attempt("retry")
    text = metrics.exposition(metrics.StateCollector(lambda: state)).decode()
    assert "settle_transfers_oldest_pending_age_seconds 1.5" in text
    assert 'settle_queue_depth{queue="transfers"} 2.0' in text
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_scrape_that_cannot_read_the_state_says_so():
    def unreachable() -> dict[str, object]:
        raise ConnectionError("PostgreSQL is down")

    text = metrics.exposition(metrics.StateCollector(unreachable)).decode()
    assert "settle_state_up 0.0" in text
    assert "settle_transfers_pending" not in text  # absent, not a misleading 0
