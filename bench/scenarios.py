"""The workloads: who pays whom, how fast, and what counts as done.

Throughput scenarios are closed loops: `connections` submitters send transfers as
fast as the gateway accepts them, and the figure is transfers settled per second from
the first submit to the last transfer observed terminal in the database. Latency and
soak are open loops at a fixed rate, each request timed from its scheduled send time
(so a slow gateway cannot hide queueing by delaying the client).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
from rich.progress import Progress, TaskID

from bench.client import Accounts, Api, Response, TransportError, encode, transfer_body
from bench.observer import (
    LATENCY_POLL_SECONDS,
    SettledCounter,
    TerminalWatcher,
    max_seq,
    queued_messages,
    stage_times,
    status_counts,
    vacuum_analyze,
)
from bench.receiver import Receipts
from bench.stack import Stack
from settle.broker import TRANSFERS_QUEUE, WEBHOOKS_QUEUE

Body = dict[str, Any] | bytes  # bytes: serialised before the clock starts
BATCHES_PATH = "/v1/transfer-batches"
MONITOR_SECONDS = 0.2


@dataclass
class Context:
    api: Api
    accounts: Accounts
    stack: Stack
    progress: Progress
    connections: int
    # A scenario whose settled count has not grown for this long has stalled: an error.
    stall_seconds: float = 60.0
    rng: random.Random = field(default_factory=lambda: random.Random(1))


@dataclass
class ScenarioResult:
    name: str
    title: str
    available: bool = True
    note: str = ""
    accepted: int = 0
    seconds: float = 0.0  # first submit → last transfer observed terminal
    submit_seconds: float = 0.0  # first submit → last 202
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (s, settled so far)
    statuses: dict[str, int] = field(default_factory=dict)
    client_cpu_percent: float = 0.0  # of one core, the whole bench process
    # After the last transfer settled: queued messages left, and seconds until none were.
    leftover_messages: int = 0
    queue_drain_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def settled_per_second(self) -> float:
        return self.accepted / self.seconds if self.seconds and not self.errors else 0.0

    @property
    def accepted_per_second(self) -> float:
        return self.accepted / self.submit_seconds if self.submit_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "available": self.available,
            "note": self.note,
            "transfers": self.accepted,
            "seconds": round(self.seconds, 3),
            "settled_per_second": round(self.settled_per_second, 2),
            "accepted_per_second": round(self.accepted_per_second, 2),
            "statuses": self.statuses,
            "client_cpu_percent": round(self.client_cpu_percent, 1),
            "leftover_messages": self.leftover_messages,
            "queue_drain_seconds": round(self.queue_drain_seconds, 2),
            "errors": self.errors,
            "timeline": [[round(t, 2), n] for t, n in self.timeline],
        }


def uniform_pairs(ctx: Context, count: int) -> Iterator[tuple[int, int]]:
    n = len(ctx.accounts.ids)
    for _ in range(count):
        source, destination = ctx.rng.sample(range(n), 2)
        yield source, destination


def hot_destination_pairs(ctx: Context, count: int) -> Iterator[tuple[int, int]]:
    hot = ctx.accounts.hot_destination
    others = [i for i in range(len(ctx.accounts.ids)) if i != hot]
    for _ in range(count):
        yield ctx.rng.choice(others), hot


def hot_source_pairs(ctx: Context, count: int) -> Iterator[tuple[int, int]]:
    hot = ctx.accounts.hot_source
    others = [i for i in range(len(ctx.accounts.ids)) if i != hot]
    for _ in range(count):
        yield hot, ctx.rng.choice(others)


def _error(response: Response, what: str) -> str:
    return f"{what}: HTTP {response.status_code} {response.text[:200]}"


class _Run:
    """Shared bookkeeping of one closed-loop scenario: the settled counter, the
    progress bar, stall and dead-process detection, the client's CPU share."""

    def __init__(self, ctx: Context, result: ScenarioResult, total: int) -> None:
        self.ctx, self.result = ctx, result
        self.counter = SettledCounter(ctx.stack.database_url, max_seq(ctx.stack.database_url))
        self.task: TaskID = ctx.progress.add_task(result.title, total=total)
        self.submitting = True
        self._cpu = psutil.Process().cpu_times()

    def start(self) -> None:
        self.counter.start()
        self.started = time.monotonic()

    async def monitor(self) -> None:
        """Until every accepted transfer settled (or the run broke)."""
        while True:
            await asyncio.sleep(MONITOR_SECONDS)
            settled = self.counter.progress.settled
            self.ctx.progress.update(self.task, completed=settled)
            if self.counter.error is not None:
                self.result.errors.append(f"settled counter: {self.counter.error!r}")
                return
            dead = self.ctx.stack.dead()
            if dead:
                self.result.errors.extend(dead)
                return
            if not self.submitting and settled >= self.result.accepted:
                return
            idle = time.monotonic() - self.counter.progress.started
            if idle - self.counter.progress.last_change > self.ctx.stall_seconds:
                self.result.errors.append(
                    f"{self.result.accepted - settled} of {self.result.accepted} transfers "
                    f"never settled (no progress for {self.ctx.stall_seconds:.0f} s)"
                )
                return

    def finish(self) -> None:
        self.counter.stop()
        cpu = psutil.Process().cpu_times()
        wall = time.monotonic() - self.started
        used = (cpu.user - self._cpu.user) + (cpu.system - self._cpu.system)
        self.result.client_cpu_percent = 100 * used / wall if wall else 0.0
        offset = self.counter.progress.started - self.started
        samples = self.counter.progress.samples
        self.result.timeline = [(at + offset, settled) for at, settled, _ in samples]
        done = [at for at, settled in self.result.timeline if settled >= self.result.accepted]
        self.result.seconds = done[0] if done and self.result.accepted else wall
        self.result.statuses = status_counts(self.ctx.stack.database_url, self.counter.after_seq)
        in_database = sum(self.result.statuses.values())
        if in_database != self.result.accepted and not self.result.errors:
            self.result.errors.append(
                f"{self.result.accepted} transfers accepted but {in_database} in the database"
            )
        self.ctx.progress.update(self.task, completed=self.counter.progress.settled)
        self.ctx.progress.stop_task(self.task)  # freezes its elapsed time and rate


