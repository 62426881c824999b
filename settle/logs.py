"""How every Settle process logs: one format, the request id on every line.

`SETTLE_LOG_FORMAT=json` gives one JSON object per line (`ts`, `level`, `logger`,
`message`, `process`, `request_id` when there is one, `exc` for a traceback, and the
fields a call passes as `extra=`, e.g. `transfer_id`); `text` (the default) gives
`time LEVEL logger [request_id] message`. The gateway, the workers, beat and the CLI
all call `configure`; Celery's own logging setup is switched off (workers/celery_app.py
answers its `setup_logging` signal), so Celery's lines take the same format.

The request id: the gateway's middleware sets it per request (domain/context.py);
`before_task_publish` copies it into the Celery message headers of any task published
while serving that request (the engine's wake-ups), and a worker sets it for the
duration of such a task (`bind_task_request_id`), so the drain's log lines name the
request whose wake-up started it.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from domain.context import request_id_var

HEADER = "settle_request_id"
FORMATS = ("text", "json")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record (`%(request_id)s`, "-" when none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        request_id = getattr(record, "request_id", "-")
        if request_id and request_id != "-":
            line["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")


def configure(*, log_format: str = "text", level: str = "INFO") -> None:
    """Replace the root logger's handlers with one stderr handler in `log_format`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # One line per webhook attempt already comes from the task's outcome; httpx's own
    # "HTTP Request: ..." line per request would double it.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def add_request_id_header(headers: dict[str, Any] | None) -> None:
    """For `before_task_publish`: the current request's id travels with the message."""
    request_id = request_id_var.get()
    if headers is not None and request_id and HEADER not in headers:
        headers[HEADER] = request_id


def request_id_of(task_request: Any) -> str | None:
    """The request id a task's message carries (custom headers land on the request)."""
    value = getattr(task_request, HEADER, None)
    if value is None:
        value = (getattr(task_request, "headers", None) or {}).get(HEADER)
    return str(value) if value else None
