"""Request guards: rate limits and login lockouts as FastAPI-friendly calls (429 + Retry-After)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from gateway.errors import ApiError
from gateway.metrics import RATE_LIMITED
from gateway.ratelimit import Lockout, RateLimiter, Rule


@dataclass
class Guards:
    limiter: RateLimiter
    lockout: Lockout

    def enforce(self, bucket: str, subject: str, rule_text: str) -> None:
        decision = self.limiter.hit(bucket, subject, Rule.parse(rule_text))
        if not decision.allowed:
            RATE_LIMITED.labels(bucket=bucket).inc()
            raise ApiError(
                429,
                "rate_limited",
                "too many requests; retry after the time given in Retry-After",
                {"Retry-After": str(decision.retry_after)},
            )


def guards(request: Request) -> Guards:
    found: Guards = request.app.state.guards
    return found
