"""`settle serve web`: one gateway process per core, each with its own listening socket.

Every child binds the same address with SO_REUSEPORT, so the kernel hashes incoming
connections across processes. (`uvicorn --workers N` shares one socket instead, and
profiling showed every keep-alive connection landing on the same worker.) The parent
only supervises: it forwards SIGINT/SIGTERM to the children and exits 0 once they
stopped cleanly; if a child dies on its own, it stops the others and exits non-zero,
so a process manager (honcho, Docker) sees the failure and can restart the whole set.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from types import FrameType
from typing import Any

from settle import logs
from settle.config import Settings
from settle.processes import GATEWAY_FACTORY, web_child_argv, web_processes

logger = logging.getLogger("settle.web")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Long-polls (`?wait=` ≤ 30 s) are allowed to finish before a child is killed.
STOP_GRACE_SECONDS = 35.0
LISTEN_BACKLOG = 2048


def bind_reuseport(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


def _exit_with_parent() -> None:
    """Stop this child if the supervisor disappears (e.g. SIGKILLed), instead of
    listening on as an orphan nobody will stop."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="settle-parent-watch", daemon=True).start()


def gateway_config(settings: Settings, app: Any = GATEWAY_FACTORY) -> Any:
    """The uvicorn.Config of one gateway process (`app`: the gateway factory's path,
    or, in tests, any ASGI app).

    Proxy headers (X-Forwarded-For/-Proto) are honoured only from the peers listed
    in SETTLE_TRUSTED_PROXIES, by default none. uvicorn's own default trusts
    127.0.0.1 (or its FORWARDED_ALLOW_IPS variable), which let any client arriving
    over loopback choose the address its rate limits and lockouts key on.
    """
    import uvicorn

    trusted = list(settings.trusted_proxies)
    return uvicorn.Config(
        app,
        factory=isinstance(app, str),
        host=settings.http_host,
        port=settings.http_port,
        access_log=settings.http_access_log,
        log_level=settings.log_level.lower(),
        # Settle's own handler (settle/logs.py) formats uvicorn's lines too.
        log_config=None,
        # "auto" picks uvloop and httptools when installed (they are dependencies).
        loop="auto",
        http="auto",
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted,
    )


def serve_one(settings: Settings, *, supervised: bool = True) -> int:
    """One gateway process on its own SO_REUSEPORT socket (what each child runs)."""
    import uvicorn

    logs.configure(log_format=settings.log_format, level=settings.log_level)
    sock = bind_reuseport(settings.http_host, settings.http_port)
    if supervised:
        _exit_with_parent()
    server = uvicorn.Server(gateway_config(settings))
    # uvicorn re-raises the stop signal once it has shut down; with a no-op handler in
    # place, a requested stop ends in exit status 0 instead of death by signal.
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda *_: None)
    server.run(sockets=[sock])
    return 0 if server.started else 1


class _Events:
    def __init__(self) -> None:
        self.wake = threading.Event()
        self.signals: list[int] = []

    def on_signal(self, sig: int, _frame: FrameType | None) -> None:
        self.signals.append(sig)
        self.wake.set()

    def on_child(self, _sig: int, _frame: FrameType | None) -> None:
        self.wake.set()


def supervise(settings: Settings) -> int:
    """Start `web_processes` gateway children; see the module docstring for the rules."""
    count = web_processes(settings)
    events = _Events()
    for sig in STOP_SIGNALS:
        signal.signal(sig, events.on_signal)
    signal.signal(signal.SIGCHLD, events.on_child)
    # Own sessions: a terminal's Ctrl-C (or honcho's killpg) reaches only this
    # parent, which forwards it once; children never get the signal twice.
    children = [
        subprocess.Popen(web_child_argv(), start_new_session=True)  # noqa: S603
        for _ in range(count)
    ]
    logger.info(
        "web: %d gateway processes on %s:%d (pids %s)",
        count,
        settings.http_host,
        settings.http_port,
        " ".join(str(child.pid) for child in children),
    )
    while True:
        # The timeout covers a signal that lands between the checks and the wait.
        events.wake.wait(timeout=1.0)
        events.wake.clear()
        if events.signals:
            return _stop(children, events.signals[-1], events)
        dead = [child for child in children if child.poll() is not None]
        if dead:
            for child in dead:
                logger.error(
                    "web: gateway process %d exited with %s; stopping the others",
                    child.pid,
                    child.returncode,
                )
            _stop(children, signal.SIGTERM, events)
            return 1


def _stop(children: list[subprocess.Popen[bytes]], sig: int, events: _Events) -> int:
    forwarded = len(events.signals)
    for child in children:
        if child.poll() is None:
            child.send_signal(sig)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children:
        while child.poll() is None and time.monotonic() < deadline:
            # A second Ctrl-C is passed on too: uvicorn then stops without waiting.
            if len(events.signals) > forwarded:
                forwarded = len(events.signals)
                for other in children:
                    if other.poll() is None:
                        other.send_signal(events.signals[-1])
            events.wake.wait(timeout=0.2)
            events.wake.clear()
        if child.poll() is None:
            logger.error("web: gateway process %d did not stop; killing it", child.pid)
            child.kill()
            child.wait()
    clean = all(child.returncode == 0 for child in children)
    return 0 if clean else 1
