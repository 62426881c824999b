"""Issue 12, reporting: metadata and search, richer entries, balance at an instant,
statements (JSON and streamed CSV), closing accounts, operator lookups.

Every new route is exercised by its owner, another customer (404), an operator and
with bad input. Histories are built through the real acceptance path and engine,
except the 100,000-entry statement, whose ledger is written by SQL (still checked
by the database's own ledger triggers).
"""

from __future__ import annotations

import csv
import io
import random
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from domain.models import Transfer
from domain.repositories import transfers as transfers_repo
from domain.services import reporting
from tests.factories import (
    idem,
    make_user,
    open_account,
    operator_headers,
    post_deposit,
    register_and_login,
    wait_for_events,
)


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _transfer(client, headers, source, number, amount, **extra: Any):
    body = {
        "source_account_id": source,
        "destination_account_number": number,
        "amount": amount,
        "currency": "USD",
        **extra,
    }
    return client.post("/v1/transfers", json=body, headers={**headers, **idem()})


def _deposit(client, operator, account_id, amount, **extra: Any):
    body = {"account_id": account_id, "amount": amount, "currency": "USD", **extra}
    response = client.post("/v1/deposits", json=body, headers={**operator, **idem()})
    assert response.status_code == 202, response.text
    return response.json()


@pytest.fixture
def people(client, session_factory):
    return {
        "alice": register_and_login(client),
        "bob": register_and_login(client),
        "operator": operator_headers(client, session_factory),
    }


# --- metadata -------------------------------------------------------------------------


