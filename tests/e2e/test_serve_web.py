"""`settle serve web`: several gateway processes on SO_REUSEPORT sockets, supervised."""

from __future__ import annotations

import os
import signal
import time

import httpx
import psutil
import pytest

from settle import processes
from settle.harness import Process, free_port, gateway_env

pytestmark = pytest.mark.e2e


def _start(web_processes: int = 2) -> tuple[Process, str]:
    port = free_port()
    env = gateway_env(dict(os.environ), port=port, processes=web_processes)
    process = Process("web", processes.serve_argv("web"), env)
    base_url = f"http://127.0.0.1:{port}"
    process.wait_for_http(f"{base_url}/healthz")
    return process, base_url


def _listening_children(process: Process) -> list[psutil.Process]:
    deadline = time.monotonic() + 30
    while True:
        children = psutil.Process(process.pid).children()
        listening = [c for c in children if any(s.status == "LISTEN" for s in c.net_connections())]
        if len(listening) == len(children) or time.monotonic() > deadline:
            return listening
        time.sleep(0.1)


def _listening_inodes(child: psutil.Process) -> set[str]:
    fds = {s.fd for s in child.net_connections() if s.status == "LISTEN"}
    return {os.readlink(f"/proc/{child.pid}/fd/{fd}") for fd in fds}


def test_each_gateway_process_has_its_own_socket_and_a_stop_is_clean():
    process, base_url = _start(web_processes=2)
    try:
        children = _listening_children(process)
        assert len(children) == 2
        # Their own listening sockets (distinct kernel sockets), not one inherited socket.
        sockets = [_listening_inodes(child) for child in children]
        assert all(sockets) and not sockets[0] & sockets[1]
        for _ in range(20):
            with httpx.Client(base_url=base_url) as client:
                assert client.get("/healthz").status_code == 200
    finally:
        assert process.stop(signal.SIGTERM) == 0
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


def test_a_dying_gateway_process_stops_the_others_and_fails():
    process, _ = _start(web_processes=2)
    try:
        victim, survivor = _listening_children(process)
        victim.send_signal(signal.SIGKILL)
        assert process.popen.wait(timeout=40) != 0
        survivor.wait(timeout=10)
    finally:
        process.stop()
