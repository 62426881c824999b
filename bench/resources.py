"""Where the CPU and memory go, by component: Settle's processes, PostgreSQL, Redis,
the bench itself, and whatever else runs on this (shared) machine.

CPU is the delta of each process's user+system time over a window, as a percentage
of one core; the machine's total busy time over the same window shows how much of
it was someone else's.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import psutil
import redis

from bench.observer import BENCH_APPLICATION_NAME, connect
from bench.stack import Stack


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _is_postgres(process: psutil.Process) -> bool:
    try:
        return process.name() in ("postgres", "postmaster")
    except psutil.Error:
        return False


def _is_backend(cmdline: str) -> bool:
    """A client connection's process title names its peer: `host(port)` or `[local]`."""
    return "(" in cmdline or "[local]" in cmdline


def _postgres(database_name: str) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """(backends of the bench database, the server's own processes): the postmaster
    that owns our backends and its non-backend children (WAL writer, checkpointer...);
    other databases' backends on a shared server are left out."""
    backends = []
    for process in psutil.process_iter(["cmdline"]):
        if _is_postgres(process) and database_name in " ".join(process.info["cmdline"] or []):
            backends.append(process)
    server: list[psutil.Process] = []
    for pid in {b.ppid() for b in backends}:
        try:
            postmaster = psutil.Process(pid)
            server.append(postmaster)
            server.extend(
                c for c in postmaster.children() if not _is_backend(" ".join(c.cmdline()))
            )
        except psutil.Error:
            continue
    return backends, server


def _redis(redis_url: str) -> list[psutil.Process]:
    """The redis-server behind REDIS_URL: by its unix socket path or its TCP port."""
    url = urlsplit(redis_url)
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] != "redis-server":
            continue
        try:
            if url.scheme == "unix":
                if url.path in " ".join(process.info["cmdline"] or []):
                    found.append(process)
            elif any(
                c.laddr and c.laddr.port == (url.port or 6379) and c.status == "LISTEN"
                for c in process.net_connections(kind="inet")
            ):
                found.append(process)
        except psutil.Error:
            continue
    return found


def components(stack: Stack) -> dict[str, list[psutil.Process]]:
    """Processes by component, looked up now (pool children can be replaced)."""
    groups: dict[str, list[psutil.Process]] = {}
    labels = {
        "web": "gateway (settle serve web)",
        "worker": "transfer worker",
        "webhooks": "webhooks worker",
        "beat": "beat",
        "flower": "flower",
    }
    for name, process in stack.processes.items():
        groups[labels.get(name, name)] = _tree(process.pid)
    backends, server = _postgres(stack.database_name)
    groups["postgres: bench database backends"] = backends
    groups["postgres: background (whole server)"] = server
    groups["redis-server (whole server)"] = _redis(stack.env["REDIS_URL"])
    groups["bench client (this process)"] = [psutil.Process(os.getpid())]
    return groups


def _cpu_seconds(process: psutil.Process) -> float | None:
    try:
        times = process.cpu_times()
        return float(times.user + times.system)
    except psutil.Error:
        return None


def _busy(times: Any) -> float:
    return float(times.user + times.nice + times.system + times.irq + times.softirq + times.steal)


def _total(times: Any) -> float:
    return _busy(times) + float(times.idle + times.iowait)


@dataclass
class CpuWindow:
    """Open with start(), close with stop(); then `by_component` holds the figures."""

    stack: Stack
    by_component: dict[str, dict[str, float]] = field(default_factory=dict)
    machine_busy_percent: float = 0.0
    cores: int = field(default_factory=lambda: psutil.cpu_count() or 1)
    seconds: float = 0.0

    def start(self) -> None:
        self._groups = components(self.stack)
        self._before = {p.pid: _cpu_seconds(p) for procs in self._groups.values() for p in procs}
        self._machine = psutil.cpu_times()
        self._started = time.monotonic()

    def stop(self) -> None:
        self.seconds = time.monotonic() - self._started
        machine = psutil.cpu_times()
        delta_total = _total(machine) - _total(self._machine)
        delta_busy = _busy(machine) - _busy(self._machine)
        self.machine_busy_percent = (
            100 * self.cores * delta_busy / delta_total if delta_total else 0
        )
        # Processes that appeared during the window (new pool children) count from 0.
        now = components(self.stack)
        for name, procs in now.items():
            used = 0.0
            for process in procs:
                after = _cpu_seconds(process)
                if after is None:
                    continue
                before = self._before.get(process.pid)
                used += after - (before or 0.0)
            self.by_component[name] = {
                "processes": len(procs),
                "cpu_percent": round(100 * used / self.seconds, 1) if self.seconds else 0.0,
            }
        accounted = sum(c["cpu_percent"] for c in self.by_component.values())
        self.by_component["everything else on the machine"] = {
            "processes": 0,
            "cpu_percent": round(max(0.0, self.machine_busy_percent - accounted), 1),
        }

    def as_dict(self, transfers: int) -> dict[str, Any]:
        """The window's figures, and each component's CPU per transfer the scenario
        settled (`ms_per_transfer`): the figure a change to a hot path moves, steadier
        than a rate on a shared machine."""

        def per_transfer(cpu_percent: float) -> float | None:
            used_ms = 10 * cpu_percent * self.seconds  # % of a core for s seconds -> ms
            return round(used_ms / transfers, 3) if transfers else None

        return {
            "seconds": round(self.seconds, 2),
            "cores": self.cores,
            "machine_busy_percent": round(self.machine_busy_percent, 1),
            "transfers": transfers,
            "by_component": {
                name: {**figures, "ms_per_transfer": per_transfer(figures["cpu_percent"])}
                for name, figures in self.by_component.items()
            },
        }