def test_metadata_is_stored_returned_included_in_events_and_searchable(
    client, people, drain_pending
):
    alice, bob, operator = people["alice"], people["bob"], people["operator"]
    order = f"order-{uuid.uuid4().hex[:8]}"
    created = client.post(
        "/v1/accounts",
        json={"currency": "USD", "metadata": {"crm_id": "c-42"}},
        headers=alice,
    )
    assert created.status_code == 201, created.text
    account = created.json()
    assert account["metadata"] == {"crm_id": "c-42"}
    assert client.get(f"/v1/accounts/{account['id']}", headers=alice).json()["metadata"] == {
        "crm_id": "c-42"
    }
    assert open_account(client, alice)["metadata"] == {}
    payee = open_account(client, bob)

    before = _now()
    deposit = _deposit(client, operator, account["id"], 1000, metadata={"order_id": order})
    assert deposit["metadata"] == {"order_id": order}
    drain_pending()
    paid = _transfer(
        client, alice, account["id"], payee["number"], 300, metadata={"order_id": order, "n": "1"}
    )
    assert paid.status_code == 202 and paid.json()["metadata"] == {"order_id": order, "n": "1"}
    other = _transfer(client, alice, account["id"], payee["number"], 5, metadata={"order_id": "x"})
    assert other.status_code == 202
    plain = _transfer(client, alice, account["id"], payee["number"], 7)
    assert plain.json()["metadata"] == {}
    drain_pending()
    after = _now()

    def ids(headers, **params: Any) -> list[str]:
        response = client.get("/v1/transfers", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return [t["id"] for t in response.json()["data"]]

    tagged = {"metadata[order_id]": order}
    assert ids(alice, **tagged) == [paid.json()["id"], deposit["id"]]  # newest first
    assert ids(alice, **tagged, kind="transfer") == [paid.json()["id"]]
    assert ids(alice, **tagged, kind="deposit", status="succeeded") == [deposit["id"]]
    assert ids(alice, **tagged, status="failed") == []
    assert ids(alice, **{**tagged, "metadata[n]": "1"}) == [paid.json()["id"]]
    assert ids(alice, **{**tagged, "metadata[n]": "2"}) == []
    assert ids(bob, **tagged) == [paid.json()["id"]]  # the payee sees the transfer, not the deposit
    assert ids(operator, **tagged) == [paid.json()["id"], deposit["id"]]
    window = {"created_after": _iso(before), "created_before": _iso(after)}
    assert len(ids(alice, **window, account_id=account["id"])) == 4
    assert ids(alice, created_after=_iso(after)) == []
    assert ids(alice, **tagged, created_before=_iso(before)) == []

    # Events carry the transfer's metadata.
    events = wait_for_events(client, bob, 1)
    mine = [e for e in events if e["data"]["transfer"]["id"] == paid.json()["id"]]
    assert mine and mine[0]["data"]["transfer"]["metadata"] == {"order_id": order, "n": "1"}


def test_batches_carry_their_own_and_their_items_metadata(client, people, drain_pending):
    alice, bob = people["alice"], people["bob"]
    source, payee = open_account(client, alice), open_account(client, bob)
    response = client.post(
        "/v1/transfer-batches",
        json={
            "metadata": {"run": "payroll-11"},
            "transfers": [
                {
                    "source_account_id": source["id"],
                    "destination_account_number": payee["number"],
                    "amount": 1,
                    "currency": "USD",
                    "metadata": {"employee": "e1"},
                },
                {
                    "source_account_id": source["id"],
                    "destination_account_number": payee["number"],
                    "amount": 2,
                    "currency": "USD",
                },
            ],
        },
        headers={**alice, **idem()},
    )
    assert response.status_code == 202, response.text
    batch = response.json()
    assert batch["metadata"] == {"run": "payroll-11"}
    assert [t["metadata"] for t in batch["transfers"]] == [{"employee": "e1"}, {}]
    again = client.get(f"/v1/transfer-batches/{batch['id']}", headers=alice).json()
    assert again["metadata"] == {"run": "payroll-11"}
    assert again["transfers"][0]["metadata"] == {"employee": "e1"}


@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        ({f"k{i}": "v" for i in range(21)}, "at most 20 keys"),
        ({"k" * 41: "v"}, "1 to 40 characters"),
        ({"": "v"}, "1 to 40 characters"),
        ({"k": "v" * 501}, "at most 500 characters"),
        ({"k": 1}, "string"),
        ({"k": None}, "string"),
        (["k", "v"], "dictionary"),
    ],
)
def test_metadata_past_its_limits_is_refused_and_says_the_limit(client, people, metadata, says):
    alice = people["alice"]
    account = open_account(client, alice)
    attempts = [
        client.post("/v1/accounts", json={"currency": "USD", "metadata": metadata}, headers=alice),
        _transfer(client, alice, account["id"], "4000000000000002", 1, metadata=metadata),
        client.post(
            "/v1/withdrawals",
            json={
                "account_id": account["id"],
                "amount": 1,
                "currency": "USD",
                "metadata": metadata,
            },
            headers={**alice, **idem()},
        ),
        client.post(
            "/v1/transfer-batches",
            json={
                "metadata": metadata,
                "transfers": [
                    {
                        "source_account_id": account["id"],
                        "destination_account_number": "4000000000000002",
                        "amount": 1,
                        "currency": "USD",
                    }
                ],
            },
            headers={**alice, **idem()},
        ),
    ]
    for response in attempts:
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["code"] == "validation_error"
        assert any(says in item["msg"] for item in body["errors"]), body
    assert client.get("/v1/accounts", headers=alice).json()["data"] == [account]


def test_transfer_filters_refuse_bad_input(client, people):
    alice = people["alice"]
    for params in (
        {"metadata[" + "k" * 41 + "]": "v"},
        {"metadata[]": "v"},
        {"metadata[k]": "v" * 501},
        {"metadata": "v"},  # not the bracketed form
        {"metadatax[k]": "v"},
        {"kind": "hold-ish"},
        {"created_after": "yesterday"},
        {"created_before": "2026-01-01T00:00:00"},  # no offset
        {"created_after": "9999-12-31T23:59:59-16:00"},  # past year 9999 in UTC
        {"metadata[k]": "a\x00b"},
    ):
        response = client.get("/v1/transfers", params=params, headers=alice)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["code"] == "validation_error"
    twice = client.get("/v1/transfers?metadata[k]=a&metadata[k]=b", headers=alice)
    assert twice.status_code == 422 and "twice" in twice.text


