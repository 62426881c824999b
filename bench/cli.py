"""`make bench`: the command line, and the order in which a run does things.

    make bench                              # every scenario, ~5 minutes on 2 cores
    make bench BENCH_ARGS=--quick           # a smoke of every scenario; fails only on errors
    make soak                               # half load for 10 minutes: errors, RSS, connections
    .venv/bin/python -m bench --help

A run: start Settle (fresh database and Redis prefix), register and fund accounts,
measure the direct-SQL ceiling, run the throughput scenarios, then latency at half the
uniform rate; print the tables, write bench/results/<timestamp>.json and .png. Exit
status 1 means errors (failed HTTP calls, transfers that never settled, a process that
died), never a missed target.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from bench import ceiling, plot, report, scenarios
from bench.client import Api, open_client, open_funded_accounts, sign_in
from bench.observer import (
    SettledCounter,
    max_seq,
    status_counts,
    vacuum_analyze,
    webhook_stats,
)
from bench.receiver import Receipts, running_receiver
from bench.resources import CpuWindow, connection_counts, rss_by_process
from bench.stack import Stack, StackOptions, running_stack
from settle.config import cpu_count

RESULTS_DIR = Path("bench/results")
QUICK_DIR = Path("var/bench")
# Above this share of one core, the client may be what limits the figure.
CLIENT_CPU_WARNING_PERCENT = 70.0
# Other processes' CPU (% of one core) above which a run is flagged as noisy.
NOISE_WARNING_PERCENT = 25.0
# A latency run settling below this share of its offered rate did not keep up.
KEPT_UP = 0.95

FULL = {"accounts": 1000, "transfers": 3000, "latency_seconds": 30.0, "ceiling_seconds": 10.0}
QUICK = {"accounts": 100, "transfers": 200, "latency_seconds": 5.0, "ceiling_seconds": 2.0}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="End-to-end throughput and latency of Settle, next to a direct-SQL "
        "ceiling measured in the same run on the same PostgreSQL.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_true",
        help="a small smoke of every scenario (CI); exits non-zero only on errors",
    )
    mode.add_argument(
        "--soak", action="store_true", help="half the uniform rate for --soak-minutes; RSS"
    )
    mode.add_argument(
        "--latency-rate",
        type=float,
        metavar="PER_SECOND",
        help="only the latency scenario, at this rate (no ceiling, no throughput scenarios; "
        "its targets are not judged: they hold at half the uniform rate)",
    )
    parser.add_argument("--soak-minutes", type=float, default=10.0)
    parser.add_argument("--soak-rate", type=float, help="transfers/s (default: half uniform)")
    parser.add_argument("--accounts", type=int, help="default 1000 (quick: 100)")
    parser.add_argument("--transfers", type=int, help="per scenario; default 3000 (quick: 200)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--connections", type=int, default=8, help="HTTP keep-alive connections")
    parser.add_argument("--latency-seconds", type=float, help="default 30 (quick: 5)")
    parser.add_argument("--ceiling-seconds", type=float, help="default 10 (quick: 2)")
    parser.add_argument("--web-processes", type=int, help="default: one per core")
    parser.add_argument("--worker-concurrency", type=int, help="default: one per core")
    parser.add_argument("--with-flower", action="store_true", help="also run Flower")
    parser.add_argument("--access-log", action="store_true", help="gateway access log on")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    parser.add_argument(
        "--output", type=Path, help=f"results directory (default {RESULTS_DIR}; quick: {QUICK_DIR})"
    )
    return parser


def _defaults(args: argparse.Namespace) -> argparse.Namespace:
    sizes = QUICK if args.quick else FULL
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.output is None:
        args.output = QUICK_DIR if args.quick else RESULTS_DIR
    return args


class RateColumn(ProgressColumn):
    """Settled per second so far, over the task's whole elapsed time."""

    def render(self, task: Task) -> Text:
        if not task.elapsed or not task.completed:
            return Text("")
        return Text(f"{task.completed / task.elapsed:8.1f}/s")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<30}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        console=console,
    )


async def _settle_setup(ctx: scenarios.Context, expected: int, task: TaskID) -> None:
    """Until every funding deposit settled (they all leave one settlement account)."""
    counter = SettledCounter(ctx.stack.database_url, 0)
    counter.start()
    try:
        deadline = time.monotonic() + ctx.stall_seconds
        while counter.progress.settled < expected:
            ctx.progress.update(task, completed=counter.progress.settled)
            if counter.error or ctx.stack.dead() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{expected - counter.progress.settled} funding deposits never settled"
                    + (f" ({counter.error!r})" if counter.error else "")
                )
            if counter.progress.settled:
                deadline = max(deadline, time.monotonic() + ctx.stall_seconds / 2)
            await asyncio.sleep(0.2)
        ctx.progress.update(task, completed=expected)
        ctx.progress.stop_task(task)
    finally:
        counter.stop()


