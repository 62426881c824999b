"""The results PNG: settled transfers per second over time for each scenario (with the
direct-SQL ceiling as a line), the latency CDFs, latency over the latency run, and CPU
by component during the uniform scenario."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server or in CI

import matplotlib.pyplot as plt

RATE_WINDOW_SECONDS = 1.0


def _rates(timeline: list[list[float]]) -> tuple[list[float], list[float]]:
    """Settled/s over sliding windows of RATE_WINDOW_SECONDS from (t, settled) samples."""
    times, rates = [], []
    start = 0
    for end in range(1, len(timeline)):
        while timeline[end][0] - timeline[start][0] > RATE_WINDOW_SECONDS:
            start += 1
        span = timeline[end][0] - timeline[start][0]
        if span > 0 and start != end:
            times.append(timeline[end][0])
            rates.append((timeline[end][1] - timeline[start][1]) / span)
    return times, rates


def write_png(path: Path, results: dict[str, Any]) -> None:
    figure, axes = plt.subplots(2, 2, figsize=(13, 9), constrained_layout=True)
    (throughput, cdf), (over_time, cpu) = axes

    for scenario in results["scenarios"].values():
        if scenario["available"] and scenario["timeline"]:
            times, rates = _rates(scenario["timeline"])
            throughput.plot(times, rates, label=scenario["title"], linewidth=1.2)
    ceiling = (results.get("ceiling") or {}).get("transfers_per_second")
    if ceiling:
        throughput.axhline(ceiling, color="black", linestyle="--", linewidth=1)
        throughput.annotate(
            f"direct-SQL ceiling {ceiling:.0f}/s",
            (0, ceiling),
            xytext=(4, -12),
            textcoords="offset points",
            fontsize=8,
        )
        throughput.set_yscale("log")
    throughput.set_xlabel("seconds since the scenario's first submit")
    throughput.set_ylabel(f"settled transfers/s ({RATE_WINDOW_SECONDS:.0f} s window)")
    throughput.set_title("Throughput over time, end to end")
    throughput.grid(True, which="both", alpha=0.3)
    if throughput.get_legend_handles_labels()[0]:
        throughput.legend(fontsize=8, loc="lower right")

    latency = results.get("latency") or {}
    for key, label in (
        ("submit_to_terminal_seconds", "submit → terminal"),
        ("commit_to_webhook_seconds", "commit → webhook received"),
    ):
        values = latency.get(key) or []
        if values:
            ms = [1000 * v for v in values]
            fraction = [(i + 1) / len(ms) for i in range(len(ms))]
            cdf.step(ms, fraction, where="post", label=f"{label} (n={len(ms)})")
    for limit, style in ((100, ":"), (1000, "--")):
        cdf.axvline(limit, color="grey", linestyle=style, linewidth=1)
    cdf.axhline(0.99, color="grey", linewidth=0.6)
    cdf.set_xscale("log")
    cdf.set_xlabel("milliseconds (targets: p99 ≤ 100 ms, webhook p99 ≤ 1000 ms)")
    cdf.set_ylabel("fraction of transfers")
    rate = latency.get("rate")
    cdf.set_title(f"Latency CDF at {rate:.1f}/s" if rate else "Latency CDF (not run)")
    cdf.grid(True, which="both", alpha=0.3)
    if latency:
        cdf.legend(fontsize=8, loc="lower right")

    points = latency.get("submit_to_terminal_over_time") or []
    if points:
        over_time.scatter([t for t, _ in points], [1000 * v for _, v in points], s=4)
        over_time.set_yscale("log")
        over_time.axhline(100, color="grey", linestyle=":", linewidth=1)
    over_time.set_xlabel("seconds since the latency run's first submit")
    over_time.set_ylabel("submit → terminal, ms")
    over_time.set_title("Latency over the latency run (growth = backlog)")
    over_time.grid(True, which="both", alpha=0.3)

    by_component = (results.get("cpu_uniform") or {}).get("by_component") or {}
    if by_component:
        ranked = sorted(by_component.items(), key=lambda item: item[1]["cpu_percent"])
        cpu.barh([name for name, _ in ranked], [f["cpu_percent"] for _, f in ranked])
        cpu.tick_params(axis="y", labelsize=8)
    cpu.set_xlabel("% of one core")
    cpu.set_title("Where the CPU went during the uniform scenario")
    cpu.grid(True, axis="x", alpha=0.3)

    figure.suptitle(f"make bench — {results.get('started_at', '')}", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
