"""Liveness, readiness (PostgreSQL, the broker, Redis) and Prometheus metrics
(settle/metrics.py)."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from domain.services import operations
from gateway.errors import problem, problem_responses
from settle.broker import TRANSFERS_QUEUE, WEBHOOKS_QUEUE, ping_rabbitmq, queue_depth
from settle.metrics import StateCollector
from settle.metrics import exposition as metrics_text

QUEUES = (TRANSFERS_QUEUE, WEBHOOKS_QUEUE)

router = APIRouter(tags=["operations"])
logger = logging.getLogger("settle.gateway.health")


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _check_database(request: Request) -> None:
    with request.app.state.session_factory() as session:
        session.execute(text("SELECT 1"))


def _check_redis(request: Request) -> None:
    request.app.state.redis.ping()


def _check_rabbitmq(request: Request) -> None:
    ping_rabbitmq(request.app.state.settings)


Check = Callable[[Request], None]


def _checks(request: Request) -> list[tuple[str, Check]]:
    # With Redis as the broker, `broker` is Redis; with RabbitMQ, Redis (rate limits,
    # lane markers) is checked on its own as `redis`.
    if request.app.state.settings.uses_rabbitmq:
        return [("database", _check_database), ("broker", _check_rabbitmq), ("redis", _check_redis)]
    return [("database", _check_database), ("broker", _check_redis)]


@router.get(
    "/readyz",
    summary="PostgreSQL and the broker answer (and Redis, when RabbitMQ is the broker)",
    responses=problem_responses({503: "A dependency is down"}),
)
async def readyz(request: Request) -> Response:
    checks: dict[str, str] = {}
    for name, check in _checks(request):
        try:
            await run_in_threadpool(check, request)
            checks[name] = "ok"
        except Exception:
            logger.warning("readiness check %s failed", name, exc_info=True)
            checks[name] = "unavailable"
    if all(v == "ok" for v in checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    return problem(503, "not_ready", "a dependency is unavailable", checks=checks)


def _state(request: Request) -> dict[str, Any]:
    """The system's state for the scrape: PostgreSQL's facts and the broker's queues."""
    with request.app.state.session_factory() as session:
        state = operations.snapshot(session=session)
    settings, celery = request.app.state.settings, request.app.state.publisher.celery
    state["queues"] = {
        queue: queue_depth(celery, settings, queue, request.app.state.redis) for queue in QUEUES
    }
    return state


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    token = request.app.state.settings.metrics_token
    if token and not hmac.compare_digest(
        request.headers.get("authorization", ""), f"Bearer {token}"
    ):
        return problem(
            401,
            "not_authenticated",
            "metrics need the metrics bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    body = metrics_text(StateCollector(lambda: _state(request)))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
