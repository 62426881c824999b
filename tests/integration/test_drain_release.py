"""Letting go of a lane never strands a transfer, whether the drain's last look is the
batch transaction's own last statement or, with a linger, a statement after the wait
for the lane's bell (domain/services/draining.py); and a drain does not run forever.

The drain runs against the real PostgreSQL through the gateway's real accept path;
only the lane markers are a recording stand-in, so the test can commit a transfer at
the worst moment: while the batch's transaction is still open, right before the
marker is let go (a transfer accepted then finds the marker set and publishes no
wake-up of its own).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from domain.lanes import Lanes
from domain.models import Transfer
from domain.services import draining
from tests.factories import (
    lane_of,
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
)
from workers import tasks


class RecordingClaims:
    """draining.LaneClaims that records what the drain asked, and runs `on_release`
    (once) inside the first release. Each wait for the bell takes the next of `rings`:
    it runs it (an accept during the linger, say) and answers "rung"; with none left,
    nothing rang."""

    def __init__(
        self,
        on_release: Callable[[], None] | None = None,
        rings: list[Callable[[], None]] | None = None,
    ) -> None:
        self.calls: list[str] = []
        self._on_release = on_release
        self._rings = list(rings or [])

    def refresh(self, lane: int) -> None:
        self.calls.append("refresh")

    def release(self, lane: int) -> None:
        self.calls.append("release")
        if self._on_release is not None:
            action, self._on_release = self._on_release, None
            action()

    def claim(self, lane: int) -> bool:
        self.calls.append("claim")
        return True

    def hand_on(self, lane: int) -> None:
        self.calls.append("hand_on")

    def others_waiting(self) -> bool:
        return False

    def wait_for_bell(self, lane: int, timeout: float) -> bool:
        self.calls.append("wait")
        if not self._rings:
            return False
        self._rings.pop(0)()
        return True


@pytest.fixture
def funded(
    client, session_factory, drain_pending
) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """A customer's account holding 10,000 (deposit applied), and someone else's."""
    operator = operator_headers(client, session_factory)
    alice = register_and_login(client)
    source = open_account(client, alice)
    sink = open_account(client, register_and_login(client))
    post_deposit(client, operator, source["id"], 10_000)
    drain_pending()
    return alice, source, sink


def _drain(settings: Any, lane: int, claims: RecordingClaims, **policy: Any) -> int:
    policy = {"batch_size": settings.drain_batch_size, "limits": settings.engine_limits, **policy}
    return draining.drain_lane(
        lane=lane,
        lanes=Lanes(settings.lanes),
        units=tasks._units,
        claims=claims,
        policy=draining.DrainPolicy(**policy),
    )


def _acceptor(client: Any, funded: Any) -> tuple[list[str], Callable[[], None]]:
    """A list, and an action that accepts one more transfer of 200 from the funded
    account (on the gateway's own connection, committed at once) and adds its id."""
    alice, source, sink = funded
    late: list[str] = []

    def accept_another() -> None:
        response = post_transfer(client, alice, source["id"], sink["number"], 200)
        assert response.status_code == 202, response.text
        late.append(response.json()["id"])

    return late, accept_another


def _statuses(session_factory: Any, ids: list[str]) -> dict[str, str]:
    with session_factory() as session:
        rows = session.execute(
            select(Transfer.id, Transfer.status).where(Transfer.id.in_([uuid.UUID(i) for i in ids]))
        )
        return {str(transfer_id): status for transfer_id, status in rows}


def test_a_transfer_committed_just_before_the_release_is_applied_by_the_same_drain(
    client, session_factory, settings, funded
):
    alice, source, sink = funded
    first = post_transfer(client, alice, source["id"], sink["number"], 100).json()["id"]
    # Committed while the drain's batch, which applied `first`, has not committed yet.
    late, accept_another = _acceptor(client, funded)

    claims = RecordingClaims(on_release=accept_another)
    applied = _drain(settings, lane_of(uuid.UUID(source["id"])), claims)

    assert applied == 2
    assert _statuses(session_factory, [first, *late]) == {first: "succeeded", late[0]: "succeeded"}
    # Released, saw the late transfer, took the lane back, applied it, released again.
    assert claims.calls == ["release", "claim", "release"]


def test_an_empty_look_lets_the_lane_go(client, session_factory, settings, funded):
    alice, source, sink = funded
    only = post_transfer(client, alice, source["id"], sink["number"], 100).json()["id"]

    claims = RecordingClaims()
    assert _drain(settings, lane_of(uuid.UUID(source["id"])), claims) == 1
    assert _statuses(session_factory, [only]) == {only: "succeeded"}
    assert claims.calls == ["release"]  # nothing pending after it: no claim, no new message


def test_a_batch_that_fails_after_the_release_leaves_its_transfers_pending_for_a_retry(
    client, session_factory, settings, funded
):
    """The marker is let go before the batch commits; if the commit never happens, the
    transfers are still pending (and the task's retry, or the sweeper, applies them)."""
    alice, source, sink = funded
    transfer = post_transfer(client, alice, source["id"], sink["number"], 100).json()["id"]

    class Lost(Exception):
        pass

    def connection_lost() -> None:
        raise Lost("the connection dropped before COMMIT")

    claims = RecordingClaims(on_release=connection_lost)
    lane = lane_of(uuid.UUID(source["id"]))
    try:
        _drain(settings, lane, claims)
    except Lost:
        pass
    else:
        raise AssertionError("the drain should have failed")
    assert _statuses(session_factory, [transfer]) == {transfer: "pending"}

    assert _drain(settings, lane, RecordingClaims()) == 1  # the retry
    assert _statuses(session_factory, [transfer]) == {transfer: "succeeded"}


LINGER = {"linger_seconds": 0.05}


def test_a_lingering_drain_that_is_rung_applies_the_new_transfer_without_letting_go(
    client, session_factory, settings, funded
):
    alice, source, sink = funded
    first = post_transfer(client, alice, source["id"], sink["number"], 100).json()["id"]
    late, accept_another = _acceptor(client, funded)  # accepted while the drain waits

    claims = RecordingClaims(rings=[accept_another])
    applied = _drain(settings, lane_of(uuid.UUID(source["id"])), claims, **LINGER)

    assert applied == 2
    assert _statuses(session_factory, [first, *late]) == {first: "succeeded", late[0]: "succeeded"}
    # Rung: the next batch at once (the marker refreshed, never let go); then nothing
    # rang: let go, and the last look found nothing.
    assert claims.calls == ["wait", "refresh", "wait", "release"]


def test_a_lingering_drain_still_looks_once_more_after_letting_go(
    client, session_factory, settings, funded
):
    """A transfer committed after the drain stopped waiting but before it let go found
    the marker held (so it published nothing): the look after the release applies it."""
    alice, source, sink = funded
    first = post_transfer(client, alice, source["id"], sink["number"], 100).json()["id"]
    late, accept_another = _acceptor(client, funded)

    claims = RecordingClaims(on_release=accept_another)
    applied = _drain(settings, lane_of(uuid.UUID(source["id"])), claims, **LINGER)

    assert applied == 2
    assert _statuses(session_factory, [first, *late]) == {first: "succeeded", late[0]: "succeeded"}
    assert claims.calls == ["wait", "release", "claim", "wait", "release"]


def test_a_drain_past_its_run_time_hands_the_lane_on_instead_of_lingering_on(
    client, session_factory, settings, funded
):
    """Under a load that never lets up a drain would run into the task time limit: past
    `max_run_seconds` a rung (or full) batch hands the lane on with a new message."""
    alice, source, sink = funded
    first = post_transfer(client, alice, source["id"], sink["number"], 100).json()["id"]
    late, accept_another = _acceptor(client, funded)

    claims = RecordingClaims(rings=[accept_another])
    lane = lane_of(uuid.UUID(source["id"]))
    assert _drain(settings, lane, claims, max_run_seconds=0, **LINGER) == 1

    assert claims.calls == ["wait", "hand_on"]  # the marker kept for the new message
    assert _statuses(session_factory, [first, *late]) == {first: "succeeded", late[0]: "pending"}
    assert _drain(settings, lane, RecordingClaims(), **LINGER) == 1  # that message's drain
    assert _statuses(session_factory, late) == {late[0]: "succeeded"}


def test_a_drain_of_full_batches_hands_on_past_its_run_time_too(
    client, session_factory, settings, funded
):
    alice, source, sink = funded
    ids = [
        post_transfer(client, alice, source["id"], sink["number"], 100).json()["id"]
        for _ in range(2)
    ]
    claims = RecordingClaims()
    lane = lane_of(uuid.UUID(source["id"]))
    applied = _drain(settings, lane, claims, batch_size=1, max_run_seconds=0)

    assert applied == 1 and claims.calls == ["hand_on"]
    assert sorted(_statuses(session_factory, ids).values()) == ["pending", "succeeded"]
    assert _drain(settings, lane, RecordingClaims()) == 1  # the handed-on message's drain
