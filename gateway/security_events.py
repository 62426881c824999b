"""Writing security events (logins, lockouts, token reuse, denials, anomalies) to the audit trail.

These happen on requests that fail, so they are written in a short transaction of
their own, never in the request's session (which may roll back). Writing must not
turn a 401 into a 500, so failures to record are logged and swallowed.
`SecurityLog` is that writer as the domain's `audit.SecurityMonitor` port.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker

from domain.services import audit
from domain.uow import unit_of_work
from gateway.metrics import ANOMALIES, SECURITY_EVENTS
from gateway.middleware import request_id_var

logger = logging.getLogger("settle.gateway.security")


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def origin(request: Request) -> audit.Origin:
    return audit.Origin(
        client=client_address(request), path=request.url.path, request_id=request_id_var.get()
    )


def security_record(
    request: Request,
    event_type: str,
    *,
    actor_id: uuid.UUID | None = None,
    subject_type: str | None = None,
    subject_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> audit.AuditRecord:
    return origin(request).record(
        event_type, actor_id=actor_id, subject_type=subject_type, subject_id=subject_id, data=data
    )


class SecurityLog:
    """Writes each event at once, in a transaction of its own, and counts it."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def record(self, event: audit.AuditRecord) -> None:
        SECURITY_EVENTS.labels(event_type=event.event_type).inc()
        try:
            with unit_of_work(self._session_factory) as uow:
                audit.append(uow.session, [event])
        except Exception:
            logger.exception("could not record security event %s", event.event_type)

    def flag(self, kind: str) -> None:
        ANOMALIES.labels(kind=kind).inc()


def record(request: Request, event_type: str, **kwargs: Any) -> None:
    SecurityLog(request.app.state.session_factory).record(
        security_record(request, event_type, **kwargs)
    )
