"""Redis-backed rate limits and login lockouts.

Fixed-window counters (one atomic Lua call per hit) keyed by what is limited:
client IP, account email, user id. Lockouts grow per (account, client address):
after `threshold` consecutive failures the pair is locked for base·2^(n-1) seconds,
capped at `max_seconds`, and a success resets it. Keying lockouts by client too
means an attacker cannot lock the real owner out from the owner's own network,
and the cap means no lockout lasts long.

Redis trouble fails *open* (logged): rate limiting protects the service, it must
not take login or payments down with it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

logger = logging.getLogger("settle.gateway.ratelimit")

_HIT = """
local current = redis.call('INCR', KEYS[1])
if current == 1 or redis.call('PTTL', KEYS[1]) < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return {current, redis.call('PTTL', KEYS[1])}
"""


@dataclass(frozen=True)
class Rule:
    limit: int
    window_seconds: int

    @classmethod
    def parse(cls, text: str) -> Rule:
        """ "30/60" → 30 hits per 60 seconds."""
        count, _, seconds = text.partition("/")
        return cls(limit=int(count), window_seconds=int(seconds))


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int  # seconds until the window resets (when not allowed)


def _digest(value: str) -> str:
    # Emails and IPs are hashed in key names: Redis dumps should not list them.
    return hashlib.sha256(value.lower().encode()).hexdigest()[:32]


class RateLimiter:
    def __init__(self, client: redis.Redis[bytes], *, prefix: str) -> None:
        self._client = client
        self._prefix = f"{prefix}rl:"
        self._hit = client.register_script(_HIT)

    def count(self, bucket: str, subject: str, window_seconds: int) -> tuple[int, int]:
        """Count one more hit in the window; (hits so far, milliseconds left). (0, 0) if down."""
        key = f"{self._prefix}{bucket}:{_digest(subject)}"
        try:
            count, ttl_ms = self._hit(keys=[key], args=[window_seconds * 1000])
        except redis.RedisError:
            logger.warning("rate limiter unavailable; allowing %s", bucket, exc_info=True)
            return 0, 0
        return int(count), int(ttl_ms)

    def hit(self, bucket: str, subject: str, rule: Rule) -> Decision:
        count, ttl_ms = self.count(bucket, subject, rule.window_seconds)
        if count > rule.limit:
            return Decision(False, max(1, -(-int(ttl_ms) // 1000)))
        return Decision(True, 0)


class Lockout:
    def __init__(
        self,
        client: redis.Redis[bytes],
        *,
        prefix: str,
        threshold: int,
        base_seconds: int,
        max_seconds: int,
    ) -> None:
        self._client = client
        self._prefix = f"{prefix}lockout:"
        self.threshold, self.base, self.max = threshold, base_seconds, max_seconds

    def _keys(self, account: str, client: str) -> tuple[str, str, str]:
        pair = f"{_digest(account)}:{_digest(client)}"
        return (
            f"{self._prefix}fails:{pair}",
            f"{self._prefix}lock:{pair}",
            f"{self._prefix}level:{pair}",
        )

    def locked_for(self, account: str, client: str) -> int:
        """Seconds this (account, client) pair remains locked; 0 if not locked."""
        _, lock, _ = self._keys(account, client)
        try:
            ttl = int(self._client.ttl(lock))
        except redis.RedisError:
            logger.warning("lockout store unavailable", exc_info=True)
            return 0
        return max(ttl, 0)

    def record_failure(self, account: str, client: str) -> int:
        """Count a failed login; returns the lockout just imposed (seconds) or 0."""
        fails, lock, level = self._keys(account, client)
        try:
            with self._client.pipeline() as pipe:
                pipe.incr(fails)
                pipe.expire(fails, 24 * 3600)
                count = int(pipe.execute()[0])
            if count < self.threshold:
                return 0
            with self._client.pipeline() as pipe:
                pipe.incr(level)
                pipe.expire(level, 24 * 3600)
                pipe.delete(fails)
                lockouts = int(pipe.execute()[0])
            seconds: int = min(self.base * 2 ** (lockouts - 1), self.max)
            self._client.set(lock, 1, ex=seconds)
            return seconds
        except redis.RedisError:
            logger.warning("lockout store unavailable", exc_info=True)
            return 0

    def record_success(self, account: str, client: str) -> None:
        fails, _, level = self._keys(account, client)
        try:
            self._client.delete(fails, level)
        except redis.RedisError:
            logger.warning("lockout store unavailable", exc_info=True)


class AsyncRateLimiter:
    """The same fixed windows on the event loop, several counters in one round trip."""

    def __init__(self, client: aioredis.Redis[bytes], *, prefix: str) -> None:
        self._client = client
        self._prefix = f"{prefix}rl:"
        self._hit = client.register_script(_HIT)

    async def count_many(self, hits: list[tuple[str, str, int]]) -> list[tuple[int, int]]:
        """(bucket, subject, window seconds) each → (hits so far, ms left); zeros if down."""
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for bucket, subject, window in hits:
                    key = f"{self._prefix}{bucket}:{_digest(subject)}"
                    await self._hit(keys=[key], args=[window * 1000], client=pipe)
                results = await pipe.execute()
        except (redis.RedisError, OSError):
            logger.warning("rate limiter unavailable; allowing", exc_info=True)
            return [(0, 0)] * len(hits)
        return [(int(count), int(ttl)) for count, ttl in results]
