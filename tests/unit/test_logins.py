"""The login policy with in-memory stores: throttling, growing capped lockouts, the trail.

The credential check and the session writes are stubbed; the Redis stores and the
whole flow over HTTP are tested in tests/unit/test_ratelimit.py and
tests/integration/test_security_controls.py.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest

from domain.errors import AuthenticationFailed, TooManyAttempts
from domain.models import User
from domain.services import audit, logins, sessions, users

EMAIL, CLIENT, PASSWORD = "ada@example.com", "10.0.0.7", "correct horse battery"
Pair = tuple[str, str]


class FakeLimits:
    def __init__(self, refuse: dict[str, int] | None = None) -> None:
        self.refuse = refuse or {}
        self.hits: list[tuple[str, str]] = []

    def retry_after(self, bucket: str, subject: str) -> int:
        self.hits.append((bucket, subject))
        return self.refuse.get(bucket, 0)


class FakeLockouts:
    """Counts in dicts; locks expire against a clock the test moves (`now`)."""

    def __init__(self, *, down: bool = False) -> None:
        self.now = 0
        self.down = down
        self.fails: Counter[Pair] = Counter()
        self.levels: Counter[Pair] = Counter()
        self.until: dict[Pair, int] = {}

    def locked_for(self, account: str, client: str) -> int:
        return max(self.until.get((account, client), 0) - self.now, 0)

    def add_failure(self, account: str, client: str) -> int:
        self.fails[account, client] += 1
        return self.fails[account, client]

    def add_lockout(self, account: str, client: str) -> int:
        if self.down:
            return 0
        del self.fails[account, client]
        self.levels[account, client] += 1
        return self.levels[account, client]

    def lock(self, account: str, client: str, seconds: int) -> bool:
        self.until[account, client] = self.now + seconds
        return True

    def reset(self, account: str, client: str) -> None:
        del self.fails[account, client], self.levels[account, client]


class FakeMonitor:
    def __init__(self) -> None:
        self.events: list[audit.AuditRecord] = []
        self.flags: list[str] = []

    def record(self, event: audit.AuditRecord) -> None:
        self.events.append(event)

    def flag(self, kind: str) -> None:
        self.flags.append(kind)

    def types(self) -> list[str]:
        return [e.event_type for e in self.events]


def make_logins(
    *, limits: FakeLimits | None = None, lockouts: FakeLockouts | None = None
) -> logins.Logins:
    return logins.Logins(
        rate_limits=limits or FakeLimits(),
        lockouts=lockouts or FakeLockouts(),
        monitor=FakeMonitor(),
        policy=logins.LockoutPolicy(threshold=3, base_seconds=10, max_seconds=25),
        refresh_ttl_seconds=60,
    )


ADA = User(id=uuid.uuid4(), email=EMAIL, role="customer")


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stubs the session work; only PASSWORD is right, and each password checked is listed."""
    passwords: list[str] = []

    def authenticate(*, session: Any, email: str, password: str) -> User:
        passwords.append(password)
        if password != PASSWORD:
            raise AuthenticationFailed("invalid email or password", code="invalid_credentials")
        return ADA

    monkeypatch.setattr(users, "authenticate", authenticate)
    monkeypatch.setattr(sessions, "issue_refresh_token", lambda **_: "rt_new")
    # The "session" is a list: what the service appends to the caller's transaction.
    monkeypatch.setattr(audit, "append", lambda session, records: session.extend(records))
    return passwords


def attempt(service: logins.Logins, password: str, written: list[Any] | None = None) -> Any:
    """The lockout imposed (0 if none) or the refusal, for a failed attempt; the login if not."""
    origin = audit.Origin(client=CLIENT, path="/v1/auth/token", request_id="req-1")
    cmd = logins.LogIn(email=EMAIL, password=password, origin=origin)
    try:
        return service.log_in(session=written if written is not None else [], cmd=cmd)
    except (AuthenticationFailed, TooManyAttempts) as exc:
        return exc


