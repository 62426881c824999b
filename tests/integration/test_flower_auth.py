"""All of Flower sits behind its authentication (issue 10, finding 6).

Starts Flower as `settle serve flower` does, on the test Redis, and asks each kind
of path without, with wrong and with right credentials. Fails on the old code:
`/metrics` and `/healthcheck` answered 200 to anyone. Also checks that the
password is on no command line of the process tree.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psutil
import pytest

from settle import processes
from settle.harness import Process, free_port
from tests.services import client_names

USER, PASSWORD = "ops", "flower-test-password-7f3a"
PATHS = ["/healthcheck", "/metrics", "/", "/workers", "/api/workers", "/broker", "/nope"]


@contextmanager
def _running_flower(**env_overrides: str) -> Iterator[tuple[Process, str]]:
    port = free_port()
    env = {
        **os.environ,
        "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}",
        "SETTLE_FLOWER_ADDRESS": "127.0.0.1",
        "SETTLE_FLOWER_PORT": str(port),
        **env_overrides,
    }
    process = Process("flower", processes.serve_argv("flower"), env)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{base_url}/healthcheck", timeout=1)
            break
        except httpx.HTTPError:
            if process.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"flower did not start:\n{process.log()[-4000:]}") from None
            time.sleep(0.2)
    try:
        yield process, base_url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def flower() -> Iterator[tuple[Process, str]]:
    with _running_flower() as started:
        yield started


@pytest.mark.parametrize("path", PATHS)
def test_no_flower_path_answers_without_credentials(flower, path):
    _, base_url = flower
    anonymous = httpx.get(base_url + path, timeout=10)
    assert anonymous.status_code == 401, (path, anonymous.status_code)
    if not path.startswith("/api/"):  # Flower's API answers a bare 401
        assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    wrong = httpx.get(base_url + path, auth=(USER, "not-the-password"), timeout=10)
    assert wrong.status_code == 401


def test_health_and_metrics_answer_with_credentials(flower):
    _, base_url = flower
    health = httpx.get(f"{base_url}/healthcheck", auth=(USER, PASSWORD), timeout=10)
    assert health.status_code == 200 and health.text == "OK"
    metrics = httpx.get(f"{base_url}/metrics", auth=(USER, PASSWORD), timeout=10)
    assert metrics.status_code == 200 and "flower_" in metrics.text


def test_the_password_is_on_no_command_line(flower):
    process, _ = flower
    tree = psutil.Process(process.pid)
    for proc in [tree, *tree.children(recursive=True)]:
        assert not any(PASSWORD in arg for arg in proc.cmdline())


def test_flowers_broker_connections_carry_its_name(redis_client):
    """`settle-flower-<pid>` in CLIENT LIST, told apart from the workers' connections
    (on a Redis broker whatever this run's broker: names are CLIENT LIST's)."""
    with _running_flower(SETTLE_BROKER_URL="") as (process, base_url):
        httpx.get(f"{base_url}/broker", auth=(USER, PASSWORD), timeout=10)
        names = client_names(redis_client)
    assert f"settle-flower-{process.popen.pid}" in names