async def _closed_loop(
    ctx: Context,
    run: _Run,
    items: Iterator[Body],
    send: Callable[[Body], Awaitable[int]],
) -> None:
    """`connections` submitters drain `items`; `send` returns how many transfers the
    server accepted for one item (raises nothing: failures land in result.errors)."""

    async def submitter() -> None:
        for item in items:  # one shared iterator: each item is sent exactly once
            # Awaited first: `x += await ...` would read x before the await and lose
            # the other submitters' updates.
            accepted = await send(item)
            run.result.accepted += accepted
            if run.result.errors:
                return

    run.start()
    monitor = asyncio.create_task(run.monitor())
    await asyncio.gather(*(submitter() for _ in range(ctx.connections)))
    run.result.submit_seconds = time.monotonic() - run.started
    run.submitting = False
    await monitor


async def transfers(
    ctx: Context, name: str, title: str, pairs: Iterator[tuple[int, int]], count: int
) -> ScenarioResult:
    result = ScenarioResult(name, title)
    run = _Run(ctx, result, count)

    async def send(body: Body) -> int:
        try:
            response = await ctx.api.money("/v1/transfers", body)
        except TransportError as exc:
            result.errors.append(str(exc))
            return 0
        if response.status_code != 202:
            result.errors.append(_error(response, "POST /v1/transfers"))
            return 0
        return 1

    bodies = [encode(transfer_body(ctx.accounts, s, d)) for s, d in pairs]
    try:
        await _closed_loop(ctx, run, iter(bodies), send)
    finally:
        run.finish()
    return result


async def batches(ctx: Context, count: int, batch_size: int) -> ScenarioResult:
    """POST /v1/transfer-batches (atomic: false), then GET …/{id}?wait= for each batch.
    A 404/405 on the first batch means this build has no batch endpoint."""
    title = f"batches of {batch_size}"
    result = ScenarioResult("batches", title)
    bodies = [transfer_body(ctx.accounts, s, d) for s, d in uniform_pairs(ctx, count)]
    chunks = [bodies[i : i + batch_size] for i in range(0, len(bodies), batch_size)]
    probe = await ctx.api.money(BATCHES_PATH, {"transfers": chunks[0][:1], "atomic": False})
    if probe.status_code in (404, 405):
        result.available = False
        result.note = (
            f"not available on this build (POST {BATCHES_PATH} answered {probe.status_code})"
        )
        return result
    if probe.status_code != 202:
        result.errors.append(_error(probe, f"POST {BATCHES_PATH}"))
        return result
    batch_ids: list[str] = []
    run = _Run(ctx, result, count)

    async def send(chunk: Body) -> int:
        try:
            response = await ctx.api.money(BATCHES_PATH, chunk)
        except TransportError as exc:
            result.errors.append(str(exc))
            return 0
        if response.status_code != 202:
            result.errors.append(_error(response, f"POST {BATCHES_PATH}"))
            return 0
        batch = response.json()
        batch_ids.append(str(batch["id"]))
        return len(batch["transfers"])

    try:
        items = [encode({"transfers": chunk, "atomic": False}) for chunk in chunks]
        await _closed_loop(ctx, run, iter(items), send)
    finally:
        run.finish()
    # The probe's one transfer was accepted before the counter's starting point, so it
    # is no part of the figure.
    gate = asyncio.Semaphore(ctx.connections)

    async def confirm(batch_id: str) -> None:
        async with gate:
            response = await ctx.api.get(f"{BATCHES_PATH}/{batch_id}?wait=5", ctx.api.customer)
        if response.status_code != 200:
            result.errors.append(_error(response, f"GET {BATCHES_PATH}/{{id}}?wait=5"))

    await asyncio.gather(*(confirm(batch_id) for batch_id in batch_ids))
    return result


