"""A gateway built with production settings: /docs off, /metrics behind its token
(issue 10, finding 4). On the old code /docs, /redoc and /openapi.json answered
in production unless someone remembered SETTLE_EXPOSE_DOCS=false, and /metrics
was open unless a token was set."""

from __future__ import annotations

import secrets

from fastapi.testclient import TestClient

from settle.config import Settings


def test_production_hides_docs_and_guards_metrics(settings, redis_client):
    from gateway.app import create_app

    token = secrets.token_urlsafe(32)
    prefix = f"{settings.redis_prefix}prod-{secrets.token_hex(3)}:"
    values = settings.model_dump(exclude={"expose_docs", "jwt_keys"})
    production = Settings(
        **{**values, "environment": "production", "metrics_token": token, "redis_prefix": prefix}
    )
    try:
        with TestClient(create_app(production), raise_server_exceptions=False) as client:
            for path in ("/docs", "/redoc", "/openapi.json"):
                assert client.get(path).status_code == 404, path
            assert client.get("/metrics").status_code == 401
            wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            right = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert right.status_code == 200
    finally:
        for key in redis_client.scan_iter(match=f"{prefix}*"):
            redis_client.delete(key)