def test_filters_are_served_by_indexes(session_factory):
    """EXPLAIN of the listing's own SQL (with sequential scans priced out, as on a large
    table): the metadata filter uses the GIN index, the date range the created_at index,
    and `balance?at=` the entries' (account, time) index."""
    filters = transfers_repo.TransferFilters(
        metadata={"order_id": "123"},
    )
    query = transfers_repo.filtered(transfers_repo.all_transfers(), filters)
    dated = transfers_repo.filtered(
        transfers_repo.all_transfers(),
        transfers_repo.TransferFilters(created_after=_now() - timedelta(days=1)),
    )
    with session_factory() as session:
        session.execute(text("SET LOCAL enable_seqscan = off"))

        def plan(statement: Any) -> str:
            # The listing's SQL as the driver would receive it, bound values included.
            compiled = statement.compile(dialect=session.bind.dialect)
            processors = compiled._bind_processors
            params = {
                name: processors[name](value) if name in processors else value
                for name, value in compiled.params.items()
            }
            rows = session.connection().exec_driver_sql("EXPLAIN " + compiled.string, params)
            return "\n".join(row[0] for row in rows)

        assert "transfers_metadata_idx" in plan(query)
        assert "transfers_created_idx" in plan(dated)
        at = session.execute(
            text(
                "EXPLAIN SELECT e.balance_after, e.sequence FROM ledger_entries e"
                " WHERE e.account_id = gen_random_uuid() AND e.created_at <= now()"
                " ORDER BY e.created_at DESC, e.sequence DESC LIMIT 1"
            )
        ).scalars()
        assert "ledger_entries_account_time_idx" in "\n".join(at)
        session.rollback()


# --- richer entries -------------------------------------------------------------------


def test_entries_carry_kind_description_and_counterparty_where_visible(
    client, people, drain_pending
):
    alice, bob, operator = people["alice"], people["bob"], people["operator"]
    a, b = open_account(client, alice), open_account(client, bob)
    post_deposit(client, operator, a["id"], 500)
    drain_pending()
    assert _transfer(client, alice, a["id"], b["number"], 120, description="rent").is_success
    drain_pending()

    def entries(headers, account_id):
        response = client.get(f"/v1/accounts/{account_id}/entries", headers=headers)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    paid, funded = entries(alice, a["id"])
    assert (paid["kind"], paid["description"]) == ("transfer", "rent")
    assert paid["counterparty_account_number"] == b["number"]
    assert funded["kind"] == "deposit"
    assert funded["counterparty_account_number"] is None  # the settlement account, hidden
    (received,) = entries(bob, b["id"])
    assert received["counterparty_account_number"] == a["number"]
    assert received["description"] == "rent" and received["amount"] == 120
    seen = entries(operator, a["id"])
    assert seen[1]["counterparty_account_number"] is not None  # operators see settlement
    assert client.get(f"/v1/accounts/{a['id']}/entries", headers=bob).status_code == 404

    # The same in events: the payee's leg names the payer; a customer's deposit leg hides
    # the settlement account.
    event = next(
        e for e in wait_for_events(client, bob, 1) if e["data"]["transfer"]["description"] == "rent"
    )
    (leg,) = event["data"]["entries"]
    assert (leg["kind"], leg["counterparty_account_number"]) == ("transfer", a["number"])
    deposit_event = next(
        e for e in wait_for_events(client, alice, 2) if e["data"]["transfer"]["kind"] == "deposit"
    )
    assert deposit_event["data"]["entries"][0]["counterparty_account_number"] is None


# --- balance at an instant and statements ---------------------------------------------


def test_balance_at_an_instant(client, people, drain_pending):
    alice, bob, operator = people["alice"], people["bob"], people["operator"]
    a = open_account(client, alice)
    start = _now()
    post_deposit(client, operator, a["id"], 700)
    drain_pending()
    middle = _now()
    post_deposit(client, operator, a["id"], 50)
    drain_pending()

    def at(headers, moment: str):
        return client.get(f"/v1/accounts/{a['id']}/balance", params={"at": moment}, headers=headers)

    assert at(alice, _iso(start)).json() == {"balance": 0, "as_of": _iso(start), "sequence": 0}
    assert at(alice, _iso(middle)).json()["balance"] == 700
    assert at(alice, _iso(middle)).json()["sequence"] == 1
    assert at(operator, _iso(_now())).json()["balance"] == 750
    assert at(bob, _iso(_now())).status_code == 404
    # Any offset is the same instant; the answer is in UTC.
    shifted = middle.astimezone(datetime.now().astimezone().tzinfo)
    assert at(alice, shifted.isoformat()).json()["balance"] == 700
    # An offset PostgreSQL would refuse (over 15:59) is the same instant in UTC.
    assert at(alice, "2000-01-01T00:00:00+16:00").json()["as_of"] == "1999-12-31T08:00:00Z"
    for bad in ("2026-01-01T00:00:00", "soon", "", "0001-01-01T00:00:00+16:00"):
        response = at(alice, bad)
        assert response.status_code == 422, response.text
    assert client.get(f"/v1/accounts/{a['id']}/balance", headers=alice).status_code == 422
    assert (
        client.get("/v1/accounts/nope/balance?at=2026-01-01T00:00:00Z", headers=alice).status_code
        == 422
    )
    assert (
        client.get(
            f"/v1/accounts/{uuid.uuid4()}/balance?at=2026-01-01T00:00:00Z", headers=alice
        ).status_code
        == 404
    )


