"""`make run` as a careful host: one per checkout, stopped cleanly by SIGINT or SIGTERM
sent to the make process alone, and a banner with the real ports once everything answers.

Each test runs the real `make run` (embedded PostgreSQL and Redis, every Procfile
process) in a checkout of its own under a temp directory (tests/processes.py,
`make_run_checkout`), on free ports.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.processes import MakeRun, make_run_checkout, running_make_run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One checkout for the module: the second run finds the first one's data (no initdb).
    return make_run_checkout(tmp_path_factory.mktemp("checkout"))


def _children_of(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _descendants(pid: int) -> set[int]:
    seen: set[int] = set()
    todo = [pid]
    while todo:
        for child in _children_of(todo.pop()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _assert_stopped_cleanly(run: MakeRun, processes: set[int], returncode: int, sig: int) -> None:
    output = run.process.log()
    # The child (settle.run) exited 0: make reports no failed recipe. make itself then
    # dies of the signal it got (GNU make re-raises it once its child is gone).
    assert "make: ***" not in output, output[-3000:]
    assert returncode in (0, -sig), output[-3000:]
    assert "stopped (SIG" in output, output[-3000:]
    survivors = [pid for pid in processes if _alive(pid)]
    assert not survivors, (survivors, output[-3000:])
    var = run.checkout / "var"
    assert not (var / "run.env").exists()
    assert not (var / "redis" / "redis.sock").exists()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{run.api}/healthz", timeout=2)


def test_a_second_instance_is_refused_and_sigterm_to_make_stops_everything(checkout):
    with running_make_run(checkout) as run:
        run.wait_until_ready()
        output = run.process.log()
        banner = output[output.index("Settle is ready") :]
        # The real ports, not 8000/5555, and Flower's credentials.
        assert f"http://127.0.0.1:{run.http_port}/docs" in banner
        assert f"http://127.0.0.1:{run.flower_port}" in banner
        user, _, password = (
            (checkout / "var" / "flower-basic-auth").read_text().strip().partition(":")
        )
        assert f"user {user!r}, password {password!r}" in banner
        assert httpx.get(f"{run.api}/readyz", timeout=5).status_code == 200
        run_env = (checkout / "var" / "run.env").read_text()
        assert f"SETTLE_HTTP_PORT={run.http_port}" in run_env

        second = subprocess.run(
            ["make", "-C", str(checkout), "run"],
            env={**os.environ, "SETTLE_HTTP_PORT": str(run.http_port)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert second.returncode != 0
        holder = (checkout / "var" / "run.lock").read_text().strip()
        assert f"already running in this checkout (pid {holder})" in second.stderr, second.stderr
        # It touched nothing: the first run's files and processes are all still there.
        assert (checkout / "var" / "run.env").read_text() == run_env
        assert httpx.get(f"{run.api}/readyz", timeout=5).status_code == 200

        processes = _descendants(run.process.pid)
        assert len(processes) >= 6, processes  # settle.run, honcho, its processes, servers
        returncode = run.signal_make(signal.SIGTERM)
        _assert_stopped_cleanly(run, processes, returncode, signal.SIGTERM)


def test_sigint_to_make_stops_everything(checkout):
    """`kill -INT <pid of make>`: make does not pass SIGINT on (a terminal sends it to the
    whole group), so settle.run notices make handling it and stops all the same."""
    with running_make_run(checkout) as run:
        run.wait_until_ready()
        processes = _descendants(run.process.pid)
        returncode = run.signal_make(signal.SIGINT)
        _assert_stopped_cleanly(run, processes, returncode, signal.SIGINT)
        assert re.search(r"stopped \(SIGINT", run.process.log())