def rss_by_process(stack: Stack) -> dict[str, int]:
    """Resident memory (bytes) of every Settle process, labelled by role and pid."""
    sizes: dict[str, int] = {}
    for name, process in stack.processes.items():
        tree = _tree(process.pid)
        for index, proc in enumerate(tree):
            role = "parent" if index == 0 else "child"
            try:
                sizes[f"{name} {role} {proc.pid}"] = int(proc.memory_info().rss)
            except psutil.Error:
                continue
    return sizes


def postgres_connections(stack: Stack) -> dict[str, int]:
    """Sessions on the bench database by who holds them: Settle's processes name
    theirs `settle-gateway <pid>` / `settle-worker <pid>` (application_name); the
    bench's own are left out."""
    conn = connect(stack.database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT coalesce(nullif(split_part(application_name, ' ', 1), ''), 'unnamed'),"
                " count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name <> %s"
                " GROUP BY 1 ORDER BY 1",
                (BENCH_APPLICATION_NAME,),
            )
            return {str(name): int(count) for name, count in cur.fetchall()}
    finally:
        conn.close()


def client_role(client_name: str) -> str:
    """`settle-gateway-1234` -> `settle-gateway`: Settle's own clients carry their pid
    (settle/broker.py); the broker connections are named per application."""
    head, _, tail = client_name.rpartition("-")
    return head if head and tail.isdigit() else client_name or "unnamed"


def redis_connections(stack: Stack) -> dict[str, int]:
    """Settle's clients of its Redis (CLIENT LIST), by client name without the pid.
    Over TCP, those whose address is a socket of a Settle process (a shared server has
    other clients); over a unix socket (the embedded server, the bench's own) every
    client but this one."""
    url = stack.env["REDIS_URL"]
    client = redis.Redis.from_url(url)
    try:
        me = client.client_id()
        clients = [c for c in client.client_list() if int(c["id"]) != me]
    finally:
        client.close()
    if not url.startswith("unix://"):
        ours = _settle_addresses(stack, urlsplit(url).port or 6379)
        clients = [c for c in clients if c.get("addr") in ours]
    by_role: dict[str, int] = {}
    for c in clients:
        role = client_role(c.get("name", ""))
        by_role[role] = by_role.get(role, 0) + 1
    return dict(sorted(by_role.items()))


def _settle_addresses(stack: Stack, port: int) -> set[str]:
    """The local addresses of every TCP connection to `port` that a Settle process holds."""
    ours = set()
    for process in stack.processes.values():
        for proc in _tree(process.pid):
            try:
                for c in proc.net_connections(kind="tcp"):
                    if c.raddr and c.raddr.port == port:
                        ours.add(f"{c.laddr.ip}:{c.laddr.port}")
            except psutil.Error:
                continue
    return ours


# The long-running processes' sessions; one-off commands (`settle verify`, which beat's
# task runs as a child process every few minutes) come and go and are shown apart.
LONG_RUNNING = ("settle-gateway", "settle-worker", "settle-beat")


def connection_counts(stack: Stack) -> dict[str, int]:
    """PostgreSQL sessions by component and in all, and Redis clients, right now."""
    sessions = postgres_connections(stack)
    counts = {f"postgres: {name}": n for name, n in sessions.items()}
    counts["postgres: gateway, workers and beat"] = sum(
        sessions.get(name, 0) for name in LONG_RUNNING
    )
    clients = redis_connections(stack)
    counts.update({f"redis: {role}": n for role, n in clients.items()})
    counts["redis: all of Settle"] = sum(clients.values())
    return counts