def test_statement_json_and_csv(client, people, drain_pending):
    alice, bob, operator = people["alice"], people["bob"], people["operator"]
    a, b = open_account(client, alice), open_account(client, bob)
    post_deposit(client, operator, a["id"], 1000)
    drain_pending()
    start = _now()
    assert _transfer(
        client, alice, a["id"], b["number"], 300, description="=HYPERLINK(1)"
    ).is_success
    assert _transfer(client, alice, a["id"], b["number"], 200).is_success
    drain_pending()
    end = _now()
    post_deposit(client, operator, a["id"], 5)  # after the period
    drain_pending()

    period = {"from": _iso(start), "to": _iso(end)}
    path = f"/v1/accounts/{a['id']}/statement"
    response = client.get(path, params=period, headers=alice)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"account", "from", "to", "opening_balance", "closing_balance", "entries"}
    assert body["account"]["id"] == a["id"] and body["from"] == _iso(start)
    assert (body["opening_balance"], body["closing_balance"]) == (1000, 500)
    assert [e["amount"] for e in body["entries"]] == [-300, -200]
    assert body["entries"][0]["counterparty_account_number"] == b["number"]
    assert client.get(path, params=period, headers=operator).json() == body
    assert client.get(path, params=period, headers=bob).status_code == 404

    streamed = client.get(path, params=period, headers={**alice, "Accept": "text/csv"})
    assert streamed.status_code == 200, streamed.text
    assert streamed.headers["content-type"].startswith("text/csv")
    assert streamed.headers["settle-opening-balance"] == "1000"
    assert streamed.headers["settle-closing-balance"] == "500"
    assert "attachment" in streamed.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(streamed.text)))
    assert [int(r["amount"]) for r in rows] == [-300, -200]
    assert rows[0]["description"] == "'=HYPERLINK(1)"  # never a live formula
    assert rows[0]["counterparty_account_number"] == b["number"]
    assert client.get(path, params=period, headers={**bob, "Accept": "text/csv"}).status_code == 404

    for bad in (
        {"from": _iso(end), "to": _iso(start)},
        {"from": _iso(start), "to": _iso(start)},
        {"from": _iso(start)},
        {"to": _iso(end)},
        {"from": "2026-01-01", "to": "2026-01-02T00:00:00"},
        {**period, "limit": "5"},
    ):
        refused = client.get(path, params=bad, headers=alice)
        assert refused.status_code == 422, (bad, refused.text)


def _balance_at(client, headers, account_id: str, moment: datetime) -> int:
    response = client.get(
        f"/v1/accounts/{account_id}/balance", params={"at": _iso(moment)}, headers=headers
    )
    assert response.status_code == 200, response.text
    return int(response.json()["balance"])


