"""Liveness, readiness (PostgreSQL and the broker) and Prometheus metrics (settle/metrics.py)."""

from __future__ import annotations

import hmac
import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from domain.services import operations
from gateway.errors import problem, problem_responses
from settle.broker import TRANSFERS_QUEUE, WEBHOOKS_QUEUE
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


def _check_broker(request: Request) -> None:
    request.app.state.redis.ping()


@router.get(
    "/readyz",
    summary="PostgreSQL and the broker answer",
    responses=problem_responses({503: "A dependency is down"}),
)
async def readyz(request: Request) -> Response:
    checks: dict[str, str] = {}
    for name, check in (("database", _check_database), ("broker", _check_broker)):
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
    prefix = request.app.state.settings.redis_prefix
    # Kombu's Redis transport keeps each queue as a list under the key prefix.
    with request.app.state.redis.pipeline(transaction=False) as pipe:
        for queue in QUEUES:
            pipe.llen(f"{prefix}{queue}")
        lengths = pipe.execute()
    state["queues"] = dict(zip(QUEUES, (int(n) for n in lengths), strict=True))
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