@dataclass
class OpenLoopResult:
    submitted_at: dict[str, float] = field(default_factory=dict)  # id → scheduled wall time
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


async def open_loop(
    ctx: Context,
    *,
    rate: float,
    seconds: float,
    pairs: Iterator[tuple[int, int]],
    on_accepted: Callable[[str], None] = lambda _: None,
    task: TaskID | None = None,
) -> OpenLoopResult:
    """Send `rate` transfers per second for `seconds`, each at its scheduled moment
    whether or not earlier ones were answered."""
    result = OpenLoopResult()
    count = max(1, int(rate * seconds))
    started_wall, started = time.time(), time.monotonic()
    sent: list[asyncio.Task[None]] = []

    async def one(body: Body, scheduled: float) -> None:
        try:
            response = await ctx.api.money("/v1/transfers", body)
        except TransportError as exc:
            result.errors.append(str(exc))
            return
        if response.status_code != 202:
            result.errors.append(_error(response, "POST /v1/transfers"))
            return
        transfer_id = str(response.json()["id"])
        result.submitted_at[transfer_id] = scheduled
        on_accepted(transfer_id)

    for i, (source, destination) in enumerate(pairs):
        if i >= count or result.errors or ctx.stack.dead():
            break
        body = encode(transfer_body(ctx.accounts, source, destination))
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sent.append(asyncio.create_task(one(body, started_wall + i / rate)))
        if task is not None:
            ctx.progress.update(task, completed=i + 1)
    await asyncio.gather(*sent)
    result.seconds = time.monotonic() - started
    result.errors.extend(ctx.stack.dead())
    return result


# The stages of submit -> terminal, told apart by the transfer's own timestamps.
# Bench and database clocks are the same host's here; on a remote database, clock skew
# moves time between the first two stages (never the total).
STAGES = {
    "submit_to_accepted": "HTTP, the gateway, until its accept transaction starts",
    "accepted_to_applied": "the 202's commit, the wake-up, the queue, until a drain "
    "batch applies it (its locks taken)",
    "applied_to_seen": "the rest of that batch, its commit, and the bench's "
    f"{int(LATENCY_POLL_SECONDS * 1000)} ms poll",
}


@dataclass
class LatencyResult:
    rate: float
    seconds: float
    transfers: int = 0
    submit_to_terminal: list[float] = field(default_factory=list)  # seconds, sorted
    commit_to_webhook: list[float] = field(default_factory=list)  # seconds, sorted
    # Where submit -> terminal went, stage by stage (seconds, sorted; see STAGES).
    stages: dict[str, list[float]] = field(default_factory=dict)
    webhooks_missing: int = 0
    # (seconds since the first scheduled submit, submit → terminal), in submit order:
    # a latency that grows through the run means the offered rate was not sustained.
    over_time: list[tuple[float, float]] = field(default_factory=list)
    settled_per_second: float = 0.0  # first scheduled submit → last terminal
    errors: list[str] = field(default_factory=list)