async def _run(args: argparse.Namespace, console: Console, results: dict[str, Any]) -> None:
    opts = StackOptions(
        web_processes=args.web_processes,
        worker_concurrency=args.worker_concurrency,
        with_flower=args.with_flower,
        access_log=args.access_log,
        keep_logs=args.keep_logs,
    )
    async with running_receiver() as receipts:
        with running_stack(opts) as stack:
            await _measure(args, console, results, receipts, stack)


async def _measure(
    args: argparse.Namespace,
    console: Console,
    results: dict[str, Any],
    receipts: Receipts,
    stack: Stack,
) -> None:
    results["config"]["processes"] = {
        name: " ".join(p.args[1:]) for name, p in stack.processes.items()
    }
    async with open_client(args.connections) as session:
        api = Api(session, stack.base_url)
        await sign_in(api, stack.database_url)
        with _progress(console) as progress:
            funding = progress.add_task("opening and funding accounts", total=args.accounts)
            ctx = scenarios.Context(
                api=api,
                accounts=await open_funded_accounts(api, args.accounts, args.connections),
                stack=stack,
                progress=progress,
                connections=args.connections,
            )
            await _settle_setup(ctx, args.accounts, funding)
            await asyncio.to_thread(vacuum_analyze, stack.env["SETTLE_MIGRATION_DATABASE_URL"])
            if args.soak:
                await _soak(args, ctx, results)
            elif args.latency_rate:
                results["notes"].append(
                    f"latency only, at {args.latency_rate:g}/s (--latency-rate): targets not judged"
                )
                await _latency(args, ctx, results, receipts, rate=args.latency_rate)
            else:
                await _scenarios(args, ctx, results, receipts)


async def _ceiling(
    args: argparse.Namespace, ctx: scenarios.Context, results: dict[str, Any]
) -> None:
    task = ctx.progress.add_task("direct-SQL ceiling", total=None)
    measured = await asyncio.to_thread(
        ceiling.run,
        # It installs its own SQL function: the owner's connection (the app role may not).
        ctx.stack.env["SETTLE_MIGRATION_DATABASE_URL"],
        ctx.accounts.ids,
        ctx.api.customer_id,
        seconds=args.ceiling_seconds,
    )
    ctx.progress.update(task, total=measured.transfers, completed=measured.transfers)
    ctx.progress.stop_task(task)
    results["ceiling"] = {
        "transfers": measured.transfers,
        "seconds": round(measured.seconds, 3),
        "connections": measured.connections,
        "transfers_per_second": round(measured.per_second, 1),
    }
    results["_ceiling"] = measured


async def _scenarios(
    args: argparse.Namespace,
    ctx: scenarios.Context,
    results: dict[str, Any],
    receipts: Receipts,
) -> None:
    results["notes"] += [
        "settled = terminal state observed in PostgreSQL; latency observations poll every 10 ms",
        "webhook latency uses the event's transfer.completed_at as the commit time",
        "webhook endpoint registered for the latency scenario only",
    ]
    await _ceiling(args, ctx, results)
    n = args.transfers
    await scenarios.quiesce(ctx)
    window = CpuWindow(ctx.stack)
    window.start()
    uniform = await scenarios.transfers(
        ctx,
        "uniform",
        f"uniform ({len(ctx.accounts.ids)} accounts)",
        scenarios.uniform_pairs(ctx, n),
        n,
    )
    window.stop()
    results["cpu_uniform"] = window.as_dict(uniform.accepted)
    await scenarios.quiesce(ctx, uniform)
    runs = [uniform]
    for name, title, pairs in (
        ("hot_destination", "hot destination", scenarios.hot_destination_pairs),
        ("hot_source", "hot source", scenarios.hot_source_pairs),
    ):
        if ctx.stack.dead():
            break
        runs.append(await scenarios.transfers(ctx, name, title, pairs(ctx, n), n))
        await scenarios.quiesce(ctx, runs[-1])
    if not ctx.stack.dead():
        runs.append(await scenarios.batches(ctx, n, args.batch_size))
        await scenarios.quiesce(ctx, runs[-1])
    for run in runs:
        if run.queue_drain_seconds > 1:
            results["notes"].append(
                f"{run.title}: {run.leftover_messages} messages were still queued when its "
                f"last transfer settled; they took {run.queue_drain_seconds:.1f} s to drain "
                "(waited for before the next scenario, not counted in its figure)"
            )
    results["_scenarios"] = {run.name: run for run in runs}
    results["scenarios"] = {run.name: run.as_dict() for run in runs}
    for run in runs:
        results["errors"].extend(f"{run.title}: {e}" for e in run.errors)

    if uniform.errors or not uniform.settled_per_second or ctx.stack.dead():
        results["notes"].append("latency not measured: the uniform scenario gave no rate")
        return
    await _latency(args, ctx, results, receipts, rate=uniform.settled_per_second / 2)


