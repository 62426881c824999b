"""Liveness, readiness (PostgreSQL, the broker, Redis) and Prometheus metrics."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from domain.services import transfers, verify
from gateway.errors import problem, problem_responses
from gateway.metrics import (
    LEDGER_VERIFY_OK,
    LEDGER_VERIFY_PROBLEMS,
    LEDGER_VERIFY_TIMESTAMP,
    TRANSFERS_QUARANTINED,
)
from settle.broker import ping_rabbitmq

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


def _refresh_ledger_gauges(request: Request) -> None:
    """Verification runs in the workers (beat); its latest result and the count of
    quarantined transfers live in PostgreSQL."""
    with request.app.state.session_factory() as session:
        latest = verify.latest(session=session)
        TRANSFERS_QUARANTINED.set(transfers.count_quarantined(session=session))
    if latest is not None:
        LEDGER_VERIFY_OK.set(1 if latest.ok else 0)
        LEDGER_VERIFY_PROBLEMS.set(latest.problems)
        LEDGER_VERIFY_TIMESTAMP.set(latest.ran_at.timestamp())


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
    try:
        _refresh_ledger_gauges(request)
    except Exception:
        logger.warning("could not read the latest ledger verification", exc_info=True)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
