"""Separation of duties (issue 10, finding 2): no operator acts on their own account, and
large deposits and every limit change need a second operator (four eyes).

On the code before this change, `test_one_operator_alone_can_no_longer_mint_and_pay_out`
fails at its first step: the deposit of 100,000,000 into the operator's own account
was accepted (202, a transfer), as were the limit raise (200) and the withdrawals.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from domain.models import Approval, Transfer
from tests.factories import (
    decide,
    idem,
    login,
    make_user,
    open_account,
    operator_headers,
    register_and_login,
)

MINT = 100_000_000  # the tester's amount; SETTLE_APPROVAL_THRESHOLD defaults to 10,000,000


def _operator(client, session_factory):
    """An operator's headers and id."""
    user = make_user(session_factory, role="operator")
    return login(client, user.email), str(user.id)


def _deposit(client, headers, account_id, amount, key=None):
    return client.post(
        "/v1/deposits",
        json={"account_id": account_id, "amount": amount, "currency": "USD"},
        headers={**headers, "Idempotency-Key": key or f"test-{uuid.uuid4()}"},
    )


def _withdraw(client, headers, account_id, amount):
    return client.post(
        "/v1/withdrawals",
        json={"account_id": account_id, "amount": amount, "currency": "USD"},
        headers={**headers, **idem()},
    )


def _limits(client, headers, account_id, body):
    return client.patch(f"/v1/admin/accounts/{account_id}/limits", json=body, headers=headers)


def _transfers_into(session_factory, account_id):
    with session_factory() as session:
        return session.scalar(
            select(func.count())
            .select_from(Transfer)
            .where(Transfer.destination_account_id == uuid.UUID(account_id))
        )


def _audit(client, headers, event_type, subject_id):
    response = client.get(
        "/v1/admin/audit-events", params={"event_type": event_type, "limit": 200}, headers=headers
    )
    assert response.status_code == 200, response.text
    return [e for e in response.json()["data"] if e["subject_id"] == subject_id]


def _parked_deposit(client, session_factory, amount=MINT):
    """A pending deposit approval: (requester, its id), a second operator, the account."""
    (requester, requester_id), (approver, _) = (
        _operator(client, session_factory),
        _operator(client, session_factory),
    )
    customer = register_and_login(client)
    account = open_account(client, customer)
    asked = _deposit(client, requester, account["id"], amount)
    assert asked.status_code == 202, asked.text
    return (requester, requester_id), approver, account, asked.json()


