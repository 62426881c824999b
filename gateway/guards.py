"""Request guards: rate limits as FastAPI-friendly calls (429 + Retry-After), and as the
domain's `logins.RateLimits` port."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import Request

from domain.errors import TooManyAttempts
from gateway.errors import ApiError
from gateway.metrics import RATE_LIMITED
from gateway.ratelimit import RateLimiter, Rule


@dataclass
class Guards:
    limiter: RateLimiter

    def retry_after(self, bucket: str, subject: str, rule_text: str) -> int:
        """Count one hit: 0 within the limit, else seconds until the window ends."""
        decision = self.limiter.hit(bucket, subject, Rule.parse(rule_text))
        if decision.allowed:
            return 0
        RATE_LIMITED.labels(bucket=bucket).inc()
        return decision.retry_after

    def enforce(self, bucket: str, subject: str, rule_text: str) -> None:
        wait = self.retry_after(bucket, subject, rule_text)
        if wait:
            raise ApiError(
                429,
                "rate_limited",
                "too many requests; retry after the time given in Retry-After",
                {"Retry-After": str(wait)},
            )


@dataclass(frozen=True)
class BucketLimits:
    """`logins.RateLimits` over the guards, with each bucket's rule ("30/60") from settings."""

    guards: Guards
    rules: Mapping[str, str]

    def retry_after(self, bucket: str, subject: str) -> int:
        return self.guards.retry_after(bucket, subject, self.rules[bucket])


def too_many_attempts(exc: TooManyAttempts) -> ApiError:
    """A domain refusal-for-now as the same 429 the guards answer."""
    return ApiError(429, exc.code, exc.detail, {"Retry-After": str(exc.retry_after)})


def guards(request: Request) -> Guards:
    found: Guards = request.app.state.guards
    return found
