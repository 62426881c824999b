"""Process command lines: built once from settings, used by the Procfile and compose."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from settle import processes
from settle.config import Settings, default_lanes

ROOT = Path(__file__).resolve().parents[2]


def _settings(**overrides):
    return Settings(
        environment="test",
        jwt_secret="s" * 48,
        webhook_encryption_key="w" * 48,
        audit_key="a" * 48,
        **overrides,
    )


def test_worker_defaults_to_one_process_per_core_and_is_named_by_queue():
    argv = processes.argv("worker", _settings())
    assert argv[argv.index("--concurrency") + 1] == str(processes.cpu_count())
    assert argv[argv.index("-Q") + 1] == "transfers"
    assert argv[argv.index("--hostname") + 1] == "transfers@%h"


def test_concurrency_settings_are_honoured():
    settings = _settings(worker_concurrency=3, webhook_concurrency=5, web_processes=4)
    worker = processes.argv("worker", settings)
    webhooks = processes.argv("webhooks", settings)
    assert worker[worker.index("--concurrency") + 1] == "3"
    assert webhooks[webhooks.index("--concurrency") + 1] == "5"
    assert webhooks[webhooks.index("--hostname") + 1] == "webhooks@%h"
    assert processes.web_processes(settings) == 4
    assert processes.web_processes(_settings()) == processes.cpu_count()


def test_lanes_default_to_one_per_transfer_worker_process():
    assert [default_lanes(n) for n in (1, 2, 3, 4, 6, 8, 15, 16, 64)] == [
        1,
        2,
        2,
        4,
        4,
        8,
        8,
        16,
        16,
    ]
    assert _settings(worker_concurrency=6).lanes == 4
    assert _settings().lanes == default_lanes(processes.cpu_count())
    assert _settings(lanes=8, worker_concurrency=2).lanes == 8  # set: taken as given


def test_lanes_must_divide_the_slots():
    with pytest.raises(ValidationError, match="SETTLE_LANES must be 1, 2, 4, 8 or 16"):
        _settings(lanes=3)


def test_empty_variables_mean_one_per_core(monkeypatch):
    # docker-compose passes "${SETTLE_WEB_PROCESSES:-}" through as "".
    monkeypatch.setenv("SETTLE_WEB_PROCESSES", "")
    monkeypatch.setenv("SETTLE_WORKER_CONCURRENCY", "")
    settings = _settings()
    assert settings.web_processes is None and settings.worker_concurrency is None
    with pytest.raises(ValidationError):
        _settings(web_processes=0)


def test_beat_uses_the_configured_schedule():
    argv = processes.argv("beat", _settings(beat_schedule="/tmp/x-schedule"))
    assert argv[argv.index("--schedule") + 1] == "/tmp/x-schedule"


def test_flower_password_never_on_the_command_line():
    env = {"FLOWER_BASIC_AUTH": "ops:very-secret-password"}
    argv = processes.argv("flower", _settings(flower_port=5999), env)
    assert "--port=5999" in argv
    assert not any("very-secret-password" in arg or "basic" in arg for arg in argv)


def test_flower_refuses_to_start_without_credentials():
    with pytest.raises(processes.ProcessConfigError):
        processes.argv("flower", _settings(), {})


def test_unknown_names_are_refused():
    with pytest.raises(ValueError):
        processes.serve_argv("nope")
    with pytest.raises(ValueError):
        processes.argv("web", _settings())  # supervised, never exec'd


def test_procfile_and_compose_only_say_settle_serve():
    procfile = dict(
        line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    assert procfile == {name: f"settle serve {name}" for name in processes.NAMES}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    commands = {
        name: service.get("command")
        for name, service in compose["services"].items()
        if service.get("build")
    }
    assert commands == {
        "migrate": ["settle", "migrate"],
        "gateway": ["settle", "serve", "web"],
        "worker": ["settle", "serve", "worker"],
        "webhooks": ["settle", "serve", "webhooks"],
        "beat": ["settle", "serve", "beat"],
        "flower": ["settle", "serve", "flower"],
    }
    assert 'CMD ["settle", "serve", "web"]' in (ROOT / "Dockerfile").read_text()


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_scales_gateways_workers_and_beats():
    services = _compose()["services"]
    assert not [name for name, service in services.items() if "container_name" in service]
    # Every replica of the gateway needs a host port of its own: a range, not one port.
    (gateway_port,) = services["gateway"]["ports"]
    host, container = gateway_port.rsplit(":", 1)
    low, high = (int(p) for p in host.split("-"))
    assert container == "8000" and high - low + 1 >= 2
    for name in ("worker", "webhooks", "beat"):
        assert "ports" not in services[name] and "hostname" not in services[name]
    # Workers name themselves after their container (%h), so replicas differ.
    assert processes.argv("worker", _settings())[-1].endswith("@%h")


def test_compose_rabbitmq_profile_is_optional_and_wired_to_every_app_service():
    compose = _compose()
    services = compose["services"]
    rabbitmq = services["rabbitmq"]
    assert rabbitmq["profiles"] == ["rabbitmq"]
    assert "ports" not in rabbitmq and rabbitmq["healthcheck"]["test"]
    assert "rabbitmq-data" in compose["volumes"]
    # Without the profile nothing may need it; with it the app waits for it.
    waits = compose["x-after-migrations"]["rabbitmq"]
    assert waits == {"condition": "service_healthy", "required": False}
    assert compose["x-settle-env"]["SETTLE_BROKER_URL"] == "${SETTLE_BROKER_URL:-}"
    for name, service in services.items():
        if service.get("build") and name != "migrate":
            assert service["depends_on"]["rabbitmq"]["required"] is False, name
    # Compose interpolates inactive services too: `:?` there would break the default run.
    assert ":?" not in str(rabbitmq)


def test_every_required_variable_is_documented_in_compose_env_example_and_dockerfile():
    text = (ROOT / "docker-compose.yml").read_text()
    header = text.split("\n\n", 1)[0] + text.split("x-settle-env", 1)[0]
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert required >= {"SETTLE_JWT_SECRET", "SETTLE_AUDIT_KEY", "POSTGRES_PASSWORD"}
    optional = set(re.findall(r"\$\{([A-Z_]+):-", text))
    env_example = (ROOT / ".env.example").read_text()
    for variable in required | optional | {"SETTLE_RABBITMQ_PASSWORD"}:
        assert variable in header, f"{variable} is not in docker-compose.yml's header"
        assert variable in env_example, f"{variable} is not in .env.example"
    dockerfile = (ROOT / "Dockerfile").read_text()
    for variable in (
        "DATABASE_URL",
        "REDIS_URL",
        "SETTLE_JWT_SECRET",
        "SETTLE_WEBHOOK_ENCRYPTION_KEY",
        "SETTLE_METRICS_TOKEN",
        "SETTLE_AUDIT_KEY",
        "SETTLE_BROKER_URL",
    ):
        assert variable in dockerfile, f"{variable} is not in the Dockerfile's header"
