"""Logging in: throttling, lockouts, the credential check, and the trail each attempt leaves.

Attempts are rate-limited per client address, then per account. Repeated failures
lock the (account, client) pair: after `threshold` consecutive failures for
base·2^(n-1) seconds (the n-th lockout), capped, and a success resets the count.
Keying lockouts by client too means an attacker cannot lock the real owner out
from the owner's own network, and the cap means no lockout lasts long. Unknown
emails count and lock exactly like wrong passwords, so lockouts reveal nothing
about who has an account.

Counters live behind ports (`RateLimits`, `LockoutStore`; Redis in production).
A store that is down answers as if empty: throttling protects the service and
must not take login down with it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.orm import Session

from domain import anomalies
from domain.errors import AuthenticationFailed, TooManyAttempts
from domain.models import User
from domain.services import audit, sessions, users

# Bucket names are part of the stores' keys: renaming one resets its windows.
PER_CLIENT = "login-ip"
PER_ACCOUNT = "login-account"


class RateLimits(Protocol):
    """Fixed-window limits on attempts; each bucket has its own limit and window."""

    def retry_after(self, bucket: str, subject: str) -> int:
        """Count an attempt by `subject`: 0 within the limit, else seconds until the window ends."""
        ...


class LockoutStore(Protocol):
    """Failure counts and locks per (account, client) pair; counts are forgotten after a day."""

    def locked_for(self, account: str, client: str) -> int:
        """Seconds the pair stays locked; 0 if it is not."""
        ...

    def add_failure(self, account: str, client: str) -> int:
        """Count a failure: the pair's failures since its last lockout or success."""
        ...

    def add_lockout(self, account: str, client: str) -> int:
        """Count a lockout and clear the failure count: the pair's lockouts so far, this one
        included (0 if the store could not count it)."""
        ...

    def lock(self, account: str, client: str, seconds: int) -> bool:
        """Lock the pair for `seconds`; False if the store could not."""
        ...

    def reset(self, account: str, client: str) -> None:
        """Forget the pair's failures and lockouts (after a success)."""
        ...


@dataclass(frozen=True, kw_only=True)
class LockoutPolicy:
    threshold: int  # consecutive failures that lock the pair
    base_seconds: int
    max_seconds: int

    def duration(self, lockouts: int) -> int:
        """How long the pair's n-th lockout lasts: base·2^(n-1) seconds, capped."""
        doublings = max(lockouts - 1, 0)
        return min(self.base_seconds * (1 << doublings), self.max_seconds)


@dataclass(frozen=True, kw_only=True)
class LogIn:
    email: str  # as typed; normalised (users.normalise_email) before anything keys on it
    password: str
    origin: audit.Origin


@dataclass(frozen=True, kw_only=True)
class LoggedIn:
    user: User
    refresh_token: str
    family_id: uuid.UUID  # the session: access tokens name it in their `sid`


@dataclass(frozen=True, kw_only=True)
class Logins:
    """The login use case with its stores; one per process."""

    rate_limits: RateLimits
    lockouts: LockoutStore
    monitor: audit.SecurityMonitor
    policy: LockoutPolicy
    refresh_ttl_seconds: int

    def log_in(self, *, session: Session, cmd: LogIn) -> LoggedIn:
        """A refresh token for correct credentials, in `session` with its audit event.

        Raises TooManyAttempts (throttled, or the pair is locked) before any
        password work, and AuthenticationFailed for wrong credentials; the events
        of refused attempts go to the monitor, since `session` will roll back.
        """
        # One identity for every variant of the address: the counters, the lockout
        # and the credential check all key on the normalised form.
        email, client = users.normalise_email(cmd.email), cmd.origin.client
        self._throttle(PER_CLIENT, client)
        self._throttle(PER_ACCOUNT, email)
        locked_for = self.lockouts.locked_for(email, client)
        if locked_for:
            self._record(cmd, email, "auth.login_locked")
            raise TooManyAttempts(
                "too many failed logins; try again later",
                code="login_locked",
                retry_after=locked_for,
            )
        try:
            user = users.authenticate(session=session, email=email, password=cmd.password)
        except AuthenticationFailed:
            imposed = self._count_failure(email, client)
            self._record(cmd, email, "auth.login_failed")
            if imposed:
                self.monitor.flag(anomalies.FAILED_LOGIN_BURST)
                self._record(cmd, email, "auth.lockout", seconds=imposed)
            raise
        self.lockouts.reset(email, client)
        family_id = uuid.uuid4()
        token = sessions.issue_refresh_token(
            session=session, user=user, ttl_seconds=self.refresh_ttl_seconds, family_id=family_id
        )
        # In the request's own transaction: no success is recorded unless the token is.
        audit.append(
            session,
            [
                cmd.origin.record(
                    "auth.login_succeeded",
                    actor_id=user.id,
                    subject_type="user",
                    subject_id=str(user.id),
                )
            ],
        )
        return LoggedIn(user=user, refresh_token=token, family_id=family_id)

    def _throttle(self, bucket: str, subject: str) -> None:
        wait = self.rate_limits.retry_after(bucket, subject)
        if wait:
            # Word for word what every other rate limit of the API answers.
            raise TooManyAttempts(
                "too many requests; retry after the time given in Retry-After", retry_after=wait
            )

    def _count_failure(self, email: str, client: str) -> int:
        """Count a failure; the lockout it imposes (seconds), or 0."""
        if self.lockouts.add_failure(email, client) < self.policy.threshold:
            return 0
        lockouts = self.lockouts.add_lockout(email, client)
        if lockouts < 1:
            return 0  # the store is down: fail open
        seconds = self.policy.duration(lockouts)
        return seconds if self.lockouts.lock(email, client, seconds) else 0

    def _record(self, cmd: LogIn, email: str, event_type: str, **data: object) -> None:
        self.monitor.record(cmd.origin.record(event_type, data={"email": email, **data}))