def test_property_statement_closing_is_opening_plus_entries_and_the_balance_at_to(
    client, people, drain_pending
):
    """Random histories through the real engine (deposits, transfers both ways, some
    failing for funds, withdrawals), applied in several drains; for random periods between
    recorded instants, closing = opening + Σ entries = balance?at=to, and opening =
    balance?at=from."""
    rng = random.Random(1212)
    alice, bob, operator = people["alice"], people["bob"], people["operator"]
    accounts = [open_account(client, alice), open_account(client, alice), open_account(client, bob)]
    owners = [alice, alice, bob]
    instants = [_now()]
    for _ in range(8):
        for _ in range(rng.randint(1, 6)):
            pick = rng.randrange(3)
            action = rng.random()
            if action < 0.3:
                post_deposit(client, operator, accounts[pick]["id"], rng.randint(1, 500))
            elif action < 0.85:
                other = rng.choice([i for i in range(3) if i != pick])
                response = _transfer(
                    client,
                    owners[pick],
                    accounts[pick]["id"],
                    accounts[other]["number"],
                    rng.randint(1, 400),
                )
                assert response.status_code == 202, response.text
            else:
                response = client.post(
                    "/v1/withdrawals",
                    json={
                        "account_id": accounts[pick]["id"],
                        "amount": rng.randint(1, 300),
                        "currency": "USD",
                    },
                    headers={**owners[pick], **idem()},
                )
                assert response.status_code == 202, response.text
        drain_pending()
        instants.append(_now())
        time.sleep(0.002)
    for _ in range(25):
        first, second = sorted(rng.sample(range(len(instants)), 2))
        index = rng.randrange(3)
        account, headers = accounts[index], owners[index]
        start = instants[first] + timedelta(microseconds=rng.choice([0, 1]))
        end = instants[second]
        body = client.get(
            f"/v1/accounts/{account['id']}/statement",
            params={"from": _iso(start), "to": _iso(end)},
            headers=headers,
        ).json()
        total = sum(e["amount"] for e in body["entries"])
        assert body["closing_balance"] == body["opening_balance"] + total
        assert body["opening_balance"] == _balance_at(client, headers, account["id"], start)
        assert body["closing_balance"] == _balance_at(client, headers, account["id"], end)
        sequences = [e["sequence"] for e in body["entries"]]
        if sequences:  # whole, gapless runs of the account's sequence
            assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    final = [
        client.get(f"/v1/accounts/{a['id']}", headers=h).json()
        for a, h in zip(accounts, owners, strict=True)
    ]
    for account, headers in zip(final, owners, strict=True):
        assert account["balance"] == _balance_at(client, headers, account["id"], _now())


def _ledger_of(session_factory, size: int, alice_id: str, bob_id: str, user_id: uuid.UUID) -> None:
    """`size` succeeded transfers between two fresh accounts, with their entries, one second
    apart ending now: alice pays 1 on even steps, receives (step % 7) + 1 on odd ones. The
    ledger triggers check every entry at commit, as for the engine's own."""
    with session_factory() as session, session.begin():
        session.execute(
            text(
                "CREATE TEMP TABLE steps ON COMMIT DROP AS"
                " SELECT i, gen_random_uuid() AS id,"
                "        CASE WHEN i % 2 = 0 THEN 1 ELSE (i % 7) + 1 END AS amount,"
                "        (i % 2 = 0) AS alice_pays,"
                "        now() - make_interval(secs => :size - i) AS at"
                "   FROM generate_series(1, :size) AS i"
            ),
            {"size": size},
        )
        session.execute(
            text(
                "INSERT INTO transfers (id, kind, status, source_account_id,"
                " destination_account_id, amount, currency, description, initiated_by,"
                " created_at, completed_at, lane)"
                " SELECT s.id, 'transfer', 'succeeded',"
                "        CASE WHEN s.alice_pays THEN CAST(:a AS uuid) ELSE CAST(:b AS uuid) END,"
                "        CASE WHEN s.alice_pays THEN CAST(:b AS uuid) ELSE CAST(:a AS uuid) END,"
                "        s.amount, 'USD', 'step ' || s.i, CAST(:u AS uuid), s.at, s.at,"
                "        settle_lane(CASE WHEN s.alice_pays THEN CAST(:a AS uuid)"
                "                         ELSE CAST(:b AS uuid) END)"
                "   FROM steps s"
            ),
            {"a": alice_id, "b": bob_id, "u": str(user_id)},
        )
        session.execute(
            text(
                "INSERT INTO ledger_entries (transfer_id, account_id, amount, currency,"
                " balance_before, balance_after, sequence, created_at)"
                " SELECT id, account, amount, 'USD', after - amount, after, i, at FROM ("
                "   SELECT s.id, s.i, s.at, x.account, x.amount,"
                "          sum(x.amount) OVER (PARTITION BY x.account ORDER BY s.i) AS after"
                "     FROM steps s CROSS JOIN LATERAL (VALUES"
                "       (CAST(:a AS uuid), CASE WHEN s.alice_pays THEN -1 ELSE 1 END * s.amount),"
                "       (CAST(:b AS uuid), CASE WHEN s.alice_pays THEN 1 ELSE -1 END * s.amount)"
                "     ) AS x(account, amount)) AS legs"
            ),
            {"a": alice_id, "b": bob_id},
        )
        session.execute(
            text(
                "UPDATE accounts a SET overdraft_limit = GREATEST(0, -t.balance),"
                " balance = t.balance, last_sequence = :size"
                " FROM (SELECT account_id, balance_after AS balance FROM ledger_entries"
                "        WHERE account_id IN (CAST(:a AS uuid), CAST(:b AS uuid))"
                "          AND sequence = :size) AS t"
                " WHERE a.id = t.account_id"
            ),
            {"a": alice_id, "b": bob_id, "size": size},
        )


