"""Production-safe defaults (issue 10, finding 4).

Fails on the old code: the image did not set SETTLE_ENVIRONMENT, so `docker run`
with only the database URLs started in development with the public keys; /docs
stayed on in production and /metrics could be left open; compose did not require
a metrics token. The gateway side (/docs 404, /metrics 401) is checked over HTTP
in tests/integration/test_production_app.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from settle.config import Settings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s" * 40


def _image_environment() -> dict[str, str]:
    """The SETTLE_* variables the runtime stage of the Dockerfile sets."""
    runtime = (ROOT / "Dockerfile").read_text().split("AS runtime", 1)[1]
    return dict(re.findall(r"\b(SETTLE_[A-Z_]+)=(\S+)", runtime))


@pytest.fixture
def bare_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SETTLE_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)


def test_the_image_refuses_to_start_with_only_the_database_urls(bare_environment, monkeypatch):
    image = _image_environment()
    assert image["SETTLE_ENVIRONMENT"] == "production"
    for name, value in {
        **image,
        "DATABASE_URL": "postgresql://x/y",
        "REDIS_URL": "redis://x",
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="SETTLE_JWT_SECRET must be set"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("SETTLE_JWT_SECRET", SECRET)
    with pytest.raises(ValidationError, match="SETTLE_AUDIT_KEY must be set"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("SETTLE_AUDIT_KEY", SECRET)
    with pytest.raises(ValidationError, match="SETTLE_WEBHOOK_ENCRYPTION_KEY must be set"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("SETTLE_WEBHOOK_ENCRYPTION_KEY", SECRET)
    with pytest.raises(ValidationError, match="SETTLE_METRICS_TOKEN"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("SETTLE_METRICS_TOKEN", SECRET)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.environment == "production"
    assert settings.expose_docs is False
    assert settings.trusted_proxies == []


def test_docs_default_on_outside_production_and_can_be_asked_for(bare_environment):
    keys = {
        "jwt_secret": SECRET,
        "webhook_encryption_key": SECRET,
        "audit_key": SECRET,
        "_env_file": None,
    }
    assert Settings(environment="test", **keys).expose_docs is True  # type: ignore[arg-type]
    production = Settings(environment="production", metrics_token=SECRET, expose_docs=True, **keys)  # type: ignore[arg-type]
    assert production.expose_docs is True


def test_compose_requires_every_secret():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    shared = compose["x-settle-env"]
    for name in (
        "SETTLE_JWT_SECRET",
        "SETTLE_WEBHOOK_ENCRYPTION_KEY",
        "SETTLE_METRICS_TOKEN",
        "SETTLE_AUDIT_KEY",
    ):
        assert f"${{{name}:?" in shared[name], name
    assert "${SETTLE_DB_APP_PASSWORD:?" in shared["DATABASE_URL"]
    assert shared["SETTLE_ENVIRONMENT"] == "production"
    flower = compose["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"]
    assert "${FLOWER_BASIC_AUTH:?" in flower
