"""Every error the domain raises on purpose, in one hierarchy.

Each carries a stable machine `code`; the gateway maps the classes to HTTP
statuses in exactly one place (`gateway/errors.py`).
"""

from __future__ import annotations


class DomainError(Exception):
    code = "domain_error"
    title = "Request could not be processed"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class InvalidRequest(DomainError):
    """The request is well-formed but breaks a rule (unknown currency, same account, ...)."""

    code = "invalid_request"
    title = "Invalid request"


class NotFound(DomainError):
    """Missing, or belonging to someone else: callers cannot tell the difference."""

    code = "not_found"
    title = "Not found"


class Conflict(DomainError):
    code = "conflict"
    title = "Conflict"


class PermissionDenied(DomainError):
    code = "forbidden"
    title = "Forbidden"


class AuthenticationFailed(DomainError):
    code = "authentication_failed"
    title = "Authentication failed"


class TooManyAttempts(DomainError):
    """Refused for now (a rate limit, a login lockout): try again after `retry_after` seconds."""

    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.retry_after = retry_after


class BatchRejected(InvalidRequest):
    """Some items of a batch were refused, so none was accepted; `errors` names them."""

    code = "batch_rejected"
    title = "Batch refused"

    def __init__(self, detail: str, *, errors: list[dict[str, object]]) -> None:
        super().__init__(detail)
        self.errors = errors


class IdempotencyKeyInFlight(Conflict):
    """Same Idempotency-Key while the first request with it is still being processed."""

    code = "idempotency_key_in_flight"
    title = "A request with this Idempotency-Key is still in flight"


class IdempotencyKeyReused(DomainError):
    """Same Idempotency-Key, different request."""

    code = "idempotency_key_reused"
    title = "Idempotency key reused with a different request"
