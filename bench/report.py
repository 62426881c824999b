"""Targets, the printed tables and the results JSON.

The targets come from the performance issue and are never adjusted to the figures:
each is printed next to the figure it judges, met or not.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.ceiling import CeilingResult
from bench.scenarios import LatencyResult, ScenarioResult


@dataclass(frozen=True)
class Target:
    figure: str
    text: str
    # (value, reference) -> met; reference is the ceiling or the uniform figure
    minimum_ratio: float | None = None
    relative_to: str = "ceiling"
    maximum_ms: float | None = None


TARGETS = {
    "uniform": Target("uniform", "≥ 0.5x ceiling", minimum_ratio=0.5),
    "batches": Target("batches", "≥ 1.5x ceiling", minimum_ratio=1.5),
    "hot_destination": Target(
        "hot_destination", "≥ 0.5x uniform", minimum_ratio=0.5, relative_to="uniform"
    ),
    "hot_source": Target("hot_source", "≥ 0.5x uniform", minimum_ratio=0.5, relative_to="uniform"),
    # Both measured at half the uniform rate.
    "submit_to_terminal_p99": Target("submit_to_terminal_p99", "p99 ≤ 100 ms", maximum_ms=100),
    "commit_to_webhook_p99": Target("commit_to_webhook_p99", "p99 ≤ 1 s", maximum_ms=1000),
}


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (no interpolation between samples)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary(values: list[float]) -> dict[str, Any]:
    """Percentiles in ms (None without samples: JSON has no NaN)."""

    def ms(fraction: float) -> float | None:
        return round(1000 * percentile(values, fraction), 1) if values else None

    return {
        "samples": len(values),
        "p50_ms": ms(0.50),
        "p95_ms": ms(0.95),
        "p99_ms": ms(0.99),
        "max_ms": ms(1.0),
    }


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def judge(
    scenarios: dict[str, ScenarioResult],
    ceiling: CeilingResult | None,
    latency: LatencyResult | None,
    *,
    latency_judged: bool = True,
) -> list[dict[str, Any]]:
    """One row per target: the figure, what it is compared with, and whether it is met.

    `latency_judged` False: the latency ran at a rate of the caller's choosing, not at
    half the uniform rate that the targets name; its figures are shown, not judged."""
    rows: list[dict[str, Any]] = []
    uniform = scenarios.get("uniform")
    for name in ("uniform", "batches", "hot_destination", "hot_source"):
        target = TARGETS[name]
        result = scenarios.get(name)
        row: dict[str, Any] = {"target": name, "wanted": target.text, "value": None, "met": None}
        if result is None:
            row["note"] = "not run"
        elif not result.available:
            row["note"] = result.note
        elif result.errors:
            row["note"] = "errors: no figure"
        else:
            reference = (
                ceiling.per_second
                if target.relative_to == "ceiling" and ceiling
                else uniform.settled_per_second
                if uniform and not uniform.errors
                else 0.0
            )
            if reference:
                ratio = result.settled_per_second / reference
                row.update(value=round(ratio, 3), met=ratio >= (target.minimum_ratio or 0))
        rows.append(row)
    for name, values in (
        ("submit_to_terminal_p99", latency.submit_to_terminal if latency else []),
        ("commit_to_webhook_p99", latency.commit_to_webhook if latency else []),
    ):
        target = TARGETS[name]
        row = {"target": name, "wanted": target.text, "value": None, "met": None}
        if values:
            p99 = 1000 * percentile(values, 0.99)
            row.update(value=round(p99, 1), met=p99 <= (target.maximum_ms or 0))
            if not latency_judged:
                row.update(met=None, note="not judged: rate set by --latency-rate")
        else:
            row["note"] = "not run" if latency is None else "no samples"
        rows.append(row)
    return rows


def _met(value: bool | None) -> str:
    return {True: "[green]met[/]", False: "[red]not met[/]", None: "[yellow]—[/]"}[value]


def print_report(console: Console, results: dict[str, Any]) -> None:
    ceiling = results.get("ceiling") or {}
    ceiling_rate = ceiling.get("transfers_per_second") or 0.0
    if results["scenarios"] or ceiling:
        _throughput_table(console, results, ceiling, ceiling_rate)
    _latency_and_resources(console, results)


def _throughput_table(
    console: Console, results: dict[str, Any], ceiling: dict[str, Any], ceiling_rate: float
) -> None:
    table = Table(title="Settled transfers/s, HTTP submit → terminal in PostgreSQL")
    for column in ("scenario", "transfers", "settled/s", "x ceiling", "accepted/s", "target", ""):
        table.add_column(column, justify="left" if column in ("scenario", "target") else "right")
    if ceiling:
        table.add_row(
            "direct-SQL ceiling", str(ceiling["transfers"]), f"{ceiling_rate:.1f}", "1.00"
        )
    targets = {row["target"]: row for row in results["targets"]}
    unavailable: list[str] = []
    for name, scenario in results["scenarios"].items():
        row = targets.get(name, {})
        if not scenario["available"]:
            table.add_row(scenario["title"], "—", "—", "—", "—", row.get("wanted", ""), "n/a")
            unavailable.append(f"{scenario['title']}: {scenario['note']}")
            continue
        rate = scenario["settled_per_second"]
        ratio = f"{rate / ceiling_rate:.2f}" if ceiling_rate and rate else "—"
        shown = row.get("wanted", "")
        if row.get("value") is not None and "uniform" in shown:
            shown = f"{shown} (is {row['value']:.2f}x)"
        table.add_row(
            scenario["title"],
            str(scenario["transfers"]),
            f"{rate:.1f}" if rate else "—",
            ratio,
            f"{scenario['accepted_per_second']:.1f}",
            shown,
            _met(row.get("met")) if row else "",
        )
    console.print(table)
    if ceiling:
        console.print(
            f"  ceiling: {ceiling['connections']} connections, one stored-procedure call per "
            f"transfer, {ceiling['seconds']:.1f} s on Settle's schema with its triggers"
        )
    for line in unavailable:
        console.print(f"  [yellow]{line}[/]")


def _stages(console: Console, stages: dict[str, dict[str, Any]]) -> None:
    """Where submit -> terminal went (each stage's own percentiles: they do not add up)."""
    if not any(stage["samples"] for stage in stages.values()):
        return
    table = Table(title="Submit → terminal, stage by stage (percentiles of each stage)")
    for column in ("stage", "p50 ms", "p95 ms", "p99 ms", "what it holds"):
        numeric = column.endswith(" ms")
        table.add_column(column, justify="right" if numeric else "left")
    for name, stage in stages.items():
        table.add_row(
            name.replace("_", " "),
            *(_ms(stage[k]) for k in ("p50_ms", "p95_ms", "p99_ms")),
            stage["what"],
        )
    console.print(table)


def _cpu_table(console: Console, cpu: dict[str, Any], scenario: str) -> None:
    """CPU by component over one scenario, and per transfer it settled (older result
    files have no per-transfer column)."""
    table = Table(
        title=f"Where the CPU went during {scenario} ({cpu['cores']} cores; "
        f"100 % = one core; machine busy {cpu['machine_busy_percent']:.0f} %)"
    )
    table.add_column("component")
    table.add_column("processes", justify="right")
    table.add_column("CPU %", justify="right")
    table.add_column("ms per transfer", justify="right")
    for name, figures in sorted(
        cpu["by_component"].items(), key=lambda item: -item[1]["cpu_percent"]
    ):
        per_transfer = figures.get("ms_per_transfer")
        table.add_row(
            name,
            str(figures["processes"] or ""),
            f"{figures['cpu_percent']:.1f}",
            "—" if per_transfer is None else f"{per_transfer:.2f}",
        )
    console.print(table)


def _latency_and_resources(console: Console, results: dict[str, Any]) -> None:
    targets = {row["target"]: row for row in results["targets"]}
    latency = results.get("latency")
    if latency:
        latency_only = results.get("mode") == "latency"
        why = "set by --latency-rate" if latency_only else "half the uniform rate"
        lat = Table(title=f"Latency at {latency['rate']:.1f} transfers/s ({why})")
        for column in ("measure", "samples", "p50 ms", "p95 ms", "p99 ms", "max ms", "target", ""):
            lat.add_column(column, justify="left" if column in ("measure", "target") else "right")
        for key, label in (
            ("submit_to_terminal", "submit → terminal"),
            ("commit_to_webhook", "commit → webhook"),
        ):
            s = latency[key]
            row = targets[f"{key}_p99"]
            lat.add_row(
                label,
                str(s["samples"]),
                *(_ms(s[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")),
                row["wanted"],
                _met(row["met"]),
            )
        console.print(lat)
        _stages(console, latency.get("stages", {}))

    for key, scenario in (("cpu_uniform", "the uniform scenario"), ("cpu_latency", "latency")):
        if results.get(key):
            _cpu_table(console, results[key], scenario)

    soak = results.get("soak")
    if soak:
        _soak(console, soak)

    for note in results.get("notes", []):
        console.print(f"[dim]• {note}[/]")
    for error in results.get("errors", []):
        console.print(f"[red]ERROR[/] {error}")


# The soak's criteria (the resilience issue): memory and connections must not grow.
SOAK_RSS_GROWTH_PERCENT = 10.0


def soak_verdicts(soak: dict[str, Any]) -> list[dict[str, Any]]:
    """Each criterion of a soak, met or not: no error, every process's RSS within
    SOAK_RSS_GROWTH_PERCENT between the two samples, and the long-running processes'
    connections flat: no more at the end than the most seen in the first half (pools
    fill up early; a leak keeps growing). One-off commands' sessions are not judged."""
    grown = {
        name: row["growth_percent"]
        for name, row in soak["rss_mib"].items()
        if row["growth_percent"] >= SOAK_RSS_GROWTH_PERCENT
    }
    judged = ("postgres: gateway, workers and beat", "redis: all of Settle")
    more = {
        name: row[soak["labels"][1]] - row.get("first_half_max", row[soak["labels"][0]])
        for name, row in soak["connections"].items()
        if name in judged
        and row[soak["labels"][1]] > row.get("first_half_max", row[soak["labels"][0]])
    }
    return [
        {
            "criterion": "errors",
            "wanted": "0",
            "met": soak["errors"] == 0,
            "detail": str(soak["errors"]),
        },
        {
            "criterion": "RSS growth per process",
            "wanted": f"< {SOAK_RSS_GROWTH_PERCENT:g} %",
            "met": not grown,
            "detail": ", ".join(f"{n} {g:+.1f} %" for n, g in grown.items()) or "all within",
        },
        {
            "criterion": "connections",
            "wanted": "flat",
            "met": not more,
            "detail": ", ".join(f"{n} {c:+d}" for n, c in more.items()) or "none grew",
        },
    ]


def _soak(console: Console, soak: dict[str, Any]) -> None:
    memory = Table(title=f"RSS per process (MiB), soak at {soak['rate']:.1f} transfers/s")
    for column in ("process", *soak["labels"], "growth %"):
        memory.add_column(column, justify="left" if column == "process" else "right")
    for name, row in soak["rss_mib"].items():
        values = [f"{row.get(label, math.nan):.1f}" for label in soak["labels"]]
        memory.add_row(name, *values, f"{row['growth_percent']:+.1f}")
    console.print(memory)
    links = Table(title="Connections (PostgreSQL sessions by application_name, Redis clients)")
    for column in ("connections", *soak["labels"], "change", "most in 1st half"):
        links.add_column(column, justify="left" if column == "connections" else "right")
    for name, row in soak.get("connections", {}).items():
        links.add_row(
            name,
            *(str(row[label]) for label in soak["labels"]),
            f"{row['change']:+d}",
            str(row.get("first_half_max", "")),
        )
    console.print(links)
    verdicts = Table(
        title=f"Soak: {soak['transfers']} transfers in {soak['minutes']:g} min "
        f"({', '.join(f'{n} {s}' for s, n in sorted(soak.get('statuses', {}).items()))})"
    )
    for column in ("criterion", "wanted", "measured", ""):
        verdicts.add_column(column)
    for verdict in soak.get("verdicts", []):
        verdicts.add_row(
            verdict["criterion"], verdict["wanted"], verdict["detail"], _met(verdict["met"])
        )
    console.print(verdicts)


def environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform()}


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
