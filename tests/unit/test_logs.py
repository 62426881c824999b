"""settle/logs.py: one JSON object per line with the request id and the call's fields,
and the request id handed to Celery message headers and back."""

from __future__ import annotations

import io
import json
import logging
from types import SimpleNamespace

from domain.context import request_id_var
from settle import logs


def _logger(log_format: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RequestIdFilter())
    handler.setFormatter(logs.formatter(log_format))
    logger = logging.getLogger(f"settle.test.{log_format}")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_json_lines_carry_the_request_id_the_fields_and_the_traceback():
    logger, stream = _logger("json")
    token = request_id_var.set("req-123")
    try:
        logger.info("transfer %s succeeded", "t-1", extra={"transfer_id": "t-1"})
        try:
            raise ValueError("multi\nline")
        except ValueError:
            logger.exception("it broke")
    finally:
        request_id_var.reset(token)
    logger.info("outside a request")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # the traceback stays inside its line
    first, second, third = (json.loads(line) for line in lines)
    assert first["message"] == "transfer t-1 succeeded" and first["level"] == "INFO"
    assert first["request_id"] == "req-123" and first["transfer_id"] == "t-1"
    assert "ValueError: multi\nline" in second["exc"]
    assert "request_id" not in third


def test_text_lines_show_the_request_id_in_brackets():
    logger, stream = _logger("text")
    token = request_id_var.set("req-9")
    try:
        logger.info("hello")
    finally:
        request_id_var.reset(token)
    assert "INFO settle.test.text [req-9] hello" in stream.getvalue()


def test_the_request_id_travels_in_task_headers():
    headers: dict[str, str] = {}
    logs.add_request_id_header(headers)
    assert headers == {}  # no request, no header
    token = request_id_var.set("req-7")
    try:
        logs.add_request_id_header(headers)
    finally:
        request_id_var.reset(token)
    assert headers == {logs.HEADER: "req-7"}
    assert logs.request_id_of(SimpleNamespace(**headers)) == "req-7"
    assert logs.request_id_of(SimpleNamespace(headers=headers)) == "req-7"
    assert logs.request_id_of(SimpleNamespace()) is None


def _batch(code: str | None):
    import uuid
    from datetime import UTC, datetime, timedelta

    from domain.services.engine import BatchResult, Finished

    now = datetime.now(UTC)
    finished = Finished(
        uuid.uuid4(), "transfer", code, 700, "EUR", now - timedelta(milliseconds=40), now
    )
    return BatchResult(finished=[finished]), finished


def test_one_info_line_per_transfer_outcome_unless_switched_off(monkeypatch, caplog):
    from settle.config import get_settings
    from workers.tasks import report_batch

    result, finished = _batch("insufficient_funds")
    get_settings.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="settle.transfers"):
            report_batch(result)
        [line] = [r for r in caplog.records if r.name == "settle.transfers"]
        assert line.levelno == logging.INFO
        assert line.transfer_id == str(finished.id)  # type: ignore[attr-defined]
        assert line.failure_code == "insufficient_funds"  # type: ignore[attr-defined]
        assert "failed (insufficient_funds): transfer of 700 EUR" in line.getMessage()

        caplog.clear()
        monkeypatch.setenv("SETTLE_LOG_TRANSFER_OUTCOMES", "false")
        get_settings.cache_clear()
        with caplog.at_level(logging.INFO, logger="settle.transfers"):
            report_batch(result)
        assert not [r for r in caplog.records if r.name == "settle.transfers"]
    finally:
        get_settings.cache_clear()