async def latency(
    ctx: Context, *, rate: float, seconds: float, receipts: Receipts
) -> LatencyResult:
    """Open loop at `rate`, with a webhook endpoint pointing at the local receiver."""
    result = LatencyResult(rate=rate, seconds=seconds)
    endpoint = await ctx.api.post(
        "/v1/webhook-endpoints",
        {"url": receipts.url, "events": ["transfer.succeeded", "transfer.failed"]},
        ctx.api.customer,
    )
    if endpoint.status_code != 201:
        result.errors.append(_error(endpoint, "POST /v1/webhook-endpoints"))
        return result
    watcher = TerminalWatcher(ctx.stack.database_url, ctx.api.customer_id)
    watcher.start()
    task = ctx.progress.add_task(f"latency at {rate:.1f}/s", total=max(1, int(rate * seconds)))
    try:
        sent = await open_loop(
            ctx,
            rate=rate,
            seconds=seconds,
            pairs=uniform_pairs(ctx, max(1, int(rate * seconds))),
            on_accepted=watcher.watch,
            task=task,
        )
        ctx.progress.stop_task(task)
        result.errors.extend(sent.errors)
        result.transfers = len(sent.submitted_at)
        await _wait(ctx, lambda: watcher.outstanding == 0 or watcher.error is not None)
        if watcher.error is not None:
            result.errors.append(f"terminal watcher: {watcher.error!r}")
        if watcher.outstanding:
            result.errors.append(f"{watcher.outstanding} transfers never settled")
        ids = set(sent.submitted_at)
        await _wait(ctx, lambda: ids <= receipts.first.keys())
    finally:
        watcher.stop()
        await ctx.api.delete(f"/v1/webhook-endpoints/{endpoint.json()['id']}", ctx.api.customer)
    seen = sorted(
        (sent.submitted_at[i], watcher.terminal_at[i]) for i in ids if i in watcher.terminal_at
    )
    result.submit_to_terminal = sorted(terminal - submitted for submitted, terminal in seen)
    if seen:
        first = seen[0][0]
        result.over_time = [
            (submitted - first, terminal - submitted) for submitted, terminal in seen
        ]
        last = max(terminal for _, terminal in seen)
        result.settled_per_second = len(seen) / (last - first) if last > first else 0.0
    result.stages = await asyncio.to_thread(
        _stages, ctx.stack.database_url, sent.submitted_at, watcher.terminal_at
    )
    received = {i: receipts.first[i] for i in ids if i in receipts.first}
    result.commit_to_webhook = sorted(at - completed for at, completed in received.values())
    result.webhooks_missing = len(ids) - len(received)
    if result.webhooks_missing:
        result.errors.append(f"{result.webhooks_missing} webhooks never arrived")
    return result


def _stages(
    database_url: str, submitted_at: dict[str, float], terminal_at: dict[str, float]
) -> dict[str, list[float]]:
    seen = [i for i in submitted_at if i in terminal_at]
    return stage_durations(submitted_at, terminal_at, stage_times(database_url, seen))


def stage_durations(
    submitted_at: dict[str, float],
    terminal_at: dict[str, float],
    accepted_applied: dict[str, tuple[float, float]],
) -> dict[str, list[float]]:
    """Each STAGES duration of every transfer seen terminal (seconds, sorted)."""
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    for transfer_id, (accepted, applied) in accepted_applied.items():
        if transfer_id not in submitted_at or transfer_id not in terminal_at:
            continue
        stages["submit_to_accepted"].append(accepted - submitted_at[transfer_id])
        stages["accepted_to_applied"].append(applied - accepted)
        stages["applied_to_seen"].append(terminal_at[transfer_id] - applied)
    return {name: sorted(values) for name, values in stages.items()}


async def wait_settled(ctx: Context, after_seq: int) -> int:
    """Until nothing above `after_seq` is pending (or stall_seconds without progress);
    returns how many are still pending."""
    pending, changed = -1, time.monotonic()
    while True:
        now = (await asyncio.to_thread(status_counts, ctx.stack.database_url, after_seq)).get(
            "pending", 0
        )
        if now != pending:
            pending, changed = now, time.monotonic()
        if not pending or time.monotonic() - changed > ctx.stall_seconds or ctx.stack.dead():
            return pending
        await asyncio.sleep(0.5)


async def quiesce(ctx: Context, result: ScenarioResult | None = None) -> None:
    """Until Settle's queues are empty, so leftovers (e.g. wake-ups whose transfers a
    previous drain already applied) do not delay the next scenario; at most
    stall_seconds. What was left, and how long it took, goes into `result`. Then
    VACUUM ANALYZE (observer.vacuum_analyze), so every scenario starts from the
    tables autovacuum would leave behind the last one."""
    env = ctx.stack.env

    def count() -> int:
        queues = (TRANSFERS_QUEUE, WEBHOOKS_QUEUE)
        return queued_messages(env["REDIS_URL"], env["SETTLE_REDIS_PREFIX"], queues)

    started = time.monotonic()
    left = first = await asyncio.to_thread(count)
    while left and time.monotonic() - started < ctx.stall_seconds and not ctx.stack.dead():
        await asyncio.sleep(0.2)
        left = await asyncio.to_thread(count)
    if result is not None:
        result.leftover_messages = first
        result.queue_drain_seconds = time.monotonic() - started if first else 0.0
        if left:
            result.errors.append(f"{left} messages still queued {ctx.stall_seconds:.0f} s later")
    if not ctx.stack.dead():
        await asyncio.to_thread(vacuum_analyze, env["SETTLE_MIGRATION_DATABASE_URL"])


async def _wait(ctx: Context, done: Callable[[], bool]) -> None:
    """Until `done()`, at most stall_seconds (the caller reports what is missing)."""
    deadline = time.monotonic() + ctx.stall_seconds
    while not done() and time.monotonic() < deadline and not ctx.stack.dead():
        await asyncio.sleep(0.05)
