"""Writing security events (logins, lockouts, token reuse, denials) to the audit trail.

These happen on requests that fail, so they are written in a short transaction of
their own, never in the request's session (which may roll back). Writing must not
turn a 401 into a 500, so failures to record are logged and swallowed.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import Request

from domain.db import transaction
from domain.services import audit
from gateway.metrics import SECURITY_EVENTS
from gateway.middleware import request_id_var

logger = logging.getLogger("settle.gateway.security")


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def security_record(
    request: Request,
    event_type: str,
    *,
    actor_id: uuid.UUID | None = None,
    subject_type: str | None = None,
    subject_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> audit.AuditRecord:
    return audit.AuditRecord(
        event_type=event_type,
        actor_id=actor_id,
        subject_type=subject_type,
        subject_id=subject_id,
        request_id=request_id_var.get(),
        data={"client": client_address(request), "path": request.url.path, **(data or {})},
    )


def record(request: Request, event_type: str, **kwargs: Any) -> None:
    SECURITY_EVENTS.labels(event_type=event_type).inc()
    try:
        with transaction(request.app.state.session_factory) as session:
            audit.append(session, [security_record(request, event_type, **kwargs)])
    except Exception:
        logger.exception("could not record security event %s", event_type)