def test_one_operator_alone_can_no_longer_mint_and_pay_out(client, session_factory, drain_pending):
    """Regression, finding 2: deposit 100,000,000 into one's own account, raise its limits
    to 2^62, withdraw. Each step is refused or parked; with a second operator (on an
    account neither owns) the flow works, and the requester cannot approve it."""
    mallory, mallory_id = _operator(client, session_factory)
    own = open_account(client, mallory)

    # Alone, on an account of their own: refused, whatever the amount.
    for amount in (MINT, 1):
        refused = _deposit(client, mallory, own["id"], amount)
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "own_account"
    raised = _limits(client, mallory, own["id"], {"overdraft_limit": 2**62})
    assert raised.status_code == 403 and raised.json()["code"] == "own_account"
    assert _transfers_into(session_factory, own["id"]) == 0
    for _ in range(2):
        assert _withdraw(client, mallory, own["id"], MINT).status_code == 202
    drain_pending()
    balance = client.get(f"/v1/accounts/{own['id']}", headers=mallory).json()["balance"]
    assert balance == 0  # both withdrawals failed: insufficient funds, no overdraft

    # Another operator may ask for a deposit into it; its owner still cannot approve that.
    helper, _ = _operator(client, session_factory)
    parked = _deposit(client, helper, own["id"], MINT)
    assert parked.status_code == 202 and parked.json()["status"] == "pending"
    mine = decide(client, mallory, parked.json()["id"], "approve")
    assert mine.status_code == 403 and mine.json()["code"] == "own_account"

    # The legitimate flow: one operator asks, another approves.
    customer = register_and_login(client)
    account = open_account(client, customer)
    asked = _deposit(client, mallory, account["id"], MINT)
    assert asked.status_code == 202, asked.text
    approval = asked.json()
    assert approval["action"] == "deposit" and approval["status"] == "pending"
    assert approval["requested_by"] == mallory_id
    assert asked.headers["Location"] == f"/v1/admin/approvals/{approval['id']}"
    assert _transfers_into(session_factory, account["id"]) == 0  # nothing moves yet

    own_approval = decide(client, mallory, approval["id"], "approve")
    assert own_approval.status_code == 403 and own_approval.json()["code"] == "own_request"
    approver, approver_id = _operator(client, session_factory)
    approved = decide(client, approver, approval["id"], "approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved" and approved.json()["decided_by"] == approver_id
    transfer_id = approved.json()["transfer_id"]
    drain_pending()
    deposit = client.get(f"/v1/transfers/{transfer_id}", headers=customer).json()
    assert deposit["status"] == "succeeded" and deposit["amount"] == MINT

    limits = _limits(client, mallory, account["id"], {"overdraft_limit": 5_000})
    assert limits.status_code == 202 and limits.json()["action"] == "limits_change"
    assert decide(client, mallory, limits.json()["id"], "approve").status_code == 403
    assert decide(client, approver, limits.json()["id"], "approve").status_code == 200
    # The customer can now pay out all of it and 5,000 more (the approved overdraft).
    withdrawn = [_withdraw(client, customer, account["id"], n).json() for n in (MINT, 5_000)]
    drain_pending()
    for w in withdrawn:
        status = client.get(f"/v1/transfers/{w['id']}", headers=customer).json()["status"]
        assert status == "succeeded"
    assert client.get(f"/v1/accounts/{account['id']}", headers=customer).json()["balance"] == (
        -5_000
    )

    # Every step is audited.
    assert _audit(client, approver, "approval.requested", approval["id"])
    assert _audit(client, approver, "approval.approved", approval["id"])[0]["actor_id"] == (
        approver_id
    )


def test_an_operator_cannot_unfreeze_their_own_account(client, session_factory):
    """Regression, finding 2: a frozen account of an operator's own stays frozen."""
    mallory, _ = _operator(client, session_factory)
    other, _ = _operator(client, session_factory)
    own = open_account(client, mallory)
    assert client.post(f"/v1/admin/accounts/{own['id']}/freeze", headers=other).status_code == 200
    refused = client.post(f"/v1/admin/accounts/{own['id']}/unfreeze", headers=mallory)
    assert refused.status_code == 403 and refused.json()["code"] == "own_account"
    # Freezing one's own account is fine; unfreezing it is another operator's job.
    assert client.post(f"/v1/admin/accounts/{own['id']}/unfreeze", headers=other).status_code == (
        200
    )


def test_an_approver_cannot_approve_into_their_own_account(client, session_factory):
    requester, _ = _operator(client, session_factory)
    owner, _ = _operator(client, session_factory)
    own = open_account(client, owner)
    parked = _deposit(client, requester, own["id"], MINT).json()
    refused = decide(client, owner, parked["id"], "approve")
    assert refused.status_code == 403 and refused.json()["code"] == "own_account"
    limits = _limits(client, requester, own["id"], {"daily_outgoing_limit": 1}).json()
    refused = decide(client, owner, limits["id"], "approve")
    assert refused.status_code == 403 and refused.json()["code"] == "own_account"
    assert (
        client.get(f"/v1/admin/approvals/{parked['id']}", headers=owner).json()["status"]
        == "pending"
    )


def test_below_the_threshold_a_deposit_is_accepted_at_once(client, session_factory):
    operator = operator_headers(client, session_factory)
    account = open_account(client, register_and_login(client))
    response = _deposit(client, operator, account["id"], 10_000_000 - 1)
    assert response.status_code == 202 and response.json()["kind"] == "deposit"


def test_a_parked_deposit_is_idempotent(client, session_factory):
    requester, _ = _operator(client, session_factory)
    account = open_account(client, register_and_login(client))
    key = f"park-{uuid.uuid4()}"
    first = _deposit(client, requester, account["id"], MINT, key=key)
    again = _deposit(client, requester, account["id"], MINT, key=key)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    changed = _deposit(client, requester, account["id"], MINT - 1, key=key)
    assert changed.status_code == 422 and changed.json()["code"] == "idempotency_key_reused"


@pytest.mark.parametrize(
    ("first", "second"),
    [("approve", "approve"), ("reject", "approve"), ("approve", "reject"), ("reject", "reject")],
)
def test_an_approval_is_decided_once(client, session_factory, first, second):
    _, approver, account, approval = _parked_deposit(client, session_factory)
    other, _ = _operator(client, session_factory)
    done = decide(client, approver, approval["id"], first)
    status = {"approve": "approved", "reject": "rejected"}[first]
    assert done.status_code == 200 and done.json()["status"] == status
    again = decide(client, other, approval["id"], second)
    assert again.status_code == 409 and again.json()["code"] == "approval_decided"
    expected = 1 if first == "approve" else 0
    assert _transfers_into(session_factory, account["id"]) == expected


def test_the_requester_and_customers_cannot_decide(client, session_factory):
    (requester, _), _, _, approval = _parked_deposit(client, session_factory)
    customer = register_and_login(client)
    for verb in ("approve", "reject"):
        mine = decide(client, requester, approval["id"], verb)
        assert mine.status_code == 403 and mine.json()["code"] == "own_request"
        theirs = decide(client, customer, approval["id"], verb)
        assert theirs.status_code == 403 and theirs.json()["code"] == "forbidden"
    assert client.get("/v1/admin/approvals", headers=customer).status_code == 403
    missing = decide(client, requester, str(uuid.uuid4()), "approve")
    assert missing.status_code == 404


def test_rejecting_moves_nothing_and_is_audited(client, session_factory):
    _, approver, account, approval = _parked_deposit(client, session_factory)
    rejected = decide(client, approver, approval["id"], "reject")
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert rejected.json()["transfer_id"] is None
    assert _transfers_into(session_factory, account["id"]) == 0
    assert _audit(client, approver, "approval.rejected", approval["id"])


def test_an_expired_approval_cannot_be_decided(client, session_factory):
    requester = make_user(session_factory, role="operator")
    approver, _ = _operator(client, session_factory)
    account = open_account(client, register_and_login(client))
    past = datetime.now(UTC) - timedelta(days=4)
    approval_id = uuid.uuid4()
    with session_factory() as session:
        session.add(
            Approval(
                id=approval_id,
                action="deposit",
                requested_by=requester.id,
                account_id=uuid.UUID(account["id"]),
                payload={"amount": MINT, "currency": "USD", "description": None},
                created_at=past,
                expires_at=past + timedelta(days=3),
            )
        )
        session.commit()
    listed = client.get(f"/v1/admin/approvals/{approval_id}", headers=approver).json()
    assert listed["status"] == "expired"
    refused = decide(client, approver, str(approval_id), "approve")
    assert refused.status_code == 409 and refused.json()["code"] == "approval_expired"
    with session_factory() as session:
        assert session.get(Approval, approval_id).status == "expired"  # the expiry was kept
    assert _transfers_into(session_factory, account["id"]) == 0
    again = decide(client, approver, str(approval_id), "approve")
    assert again.status_code == 409 and again.json()["code"] == "approval_decided"


def test_two_approvers_at_once_make_one_deposit(client, session_factory):
    _, approver, account, approval = _parked_deposit(client, session_factory)
    other, _ = _operator(client, session_factory)
    barrier = threading.Barrier(2)

    def approve(headers):
        barrier.wait()
        return decide(client, headers, approval["id"], "approve").status_code

    with ThreadPoolExecutor(max_workers=2) as pool:
        codes = sorted(pool.map(approve, [approver, other]))
    assert codes == [200, 409]
    assert _transfers_into(session_factory, account["id"]) == 1


def test_applying_an_approved_deposit_again_only_replays_it(client, session_factory):
    """The deposit's Idempotency-Key is derived from the approval: even past the
    approval's own guard, a second application cannot pay twice."""
    from domain.services import acceptance, approvals
    from domain.uow import unit_of_work

    _, approver, account, approval = _parked_deposit(client, session_factory)
    approved = decide(client, approver, approval["id"], "approve").json()
    limits = acceptance.MoneyLimits(currencies=["USD"], max_amount=MINT)
    with unit_of_work(session_factory) as uow:
        row = uow.session.get(Approval, uuid.UUID(approval["id"]))
        again = approvals._deposit(uow, row, limits, None)
    assert str(again) == approved["transfer_id"]
    assert _transfers_into(session_factory, account["id"]) == 1


def test_the_database_holds_the_approval_rules(client, session_factory):
    """Decided once, never by the requester, never deleted: even for SQL that skips
    the service."""
    _, approver, _, approval = _parked_deposit(client, session_factory)
    with session_factory() as session, pytest.raises(DBAPIError, match="approvals_four_eyes"):
        session.execute(
            text(
                "UPDATE approvals SET status = 'approved', decided_by = requested_by,"
                " decided_at = now() WHERE id = :id"
            ),
            {"id": approval["id"]},
        )
    assert decide(client, approver, approval["id"], "reject").status_code == 200
    for statement in (
        "UPDATE approvals SET status = 'approved' WHERE id = :id",
        "UPDATE approvals SET payload = '{}' WHERE id = :id",
        "DELETE FROM approvals WHERE id = :id",
    ):
        with session_factory() as session, pytest.raises(DBAPIError, match="approval"):
            session.execute(text(statement), {"id": approval["id"]})


def test_approvals_list_pages_and_filters(client, session_factory):
    requester, _ = _operator(client, session_factory)
    approver, _ = _operator(client, session_factory)
    account = open_account(client, register_and_login(client))
    ids = [_deposit(client, requester, account["id"], MINT).json()["id"] for _ in range(3)]
    assert decide(client, approver, ids[0], "reject").status_code == 200

    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/admin/approvals", params=params, headers=approver).json()
        seen += [a["id"] for a in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    mine = [i for i in seen if i in ids]
    assert mine == list(reversed(ids))  # newest first, each once
    pending = client.get(
        "/v1/admin/approvals", params={"status": "pending", "limit": 200}, headers=approver
    ).json()["data"]
    assert {a["id"] for a in pending} >= set(ids[1:])
    assert all(a["status"] == "pending" for a in pending)
    bad = client.get("/v1/admin/approvals", params={"cursor": "nope"}, headers=approver)
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_cursor"