async def _latency(
    args: argparse.Namespace,
    ctx: scenarios.Context,
    results: dict[str, Any],
    receipts: Receipts,
    *,
    rate: float,
) -> None:
    window = CpuWindow(ctx.stack)
    window.start()
    latency = await scenarios.latency(
        ctx, rate=rate, seconds=args.latency_seconds, receipts=receipts
    )
    window.stop()
    results["cpu_latency"] = window.as_dict(latency.transfers)
    results["_latency"] = latency
    results["errors"].extend(f"latency: {e}" for e in latency.errors)
    results["latency"] = {
        "rate": round(rate, 2),
        "seconds": args.latency_seconds,
        "transfers": latency.transfers,
        "submit_to_terminal": report.latency_summary(latency.submit_to_terminal),
        "commit_to_webhook": report.latency_summary(latency.commit_to_webhook),
        "stages": {
            name: {**report.latency_summary(values), "what": scenarios.STAGES[name]}
            for name, values in latency.stages.items()
        },
        "submit_to_terminal_seconds": [round(v, 5) for v in latency.submit_to_terminal],
        "commit_to_webhook_seconds": [round(v, 5) for v in latency.commit_to_webhook],
        "settled_per_second": round(latency.settled_per_second, 2),
        "submit_to_terminal_over_time": [[round(t, 3), round(v, 4)] for t, v in latency.over_time],
    }
    if latency.settled_per_second and latency.settled_per_second < KEPT_UP * rate:
        results["notes"].append(
            f"latency: offered {rate:.1f}/s but settled {latency.settled_per_second:.1f}/s; "
            "the system did not keep up, so the latencies include a growing backlog "
            "(see the latency-over-time chart)"
        )
    try:
        stats = webhook_stats(ctx.stack.database_url)
    except Exception as exc:  # a diagnostic only: a schema change must not fail the run
        results["notes"].append(f"webhook delivery statistics unavailable: {exc!r}")
    else:
        results["latency"]["webhook_deliveries"] = stats
        results["notes"].append(
            f"webhooks: {stats['deliveries']} deliveries, {stats['attempts']} attempts "
            f"({stats['failed_attempts']} failed), mean attempt {stats['mean_attempt_ms']} ms"
        )


async def _soak(args: argparse.Namespace, ctx: scenarios.Context, results: dict[str, Any]) -> None:
    rate = args.soak_rate
    if rate is None:
        n = args.transfers
        uniform = await scenarios.transfers(
            ctx, "uniform", "uniform (for the soak rate)", scenarios.uniform_pairs(ctx, n), n
        )
        results["scenarios"] = {"uniform": uniform.as_dict()}
        results["errors"].extend(f"uniform: {e}" for e in uniform.errors)
        if uniform.errors or not uniform.settled_per_second:
            return
        rate = uniform.settled_per_second / 2
    seconds = 60 * args.soak_minutes
    first_sample = min(60.0, seconds / 2)
    labels = [f"after {first_sample / 60:g} min", f"after {seconds / 60:g} min"]
    samples: dict[str, dict[str, int]] = {}
    connections: dict[str, dict[str, int]] = {}

    async def sample(label: str) -> None:
        samples[label] = rss_by_process(ctx.stack)
        connections[label] = await asyncio.to_thread(connection_counts, ctx.stack)

    # Connections every minute besides: pools fill up early, a leak keeps growing.
    over_time: list[tuple[float, dict[str, int]]] = []

    async def first() -> None:
        await asyncio.sleep(first_sample)
        await sample(labels[0])

    async def every_minute() -> None:
        started = time.monotonic()
        while True:
            counts = await asyncio.to_thread(connection_counts, ctx.stack)
            over_time.append((round((time.monotonic() - started) / 60, 2), counts))
            await asyncio.sleep(60)

    task = ctx.progress.add_task(f"soak at {rate:.1f}/s", total=max(1, int(rate * seconds)))
    sampler = asyncio.create_task(first())
    minutes = asyncio.create_task(every_minute())
    count = max(1, int(rate * seconds))
    after_seq = max_seq(ctx.stack.database_url)
    sent = await scenarios.open_loop(
        ctx, rate=rate, seconds=seconds, pairs=scenarios.uniform_pairs(ctx, count), task=task
    )
    ctx.progress.stop_task(task)
    await sampler
    minutes.cancel()
    await sample(labels[1])  # the end of the load, before the backlog (if any) drains
    over_time.append((round(seconds / 60, 2), connections[labels[1]]))
    results["errors"].extend(f"soak: {e}" for e in sent.errors)
    pending = await scenarios.wait_settled(ctx, after_seq)
    if pending:
        results["errors"].append(f"soak: {pending} transfers never settled")
    statuses = await asyncio.to_thread(status_counts, ctx.stack.database_url, after_seq)
    mib = 1024 * 1024
    table: dict[str, dict[str, float]] = {}
    for process in samples[labels[1]]:
        row = {label: samples[label].get(process, 0) / mib for label in labels}
        start, end = row[labels[0]], row[labels[1]]
        row["growth_percent"] = 100 * (end - start) / start if start else 0.0
        table[process] = {k: round(v, 2) for k, v in row.items()}
    links: dict[str, dict[str, int]] = {}
    first_half = [counts for at, counts in over_time if at <= seconds / 120]
    for name in sorted({*connections[labels[0]], *connections[labels[1]]}):
        row_counts = {label: connections[label].get(name, 0) for label in labels}
        row_counts["change"] = row_counts[labels[1]] - row_counts[labels[0]]
        # Flat: no more at the end than the most seen in the first half of the run.
        row_counts["first_half_max"] = max(
            (counts.get(name, 0) for counts in first_half), default=row_counts[labels[0]]
        )
        links[name] = row_counts
    results["soak"] = {
        "rate": round(rate, 2),
        "minutes": args.soak_minutes,
        "transfers": len(sent.submitted_at),
        "statuses": statuses,
        "errors": len(results["errors"]),
        "labels": labels,
        "rss_mib": table,
        "connections": links,
        "connections_over_time": [[at, counts] for at, counts in over_time],
    }
    results["soak"]["verdicts"] = report.soak_verdicts(results["soak"])


