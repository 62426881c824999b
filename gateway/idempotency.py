"""Reading the Idempotency-Key header and fingerprinting the request it protects."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from domain.services.acceptance import Idempotency
from gateway.errors import ApiError

MAX_KEY_LENGTH = 255


def fingerprint(method: str, path: str, body: dict[str, Any]) -> str:
    """Same method, path and body (ignoring key order and whitespace) give the same hash."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method.upper()} {path}\n{canonical}".encode()).hexdigest()


def require_key(header: str | None, *, method: str, path: str, body: dict[str, Any]) -> Idempotency:
    if header is None or not header.strip():
        raise ApiError(
            400,
            "idempotency_key_missing",
            "the Idempotency-Key header is required for this request",
        )
    key = header.strip()
    if len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ApiError(
            400,
            "idempotency_key_invalid",
            f"the Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters",
        )
    return Idempotency(key=key, fingerprint=fingerprint(method, path, body))
