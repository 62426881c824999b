"""The `settle` CLI for daily work, as an operator runs it: a subprocess against the real
database, Redis, gateway and worker.

Each command must say what to start when nothing is running (never "DATABASE_URL is not
set"), and must not ask for a password before it has found what it would use it with.
Prompts are read from standard input here: the CLI runs in a session of its own with no
terminal, where getpass falls back to stdin and writes its prompt to stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from domain.models import Account, User
from settle.harness import free_port
from tests.factories import (
    PASSWORD,
    login,
    make_user,
    open_account,
    post_deposit,
    post_transfer,
    random_email,
    register_and_login,
    wait_terminal,
)
from tests.processes import running_gateway

pytestmark = pytest.mark.e2e

URL_VARIABLES = ("DATABASE_URL", "REDIS_URL", "SETTLE_MIGRATION_DATABASE_URL")


def settle(
    *args: str,
    stdin: str = "",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "settle.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),
        cwd=cwd,
        timeout=timeout,
        start_new_session=True,  # no controlling terminal: getpass reads stdin
        check=False,
    )


def _every_command(api: str) -> list[list[str]]:
    some_id = str(uuid.uuid4())
    operator = ["--as", "ops@example.com", "--api", api]
    return [
        ["status", "--api", api],
        ["accounts", "find", "--number", "123456789012"],
        ["accounts", "find", "--email", "ada@example.com"],
        [
            "deposit",
            "--account",
            "123456789012",
            "--amount",
            "1250",
            "--currency",
            "USD",
            *operator,
        ],
        ["transfers", "show", some_id],
        ["webhooks", "redeliver", some_id, *operator],
        ["verify"],
        ["create-user", "--email", "new@example.com", "--role", "operator"],
    ]


def _refused_without_prompt(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "password" not in result.stderr.lower(), result.stderr  # never prompted
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Runs `settle ARGS` in this process, in an empty directory (no var/run.env from
    `make run`, no .env), failing the test if it ever asks for a password."""
    from settle.config import Settings

    def no_prompt(prompt: str = "") -> str:
        raise AssertionError(f"asked for a password: {prompt!r}")

    monkeypatch.setattr("getpass.getpass", no_prompt)
    monkeypatch.chdir(tmp_path)
    # Settings read afresh from the patched environment; the run's cached instance (which
    # other tests patch for the in-process worker code) is left alone.
    monkeypatch.setattr("settle.cli.get_settings", Settings)


def _run_in_process(capsys: Any, command: list[str]) -> tuple[int, str]:
    from settle.cli import main

    code = main(command)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err


def test_with_nothing_running_every_command_says_to_start_make_run(in_process, monkeypatch, capsys):
    for name in URL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    api = f"http://127.0.0.1:{free_port()}"
    for command in _every_command(api):
        code, err = _run_in_process(capsys, command)
        assert code == 2, (command, err)
        assert "make run" in err, (command, err)
        assert "DATABASE_URL is not set\n" not in err  # the old, unhelpful answer


def test_with_the_database_down_every_command_names_it_and_make_run(
    in_process, monkeypatch, capsys
):
    monkeypatch.setenv(
        "DATABASE_URL", f"postgresql+psycopg2://settle_app:pw@127.0.0.1:{free_port()}/settle"
    )
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    api = f"http://127.0.0.1:{free_port()}"
    for command in _every_command(api):
        code, err = _run_in_process(capsys, command)
        assert code == 2, (command, err)
        # redeliver needs only the gateway, so the gateway is what it finds missing.
        expected = "no Settle gateway" if "redeliver" in command else "cannot reach PostgreSQL"
        assert expected in err and "make run" in err, (command, err)


def test_a_real_invocation_with_nothing_running(tmp_path):
    """The same, as a subprocess: what an operator's shell sees."""
    env = {k: v for k, v in os.environ.items() if k not in URL_VARIABLES}
    result = settle("create-user", "--email", "ops@example.com", env=env, cwd=tmp_path)
    _refused_without_prompt(result, "make run")


