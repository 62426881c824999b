"""The request the current code runs for, so logs and audit rows can name it.

The gateway's middleware sets it for each HTTP request; a worker sets it, for the
duration of a task, to the request whose message started the task (the Celery
header `settle_request_id`, see settle/logs.py). A context variable, so concurrent
requests on one event loop, and threads, each see their own.
"""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("settle_request_id", default=None)


def current_request_id() -> str | None:
    return request_id_var.get()
