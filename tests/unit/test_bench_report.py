"""The bench's arithmetic: percentiles, targets and the rate curve (no services)."""

from __future__ import annotations

from bench.ceiling import CeilingResult
from bench.plot import _rates
from bench.report import judge, latency_summary, percentile, soak_verdicts
from bench.scenarios import LatencyResult, ScenarioResult


def _scenario(name, accepted, seconds, **kwargs):
    return ScenarioResult(name, name, accepted=accepted, seconds=seconds, **kwargs)


def test_percentiles_are_nearest_rank():
    values = [i / 1000 for i in range(1, 101)]  # 1 ms .. 100 ms
    assert percentile(values, 0.5) == 0.05
    assert percentile(values, 0.99) == 0.099
    assert latency_summary(values)["p99_ms"] == 99.0
    assert latency_summary([])["p99_ms"] is None


def test_targets_compare_with_the_ceiling_or_the_uniform_figure():
    scenarios = {
        "uniform": _scenario("uniform", 600, 1.0),  # 600/s
        "hot_destination": _scenario("hot_destination", 200, 1.0),  # 1/3 of uniform
        "hot_source": _scenario("hot_source", 400, 1.0),
        "batches": ScenarioResult("batches", "batches", available=False, note="n/a here"),
    }
    latency = LatencyResult(rate=300, seconds=1, submit_to_terminal=[0.05] * 99 + [0.2])
    rows = {r["target"]: r for r in judge(scenarios, CeilingResult(1000, 1.0, 4), latency)}
    assert rows["uniform"]["value"] == 0.6 and rows["uniform"]["met"] is True
    assert rows["hot_destination"]["met"] is False
    assert rows["hot_source"]["met"] is True
    assert rows["batches"]["met"] is None and rows["batches"]["note"] == "n/a here"
    assert rows["submit_to_terminal_p99"]["met"] is True  # the 100th sample is p100
    assert rows["commit_to_webhook_p99"]["met"] is None


def test_a_scenario_with_errors_has_no_figure():
    broken = _scenario("uniform", 600, 1.0, errors=["boom"])
    assert broken.settled_per_second == 0.0
    rows = {r["target"]: r for r in judge({"uniform": broken}, CeilingResult(10, 1.0, 4), None)}
    assert rows["uniform"]["met"] is None


def test_rate_curve_from_cumulative_samples():
    timeline = [[0.0, 0], [0.5, 50], [1.0, 100], [1.5, 150], [2.0, 200]]
    times, rates = _rates(timeline)
    assert times[-1] == 2.0
    assert all(abs(rate - 100) < 1e-9 for rate in rates)


def _soak(errors=0, growth=(1.0, 4.2), connections=(0, 0)):
    labels = ["after 1 min", "after 10 min"]
    return {
        "errors": errors,
        "labels": labels,
        "rss_mib": {
            "web child 1": {
                labels[0]: 100,
                labels[1]: 100 + growth[0],
                "growth_percent": growth[0],
            },
            "worker child 2": {labels[0]: 98, labels[1]: 120, "growth_percent": growth[1]},
        },
        "connections": {
            "postgres: gateway, workers and beat": {
                labels[0]: 4,
                labels[1]: 4 + connections[0],
                "change": connections[0],
                "first_half_max": 5,
            },
            "redis: all of Settle": {
                labels[0]: 9,
                labels[1]: 9 + connections[1],
                "change": connections[1],
                "first_half_max": 9,
            },
            "postgres: settle-verify": {labels[0]: 0, labels[1]: 1, "change": 1},
        },
    }


def test_a_soak_passes_when_nothing_grows_and_nothing_failed():
    assert all(v["met"] for v in soak_verdicts(_soak()))


def test_a_soak_fails_on_an_error_ten_percent_of_rss_or_one_more_connection():
    errors, rss, links = soak_verdicts(_soak(errors=1, growth=(1.0, 10.0), connections=(2, -2)))
    assert not errors["met"]
    assert not rss["met"] and "worker child 2 +10.0 %" in rss["detail"]
    # 6 at the end against at most 5 in the first half; a one-off command is not judged.
    assert not links["met"] and links["detail"] == "postgres: gateway, workers and beat +1"