def test_with_the_gateway_down_the_operator_commands_refuse_before_the_password(
    live_api, session_factory
):
    customer = register_and_login(live_api)
    account = open_account(live_api, customer)
    api = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    deposit = settle(
        "deposit",
        *("--account", account["number"], "--amount", "100", "--currency", "USD"),
        *("--as", "ops@example.com", "--api", api),
        stdin="secret\n",
    )
    _refused_without_prompt(deposit, "no Settle gateway answers", "make run")
    redeliver = settle(
        "webhooks", "redeliver", str(uuid.uuid4()), "--as", "ops@example.com", "--api", api
    )
    _refused_without_prompt(redeliver, "no Settle gateway answers")


def test_create_user_asks_twice_and_refuses_a_mismatch(session_factory):
    email = random_email("cli-operator")
    mismatch = settle(
        "create-user", "--email", email, "--role", "operator", stdin=f"{PASSWORD}\nother one\n"
    )
    assert mismatch.returncode == 2 and "differ" in mismatch.stderr, mismatch.stderr
    assert mismatch.stderr.count("password for") == 1 and "again, to confirm" in mismatch.stderr
    with session_factory() as session:
        assert session.scalar(select(User).where(User.email == email)) is None

    created = settle(
        "create-user", "--email", email, "--role", "operator", stdin=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert created.returncode == 0, created.stderr
    assert f"created operator {email}" in created.stdout
    with session_factory() as session:
        user = session.scalar(select(User).where(User.email == email))
        assert user is not None and user.role == "operator"

    taken = settle("create-user", "--email", email.upper(), stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert taken.returncode == 2 and "already exists" in taken.stderr
    assert "password" not in taken.stderr.split("already exists")[0].lower()  # refused first


def test_create_user_checks_the_password_policy(session_factory):
    email = random_email("cli-weak")
    weak = settle("create-user", "--email", email, stdin="short\nshort\n")
    assert weak.returncode == 2 and "at least" in weak.stderr, weak.stderr
    with session_factory() as session:
        assert session.scalar(select(User).where(User.email == email)) is None


@pytest.fixture(scope="module")
def operator_email(session_factory: Any) -> str:
    return make_user(session_factory, role="operator").email


def test_deposit_as_an_operator_by_account_number(live_api, operator_email):
    customer = register_and_login(live_api)
    account = open_account(live_api, customer)
    result = settle(
        "deposit",
        *("--account", account["number"], "--amount", "1250", "--currency", "usd"),
        *("--description", "cli deposit", "--as", operator_email, "--password-stdin"),
        *("--api", str(live_api.base_url)),
        stdin=f"{PASSWORD}\n",
    )
    assert result.returncode == 0, result.stderr
    assert "accepted: 1250 USD" in result.stdout and "succeeded" in result.stdout
    balance = live_api.get(f"/v1/accounts/{account['id']}", headers=customer).json()["balance"]
    assert balance == 1250


def test_a_deposit_at_the_approval_threshold_waits_for_a_second_operator(
    live_api, settings, session_factory, operator_email
):
    customer = register_and_login(live_api)
    account = open_account(live_api, customer)
    result = settle(
        "deposit",
        *("--account", account["number"], "--amount", str(settings.approval_threshold)),
        *("--currency", "USD", "--as", operator_email, "--password-stdin"),
        *("--api", str(live_api.base_url)),
        stdin=f"{PASSWORD}\n",
    )
    assert result.returncode == 0, result.stderr
    assert "waits for approval" in result.stdout and "another operator" in result.stdout
    with session_factory() as session:
        assert session.get(Account, uuid.UUID(account["id"])).balance == 0


def test_deposit_refusals_come_from_the_api(live_api, session_factory, operator_email):
    api = str(live_api.base_url)
    customer = register_and_login(live_api)
    account = open_account(live_api, customer)
    base = ("deposit", "--account", account["id"], "--currency", "USD", "--api", api)
    wrong = settle(
        *base, "--amount", "5", "--as", operator_email, "--password-stdin", stdin="wrong pw\n"
    )
    assert wrong.returncode == 2 and "the API refused" in wrong.stderr, wrong.stderr
    # An operator may not deposit into an account they own (separation of duties).
    own = login(live_api, operator_email)
    own_account = open_account(live_api, own)
    refused = settle(
        "deposit",
        *("--account", own_account["number"], "--amount", "5", "--currency", "USD"),
        *("--as", operator_email, "--password-stdin", "--api", api),
        stdin=f"{PASSWORD}\n",
    )
    assert refused.returncode == 2 and "own_account" in refused.stderr, refused.stderr
    decimal = settle(*base, "--amount", "12.50", "--as", operator_email)
    assert decimal.returncode == 2 and "minor units" in decimal.stderr
    typo = settle(
        "deposit",
        *("--account", "123456789012", "--amount", "5", "--currency", "USD"),
        *("--as", operator_email, "--api", api),
    )
    _refused_without_prompt(typo, "no account has the number", "check digit")
    with session_factory() as session:
        assert session.get(Account, uuid.UUID(account["id"])).balance == 0


def test_accounts_find_by_number_and_by_email(live_api):
    email = random_email("cli-find")
    assert (
        live_api.post("/v1/auth/register", json={"email": email, "password": PASSWORD}).status_code
        == 201
    )
    headers = login(live_api, email)
    usd = open_account(live_api, headers)
    eur = open_account(live_api, headers, currency="EUR")
    by_number = settle("accounts", "find", "--number", usd["number"])
    assert by_number.returncode == 0, by_number.stderr
    assert usd["number"] in by_number.stdout and email in by_number.stdout
    assert eur["number"] not in by_number.stdout
    by_email = settle("accounts", "find", "--email", f"  {email.upper()} ", "--json")
    assert by_email.returncode == 0, by_email.stderr
    found = json.loads(by_email.stdout)
    assert {a["number"] for a in found} == {usd["number"], eur["number"]}
    assert {a["owner"] for a in found} == {email}
    missing = settle("accounts", "find", "--email", random_email("nobody"))
    assert missing.returncode == 1 and "no account" in missing.stderr


def test_transfers_show_prints_the_transfer_and_its_entries(live_api, session_factory):
    from tests.factories import operator_headers

    alice, bob = register_and_login(live_api), register_and_login(live_api)
    a, b = open_account(live_api, alice), open_account(live_api, bob)
    deposit = post_deposit(live_api, operator_headers(live_api, session_factory), a["id"], 5000)
    wait_terminal(live_api, alice, deposit["id"])
    accepted = post_transfer(live_api, alice, a["id"], b["number"], 1234)
    transfer = wait_terminal(live_api, alice, accepted.json()["id"])
    shown = settle("transfers", "show", transfer["id"])
    assert shown.returncode == 0, shown.stderr
    assert "succeeded" in shown.stdout and "1234 USD" in shown.stdout
    assert a["number"] in shown.stdout and b["number"] in shown.stdout
    assert "-1234" in shown.stdout and "+1234" in shown.stdout
    as_json = json.loads(settle("transfers", "show", transfer["id"], "--json").stdout)
    assert sorted(e["amount"] for e in as_json["entries"]) == [-1234, 1234]
    assert as_json["transfer"]["status"] == "succeeded"
    unknown = settle("transfers", "show", str(uuid.uuid4()))
    assert unknown.returncode == 2 and "no transfer has the id" in unknown.stderr
    garbage = settle("transfers", "show", "not-an-id")
    assert garbage.returncode == 2 and "not a transfer id" in garbage.stderr


@pytest.fixture(scope="module")
def private_hooks_api() -> Iterator[str]:
    """A gateway that lets webhooks be registered on loopback. The worker delivering them
    does not allow it, so every attempt fails: a failing webhook, for real."""
    env = {**os.environ, "SETTLE_WEBHOOK_ALLOW_PRIVATE": "true"}
    with running_gateway(env) as base_url:
        yield base_url


def _failing_delivery(api: str, session_factory: Any) -> tuple[str, str, str]:
    """(endpoint url, delivery id, transfer id) of a delivery whose attempt failed."""
    from tests.factories import operator_headers

    with httpx.Client(base_url=api, timeout=30) as client:
        alice = register_and_login(client)
        url = f"http://127.0.0.1:{free_port()}/hooks/{uuid.uuid4().hex[:8]}"
        endpoint = client.post(
            "/v1/webhook-endpoints",
            json={"url": url, "events": ["transfer.succeeded"]},
            headers=alice,
        )
        assert endpoint.status_code == 201, endpoint.text
        a = open_account(client, alice)
        deposit = post_deposit(client, operator_headers(client, session_factory), a["id"], 700)
        wait_terminal(client, alice, deposit["id"])
        deadline = time.monotonic() + 90
        while True:
            deliveries = client.get(
                f"/v1/webhook-endpoints/{endpoint.json()['id']}/deliveries", headers=alice
            ).json()["data"]
            if deliveries and deliveries[0]["attempts"] >= 1:
                return url, deliveries[0]["id"], deposit["id"]
            assert time.monotonic() < deadline, deliveries
            time.sleep(0.2)


def test_status_shows_processes_backlog_failing_webhooks_and_verify(
    live_api, private_hooks_api, session_factory
):
    url, _, transfer_id = _failing_delivery(private_hooks_api, session_factory)
    recorded = settle("verify", "--record")
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr

    result = settle("status", "--api", private_hooks_api, "--json")
    assert result.stdout.startswith("{"), result.stderr
    status = json.loads(result.stdout)
    assert status["processes"]["gateway"]["state"] == "ready"
    assert status["processes"]["redis"] == "ok"
    assert status["processes"]["workers"], status  # the e2e worker answered the ping
    assert status["transfers"]["pending"] >= 0
    assert set(status["transfers"]["queued_messages"]) == {"transfers", "webhooks"}
    failing = {e["url"]: e for e in status["failing_webhooks"]}
    assert url in failing, status["failing_webhooks"]
    assert failing[url]["retrying"] + failing[url]["failed"] >= 1
    assert failing[url]["last_error"] or failing[url]["last_status_code"]
    assert status["last_verify"]["ok"] is True
    assert result.returncode == (1 if status["problems"] else 0)

    text = settle("status", "--api", private_hooks_api)
    for heading in ("processes", "transfers", "webhooks", "ledger", url, "last verify"):
        assert heading in text.stdout, text.stdout

    shown = settle("transfers", "show", transfer_id)
    assert url in shown.stdout and "transfer.succeeded" in shown.stdout


def test_status_with_the_gateway_down_says_so_and_exits_1(live_api):
    api = f"http://127.0.0.1:{free_port()}"
    result = settle("status", "--api", api)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not answering" in result.stdout
    assert "attention: the gateway is not answering" in result.stderr


def test_webhooks_redeliver_as_an_operator(
    live_api, private_hooks_api, session_factory, operator_email
):
    _, delivery_id, _ = _failing_delivery(private_hooks_api, session_factory)
    result = settle(
        "webhooks",
        "redeliver",
        delivery_id,
        *("--as", operator_email, "--password-stdin", "--api", private_hooks_api),
        stdin=f"{PASSWORD}\n",
    )
    assert result.returncode == 0, result.stderr
    assert f"delivery {delivery_id} queued again" in result.stdout
    refused = settle(
        "webhooks",
        "redeliver",
        str(uuid.uuid4()),
        *("--as", operator_email, "--password-stdin", "--api", private_hooks_api),
        stdin=f"{PASSWORD}\n",
    )
    assert refused.returncode == 2 and "not_found" in refused.stderr, refused.stderr