def monitor(service: logins.Logins) -> FakeMonitor:
    assert isinstance(service.monitor, FakeMonitor)
    return service.monitor


def test_lockout_durations_double_from_the_base_up_to_the_cap():
    policy = logins.LockoutPolicy(threshold=3, base_seconds=10, max_seconds=25)
    assert [policy.duration(n) for n in (1, 2, 3, 4)] == [10, 20, 25, 25]


def test_every_threshold_failures_lock_the_pair_longer_and_are_flagged(checked):
    lockouts = FakeLockouts()
    service = make_logins(lockouts=lockouts)
    imposed = []
    for _ in range(3):
        assert all(isinstance(attempt(service, "wrong"), AuthenticationFailed) for _ in range(3))
        imposed.append(lockouts.locked_for(EMAIL, CLIENT))
        lockouts.now += 1000  # the lock expires
    assert imposed == [10, 20, 25]
    trail = monitor(service)
    assert trail.types().count("auth.login_failed") == 9
    assert [e.data["seconds"] for e in trail.events if e.event_type == "auth.lockout"] == imposed
    assert trail.flags == ["failed_login_burst"] * 3
    assert trail.events[0].data == {"client": CLIENT, "path": "/v1/auth/token", "email": EMAIL}
    assert trail.events[0].request_id == "req-1"


def test_a_locked_pair_is_refused_before_any_password_work(checked):
    service = make_logins()
    for _ in range(3):
        attempt(service, "wrong")
    refused = attempt(service, PASSWORD)
    assert isinstance(refused, TooManyAttempts)
    assert (refused.code, refused.retry_after) == ("login_locked", 10)
    assert refused.detail == "too many failed logins; try again later"
    assert checked == ["wrong"] * 3
    assert monitor(service).types()[-1] == "auth.login_locked"


def test_success_resets_the_failure_count_and_is_audited_in_the_callers_transaction(checked):
    lockouts = FakeLockouts()
    service = make_logins(lockouts=lockouts)
    attempt(service, "wrong")
    attempt(service, "wrong")
    written: list[audit.AuditRecord] = []
    done = attempt(service, PASSWORD, written)
    assert (done.user, done.refresh_token) == (ADA, "rt_new")
    [succeeded] = written
    assert (succeeded.event_type, succeeded.actor_id) == ("auth.login_succeeded", ADA.id)
    assert "auth.login_succeeded" not in monitor(service).types()  # not outside the transaction
    for _ in range(2):
        attempt(service, "wrong")
    assert lockouts.locked_for(EMAIL, CLIENT) == 0  # two failures since the success, not four


# The client is limited first: an attempt refused for its client never counts on the account.
@pytest.mark.parametrize(
    ("bucket", "counted"),
    [
        (logins.PER_CLIENT, [(logins.PER_CLIENT, CLIENT)]),
        (logins.PER_ACCOUNT, [(logins.PER_CLIENT, CLIENT), (logins.PER_ACCOUNT, EMAIL)]),
    ],
)
def test_throttled_attempts_do_nothing_else(checked, bucket, counted):
    limits = FakeLimits(refuse={bucket: 7})
    lockouts = FakeLockouts()
    service = make_logins(limits=limits, lockouts=lockouts)
    refused = attempt(service, "wrong")
    assert isinstance(refused, TooManyAttempts)
    assert (refused.code, refused.retry_after) == ("rate_limited", 7)
    assert limits.hits == counted
    assert checked == [] and not lockouts.fails and not monitor(service).events


def test_a_store_that_cannot_count_lockouts_fails_open(checked):
    lockouts = FakeLockouts(down=True)
    service = make_logins(lockouts=lockouts)
    assert all(isinstance(attempt(service, "wrong"), AuthenticationFailed) for _ in range(4))
    assert lockouts.locked_for(EMAIL, CLIENT) == 0
    assert "auth.lockout" not in monitor(service).types() and not monitor(service).flags