def test_connections_that_filled_a_pool_early_are_flat():
    # 5 at the end (4 after 1 minute, 5 seen in the first half): the pool filled early.
    assert soak_verdicts(_soak(connections=(1, 0)))[2]["met"]


def test_latency_splits_into_stages_that_add_up_per_transfer():
    from bench.scenarios import STAGES, stage_durations

    submitted = {"a": 100.000, "b": 100.010, "c": 100.020}
    terminal = {"a": 100.050, "b": 100.090}  # c never seen terminal: left out
    times = {"a": (100.004, 100.030), "b": (100.012, 100.070), "c": (100.021, 100.040)}
    stages = stage_durations(submitted, terminal, times)
    assert set(stages) == set(STAGES)
    assert [round(v, 3) for v in stages["submit_to_accepted"]] == [0.002, 0.004]
    assert [round(v, 3) for v in stages["accepted_to_applied"]] == [0.026, 0.058]
    assert [round(v, 3) for v in stages["applied_to_seen"]] == [0.02, 0.02]
    # Per transfer, the stages add up to submit -> terminal.
    assert round(0.004 + 0.026 + 0.020, 3) == round(terminal["a"] - submitted["a"], 3)


def test_the_report_prints_the_stages():
    from rich.console import Console

    from bench import report
    from bench.scenarios import STAGES

    console = Console(record=True, width=200)
    stages = {
        name: {**latency_summary([0.001 * (i + 1)] * 10), "what": what}
        for i, (name, what) in enumerate(STAGES.items())
    }
    report._stages(console, stages)
    text = console.export_text()
    assert "submit to accepted" in text and "accepted to applied" in text
    assert "3.0" in text  # applied_to_seen's p50, in ms


def test_a_latency_run_at_a_chosen_rate_is_shown_but_not_judged():
    latency = LatencyResult(
        rate=150, seconds=1, submit_to_terminal=[0.05] * 98 + [0.5] * 2, commit_to_webhook=[0.1]
    )
    rows = {r["target"]: r for r in judge({}, None, latency, latency_judged=False)}
    assert rows["submit_to_terminal_p99"]["value"] == 500.0
    assert rows["submit_to_terminal_p99"]["met"] is None
    assert "--latency-rate" in rows["submit_to_terminal_p99"]["note"]
    assert rows["uniform"]["note"] == "not run"
    judged = {r["target"]: r for r in judge({}, None, latency)}
    assert judged["submit_to_terminal_p99"]["met"] is False


def test_latency_rate_is_a_mode_of_its_own():
    import pytest

    from bench.cli import build_parser

    assert build_parser().parse_args(["--latency-rate", "150"]).latency_rate == 150.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--latency-rate", "150", "--soak"])


def test_cpu_per_transfer_is_the_component_share_of_the_window():
    from rich.console import Console

    from bench import report
    from bench.resources import CpuWindow

    window = CpuWindow.__new__(CpuWindow)  # no stack: only the arithmetic is under test
    window.cores, window.seconds, window.machine_busy_percent = 2, 20.0, 150.0
    window.by_component = {
        "gateway": {"processes": 2, "cpu_percent": 40.0},  # 8 s of CPU
        "idle thing": {"processes": 1, "cpu_percent": 0.0},
    }
    cpu = window.as_dict(4000)
    assert cpu["by_component"]["gateway"]["ms_per_transfer"] == 2.0
    assert cpu["by_component"]["idle thing"]["ms_per_transfer"] == 0.0
    assert window.as_dict(0)["by_component"]["gateway"]["ms_per_transfer"] is None

    console = Console(record=True, width=200)
    report._cpu_table(console, cpu, "latency")
    text = console.export_text()
    assert "during latency" in text and "2.00" in text


def test_the_soak_groups_redis_clients_by_role():
    from bench.resources import client_role

    assert client_role("settle-gateway-1234") == "settle-gateway"
    assert client_role("settle-celery") == "settle-celery"
    assert client_role("") == "unnamed"