def _finish(args: argparse.Namespace, results: dict[str, Any]) -> None:
    measured = results.pop("_scenarios", {})
    results["targets"] = report.judge(
        measured,
        results.pop("_ceiling", None),
        results.pop("_latency", None),
        latency_judged=not args.latency_rate,
    )
    for name, scenario in results.get("scenarios", {}).items():
        if scenario["client_cpu_percent"] > CLIENT_CPU_WARNING_PERCENT:
            results["notes"].append(
                f"{name}: the bench process used {scenario['client_cpu_percent']:.0f} % of "
                "a core; the client may have limited this figure"
            )
    cpu: dict[str, Any] = results.get("cpu_uniform") or {}
    others = cpu.get("by_component", {}).get("everything else on the machine")
    if others and others["cpu_percent"] > NOISE_WARNING_PERCENT:
        results["notes"].append(
            f"other processes used {others['cpu_percent']:.0f} % of a core during the uniform "
            f"scenario (of {100 * cpu['cores']} %): this machine was busy, the figures are "
            "lower than on a quiet one"
        )
    uniform = results.get("scenarios", {}).get("uniform")
    if uniform:
        results["notes"].append(
            f"client CPU during uniform: {uniform['client_cpu_percent']:.0f} % of one core "
            "(load generator, database pollers and webhook receiver together)"
        )
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> int:
    args = _defaults(build_parser().parse_args(argv))
    # Logs (CI) get a readable width instead of rich's 80-column default.
    console = Console(width=None if sys.stdout.isatty() else 110)
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "mode": "quick"
        if args.quick
        else "soak"
        if args.soak
        else "latency"
        if args.latency_rate
        else "full",
        "machine": {"cores": cpu_count(), **report.environment()},
        "config": {
            "accounts": args.accounts,
            "transfers_per_scenario": args.transfers,
            "batch_size": args.batch_size,
            "http_connections": args.connections,
            "latency_seconds": args.latency_seconds,
            "ceiling_seconds": args.ceiling_seconds,
            "web_processes": args.web_processes or cpu_count(),
            "worker_concurrency": args.worker_concurrency or cpu_count(),
            "access_log": args.access_log,
            "with_flower": args.with_flower,
        },
        "scenarios": {},
        "notes": [],
        "errors": [],
    }
    try:
        asyncio.run(_run(args, console, results))
    except Exception as exc:  # reported like any other error, with the partial results
        results["errors"].append(f"run aborted: {exc!r}")
    _finish(args, results)
    report.print_report(console, results)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    json_path = args.output / f"{stamp}.json"
    report.write_json(json_path, results)
    png_path = args.output / f"{stamp}.png"
    plot.write_png(png_path, results)
    console.print(f"results: {json_path}  chart: {png_path}")
    # The soak's criteria (no error, RSS within 10 %, connections flat) are its result:
    # unlike a missed throughput target, a failed one fails the run.
    failed_soak = [v for v in results.get("soak", {}).get("verdicts", []) if not v["met"]]
    return 1 if results["errors"] or failed_soak else 0


if __name__ == "__main__":
    sys.exit(main())
