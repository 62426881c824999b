"""How queued webhook deliveries become broker messages: one per endpoint and chunk."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from domain.uow import QueuedDelivery
from settle.broker import DELIVER_WEBHOOKS_TASK, WEBHOOKS_QUEUE
from workers import resources
from workers.celery_app import app


def test_deliveries_are_grouped_by_endpoint_and_chunked(monkeypatch: pytest.MonkeyPatch):
    published: list[tuple[str, list[str], str]] = []
    shown: list[str] = []

    def send_task(name: str, *, args: list[Any], queue: str, argsrepr: str) -> None:
        published.append((name, args[0], queue))
        shown.append(argsrepr)

    monkeypatch.setattr(app, "send_task", send_task)
    slow, busy = uuid.uuid4(), uuid.uuid4()
    to_busy = [
        QueuedDelivery(busy, uuid.uuid4()) for _ in range(resources.DELIVERIES_PER_MESSAGE + 1)
    ]
    to_slow = QueuedDelivery(slow, uuid.uuid4())
    resources._CeleryDeliveries().send([to_busy[0], to_slow, *to_busy[1:]])

    assert {name for name, _, _ in published} == {DELIVER_WEBHOOKS_TASK}
    assert {queue for _, _, queue in published} == {WEBHOOKS_QUEUE}
    messages = [ids for _, ids, _ in published]
    # The slow endpoint's delivery travels alone; the busy endpoint's, in order, in chunks.
    assert [str(to_slow.delivery_id)] in messages
    busy_messages = [m for m in messages if m != [str(to_slow.delivery_id)]]
    assert [len(m) for m in busy_messages] == [resources.DELIVERIES_PER_MESSAGE, 1]
    assert [i for m in busy_messages for i in m] == [str(q.delivery_id) for q in to_busy]
    # What Flower shows as the task's arguments: how many, and to which endpoint.
    assert f"1 delivery(ies) to endpoint {slow}" in shown
    assert f"{resources.DELIVERIES_PER_MESSAGE} delivery(ies) to endpoint {busy}" in shown