@pytest.mark.timeout(900)  # 200,000 entries checked by the ledger triggers, on a shared machine
def test_statement_of_100000_entries_streams_in_constant_memory(client, people, session_factory):
    size = 100_000
    alice, bob = people["alice"], people["bob"]
    a, b = open_account(client, alice), open_account(client, bob)
    me = client.get("/v1/me", headers=alice).json()
    _ledger_of(session_factory, size, a["id"], b["id"], uuid.UUID(me["id"]))
    start, end = _now() - timedelta(days=2), _now() + timedelta(seconds=1)
    final = client.get(f"/v1/accounts/{a['id']}", headers=alice).json()["balance"]

    # Through HTTP: every entry, in order, between the right balances.
    response = client.get(
        f"/v1/accounts/{a['id']}/statement",
        params={"from": _iso(start), "to": _iso(end)},
        headers={**alice, "Accept": "text/csv"},
    )
    assert response.status_code == 200
    assert response.headers["settle-opening-balance"] == "0"
    assert response.headers["settle-closing-balance"] == str(final)
    lines = response.text.splitlines()
    assert len(lines) == size + 1
    last = next(csv.reader([lines[-1]]))
    assert (last[0], last[9]) == (str(size), str(final))
    running = 0
    for row in csv.DictReader(io.StringIO(response.text)):
        assert int(row["balance_before"]) == running
        running += int(row["amount"])
    assert running == final

    # JSON refuses a statement this long and says what to do instead.
    refused = client.get(
        f"/v1/accounts/{a['id']}/statement",
        params={"from": _iso(start), "to": _iso(end)},
        headers=alice,
    )
    assert refused.status_code == 422 and refused.json()["code"] == "statement_too_large"
    assert "text/csv" in refused.json()["detail"]

    # The generator itself: memory stays flat however many entries it yields (the
    # TestClient above buffers the body; the server side must not).
    from domain.models import User

    with session_factory() as session:
        owner = session.scalars(select(User).where(User.id == uuid.UUID(me["id"]))).one()
        plan = reporting.plan_statement(
            session=session, user=owner, account_id=uuid.UUID(a["id"]), start=start, end=end
        )
    assert plan.entry_count == size
    tracemalloc.start()
    try:
        chunks = lines_seen = 0
        for chunk in reporting.csv_chunks(session_factory, plan):
            chunks += 1
            lines_seen += chunk.count("\r\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines_seen == size + 1
    assert chunks >= size // reporting.CSV_PAGE_SIZE
    # All of it as one string would be ~10 MB; a page is ~100 KB.
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes"


# --- closing --------------------------------------------------------------------------


def test_close_needs_a_zero_balance_and_nothing_pending(client, people, drain_pending):
    alice, bob, operator = people["alice"], people["bob"], people["operator"]
    a, b = open_account(client, alice), open_account(client, bob)
    post_deposit(client, operator, a["id"], 100)
    drain_pending()

    def close(headers, account_id=a["id"]):
        return client.post(f"/v1/accounts/{account_id}/close", headers=headers)

    refused = close(alice)
    assert refused.status_code == 409 and refused.json()["code"] == "balance_not_zero"
    assert "100" in refused.json()["detail"]
    assert close(bob).status_code == 404
    assert client.post("/v1/accounts/not-a-uuid/close", headers=alice).status_code == 422
    assert close(alice, str(uuid.uuid4())).status_code == 404

    # Empty it, but leave the transfer pending: still not closable.
    assert _transfer(client, alice, a["id"], b["number"], 100).status_code == 202
    pending = close(alice)
    assert pending.status_code == 409 and pending.json()["code"] == "transfers_pending"
    drain_pending()
    closed = close(alice)
    assert closed.status_code == 200, closed.text
    assert (closed.json()["status"], closed.json()["balance"]) == ("closed", 0)
    assert close(alice).status_code == 200  # again: the same answer

    # New money requests naming it are refused, from it and to it.
    from_it = _transfer(client, alice, a["id"], b["number"], 1)
    assert from_it.status_code == 422 and from_it.json()["code"] == "account_closed"
    bob_funded = open_account(client, bob)
    post_deposit(client, operator, bob_funded["id"], 10)
    drain_pending()
    to_it = _transfer(client, bob, bob_funded["id"], a["number"], 1)
    assert to_it.status_code == 422 and to_it.json()["code"] == "account_closed"
    deposit = client.post(
        "/v1/deposits",
        json={"account_id": a["id"], "amount": 5, "currency": "USD"},
        headers={**operator, **idem()},
    )
    assert deposit.status_code == 422 and deposit.json()["code"] == "account_closed"
    frozen = client.post(f"/v1/admin/accounts/{a['id']}/freeze", headers=operator)
    assert frozen.status_code == 409 and frozen.json()["code"] == "account_closed"
    audit = client.get(
        "/v1/admin/audit-events", params={"event_type": "account.closed"}, headers=operator
    ).json()["data"]
    assert any(e["subject_id"] == a["id"] for e in audit)


def test_operators_close_any_account_and_frozen_ones_only_they(client, people, session_factory):
    alice, operator = people["alice"], people["operator"]
    a, b = open_account(client, alice), open_account(client, alice)
    assert client.post(f"/v1/admin/accounts/{b['id']}/freeze", headers=operator).is_success
    refused = client.post(f"/v1/accounts/{b['id']}/close", headers=alice)
    assert refused.status_code == 409 and refused.json()["code"] == "account_frozen"
    assert client.post(f"/v1/accounts/{b['id']}/close", headers=operator).json()["status"] == (
        "closed"
    )
    closed = client.post(f"/v1/accounts/{a['id']}/close", headers=operator)
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    # Settlement accounts are not customers' accounts: not found.
    with session_factory() as session:
        system = session.execute(
            text("SELECT id FROM accounts WHERE kind = 'system' LIMIT 1")
        ).scalar_one()
    assert client.post(f"/v1/accounts/{system}/close", headers=operator).status_code == 404


def test_transfers_still_queued_to_or_from_a_closed_account_fail_with_account_closed(
    client, people, session_factory, drain_pending
):
    """The window close cannot shut: a transfer accepted after close checked for pending
    ones. Its account is closed under it (as close would), and the engine fails it."""
    alice, bob, operator = people["alice"], people["bob"], people["operator"]
    a, b, empty = open_account(client, alice), open_account(client, bob), open_account(client, bob)
    post_deposit(client, operator, a["id"], 100)
    drain_pending()
    to_closed = _transfer(client, alice, a["id"], empty["number"], 10).json()
    from_closed = client.post(
        "/v1/withdrawals",
        json={"account_id": empty["id"], "amount": 1, "currency": "USD"},
        headers={**bob, **idem()},
    ).json()
    with session_factory() as session, session.begin():
        session.execute(
            text("UPDATE accounts SET status = 'closed', closed_at = now() WHERE id = :id"),
            {"id": empty["id"]},
        )
    drain_pending()
    with session_factory() as session:
        outcomes = {
            str(t.id): (t.status, t.failure_code)
            for t in session.scalars(
                select(Transfer).where(
                    Transfer.id.in_([uuid.UUID(to_closed["id"]), uuid.UUID(from_closed["id"])])
                )
            )
        }
    assert outcomes == {
        to_closed["id"]: ("failed", "account_closed"),
        from_closed["id"]: ("failed", "account_closed"),
    }
    assert client.get(f"/v1/accounts/{a['id']}", headers=alice).json()["balance"] == 100
    del b


def test_the_database_refuses_a_closed_account_with_money(client, people, session_factory):
    from sqlalchemy.exc import IntegrityError

    alice, operator = people["alice"], people["operator"]
    a = open_account(client, alice)
    del operator
    with pytest.raises(IntegrityError), session_factory() as session, session.begin():
        session.execute(
            text("UPDATE accounts SET status = 'closed' WHERE id = :id"), {"id": a["id"]}
        )  # no closed_at
    with pytest.raises(IntegrityError), session_factory() as session, session.begin():
        session.execute(
            text(
                "UPDATE accounts SET status = 'closed', closed_at = now(), overdraft_limit = 0"
                " WHERE id = :id AND balance = 0"
            ),
            {"id": a["id"]},
        )
        session.execute(
            text("UPDATE accounts SET closed_at = NULL WHERE id = :id"), {"id": a["id"]}
        )


# --- operator lookups -----------------------------------------------------------------


def test_operators_find_accounts_by_number_and_owner_email(client, people, session_factory):
    alice, bob, operator = people["alice"], people["bob"], people["operator"]
    owner = make_user(session_factory)
    from tests.factories import login

    owners_headers = login(client, owner.email)
    first, second = open_account(client, owners_headers), open_account(client, owners_headers)

    by_number = client.get(
        "/v1/admin/accounts", params={"number": second["number"]}, headers=operator
    )
    assert by_number.status_code == 200, by_number.text
    (found,) = by_number.json()["data"]
    assert (found["id"], found["owner_id"]) == (second["id"], str(owner.id))

    by_email = client.get(
        "/v1/admin/accounts",
        params={"owner_email": "  " + owner.email.upper(), "limit": 1},
        headers=operator,
    ).json()
    assert len(by_email["data"]) == 1 and by_email["next_cursor"]
    rest = client.get(
        "/v1/admin/accounts",
        params={"owner_email": owner.email, "cursor": by_email["next_cursor"]},
        headers=operator,
    ).json()
    assert {by_email["data"][0]["id"], rest["data"][0]["id"]} == {first["id"], second["id"]}
    both = client.get(
        "/v1/admin/accounts",
        params={"owner_email": owner.email, "number": open_account(client, bob)["number"]},
        headers=operator,
    ).json()
    assert both["data"] == []
    nobody = client.get(
        "/v1/admin/accounts", params={"owner_email": "nobody@example.com"}, headers=operator
    )
    assert nobody.status_code == 200 and nobody.json()["data"] == []

    # Customers may not look anyone up; bad input is refused and says what to give.
    assert (
        client.get(
            "/v1/admin/accounts", params={"number": second["number"]}, headers=alice
        ).status_code
        == 403
    )
    none_given = client.get("/v1/admin/accounts", headers=operator)
    assert none_given.status_code == 422 and none_given.json()["code"] == "lookup_needs_criteria"
    assert (
        client.get("/v1/admin/accounts", params={"number": "12ab"}, headers=operator).status_code
        == 422
    )

    audited = client.get(
        "/v1/admin/audit-events",
        params={"event_type": "admin.accounts_looked_up", "limit": 10},
        headers=operator,
    ).json()["data"]
    assert any(
        e["subject_id"] == second["id"] and e["data"]["number"] == second["number"] for e in audited
    )


def test_operator_user_lookup_is_audited(client, people, session_factory):
    operator, alice = people["operator"], people["alice"]
    user = make_user(session_factory)
    found = client.get("/v1/admin/users", params={"email": user.email}, headers=operator)
    assert found.status_code == 200 and found.json()[0]["id"] == str(user.id)
    assert (
        client.get("/v1/admin/users", params={"email": user.email}, headers=alice).status_code
        == 403
    )
    assert client.get("/v1/admin/users", headers=operator).status_code == 422
    audited = client.get(
        "/v1/admin/audit-events",
        params={"event_type": "admin.users_looked_up", "limit": 10},
        headers=operator,
    ).json()["data"]
    assert any(e["subject_id"] == str(user.id) for e in audited)
