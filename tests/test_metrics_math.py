"""The numbers behind the metrics: histogram buckets, percentiles, merging, the collector, and
how the aggregator sums writers, computes calls per second and follows restarts."""

from __future__ import annotations

import math
import random
import threading
from typing import Any

import pytest

import srpc_core.metrics
from srpc_core.metrics import (
    BUCKETS_PER_OCTAVE,
    LATENCY_FIELDS,
    MAX_BUCKET,
    MAX_ERROR_TYPES,
    OTHER_ERRORS,
    UNKNOWN_PROCEDURE,
    Collector,
    Histogram,
    MetricsAggregator,
    ProcedureStats,
    WriterInfo,
    bucket_bounds,
    bucket_of,
    bucket_value,
    latency_summary,
    stats_record,
    stop_record,
    writer_record,
)

#: The promised bound: the middle of a bucket is this close to any value in it.
MAX_RELATIVE_ERROR = 2 ** (0.5 / BUCKETS_PER_OCTAVE) - 1
QUANTILES = (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)


def exact_percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile, the definition `Histogram.percentile` estimates."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered) - 1e-9))
    return ordered[rank - 1]


def histogram_of(values: list[float]) -> Histogram:
    histogram = Histogram()
    for value in values:
        histogram.record(value)
    return histogram


def log_uniform(rng: random.Random, n: int, low: float = 1e-6, high: float = 2.0) -> list[float]:
    return [math.exp(rng.uniform(math.log(low), math.log(high))) for _ in range(n)]


# -- buckets -----------------------------------------------------------------------------------


def test_relative_error_bound_is_about_one_percent() -> None:
    assert 0.010 < MAX_RELATIVE_ERROR < 0.011


@pytest.mark.parametrize("index", [0, 1, 500, 959, 960, 961, 1200, MAX_BUCKET])
def test_a_bucket_contains_its_value_and_its_bounds_map_back(index: int) -> None:
    low, high = bucket_bounds(index)
    assert low < bucket_value(index) < high
    assert high / low == pytest.approx(2 ** (1 / BUCKETS_PER_OCTAVE))
    assert bucket_of(bucket_value(index)) == index
    assert bucket_of(low * (1 + 1e-12)) == index
    assert bucket_of(high * (1 - 1e-12)) == index


def test_one_second_starts_a_bucket_and_neighbours_are_ordered() -> None:
    assert bucket_bounds(bucket_of(1.0))[0] == 1.0
    assert bucket_of(1.0) - bucket_of(0.999) == 1
    assert bucket_of(2.0) - bucket_of(1.0) == BUCKETS_PER_OCTAVE


def test_values_outside_the_range_land_in_the_edge_buckets() -> None:
    assert bucket_of(0.0) == 0
    assert bucket_of(-1.0) == 0
    assert bucket_of(1e-12) == 0
    assert bucket_of(1e9) == MAX_BUCKET
    assert bucket_of(math.inf) == MAX_BUCKET


# -- histogram ---------------------------------------------------------------------------------


def test_count_sum_min_max_and_mean_are_exact() -> None:
    values = [0.003, 0.001, 0.002, 0.010]
    histogram = histogram_of(values)
    assert histogram.count == 4
    assert histogram.total == pytest.approx(0.016)
    assert (histogram.min, histogram.max) == (0.001, 0.010)
    assert histogram.mean == pytest.approx(0.004)


def test_percentiles_of_1_to_1000_ms() -> None:
    values = [i / 1000 for i in range(1, 1001)]
    histogram = histogram_of(values)
    for fraction, expected in [(0.5, 0.500), (0.95, 0.950), (0.99, 0.990), (1.0, 1.000)]:
        assert histogram.percentile(fraction) == pytest.approx(expected, rel=MAX_RELATIVE_ERROR)
    # The first and last ranks are the exact minimum and maximum.
    assert (histogram.percentile(0.0), histogram.percentile(0.001)) == (0.001, 0.001)
    assert histogram.percentile(1.0) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_percentiles_of_random_data_are_within_the_bound(seed: int) -> None:
    rng = random.Random(seed)
    values = log_uniform(rng, 5000)
    histogram = histogram_of(values)
    for fraction in QUANTILES:
        exact = exact_percentile(values, fraction)
        estimate = histogram.percentile(fraction)
        assert estimate == pytest.approx(exact, rel=MAX_RELATIVE_ERROR), fraction


def test_percentiles_of_a_bimodal_distribution_find_the_tail() -> None:
    values = [0.001] * 980 + [0.5] * 20
    histogram = histogram_of(values)
    for fraction in (0.5, 0.95, 0.98):
        assert histogram.percentile(fraction) == pytest.approx(0.001, rel=MAX_RELATIVE_ERROR)
    assert histogram.percentile(0.99) == pytest.approx(0.5, rel=MAX_RELATIVE_ERROR)
    assert histogram.percentile(1.0) == 0.5


def test_a_single_value_is_every_percentile_exactly() -> None:
    histogram = histogram_of([0.0123])
    assert {histogram.percentile(q) for q in QUANTILES} == {0.0123}


def test_identical_values_give_that_value_not_the_bucket_middle() -> None:
    histogram = histogram_of([0.0, 0.0, 0.0])
    assert histogram.percentile(0.5) == 0.0
    histogram = histogram_of([0.0123] * 10)
    assert histogram.percentile(0.5) == pytest.approx(0.0123, rel=1e-12)
    histogram = histogram_of([0.0, 0.0, 0.0])
    assert histogram.percentile(0.5) == 0.0
    assert histogram.mean == 0.0


def test_empty_histogram_has_no_percentiles() -> None:
    histogram = Histogram()
    assert histogram.percentile(0.5) is None
    assert histogram.mean is None
    assert histogram.to_json() == {"start": 0, "counts": []}


def test_latency_summary_is_exact_at_the_ends_and_nearest_rank_between() -> None:
    histogram = Histogram()
    for ms in range(1, 1001):
        histogram.record(ms / 1000)
    summary = latency_summary(histogram)
    assert tuple(summary) == LATENCY_FIELDS == ("min", "mean", "p50", "p95", "p99", "max")
    assert (summary["min"], summary["max"]) == (0.001, 1.0)
    assert summary["mean"] == pytest.approx(0.5005)
    for name, fraction in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
        assert summary[name] == histogram.percentile(fraction)


def test_latency_summary_of_no_call_is_all_none() -> None:
    assert latency_summary(Histogram()) == dict.fromkeys(LATENCY_FIELDS)


def test_the_package_exports_what_it_lists() -> None:
    exported = set(srpc_core.metrics.__all__)
    assert len(exported) == len(srpc_core.metrics.__all__)
    assert all(hasattr(srpc_core.metrics, name) for name in exported)
    public = {name for name in vars(srpc_core.metrics) if not name.startswith("_")}
    modules = {"collector", "dashboard", "follower", "histogram", "records", "stats", "view"}
    modules.add("annotations")  # from __future__
    assert public - modules == exported


def test_record_many_equals_recording_one_by_one() -> None:
    values = [*log_uniform(random.Random(7), 3000, low=1e-10, high=1e5), 0.0, 1.0, 2.0]
    one_by_one = histogram_of(values)
    batched = Histogram()
    batched.record_many(values[:1000])
    batched.record_many(values[1000:])
    batched.record_many([])
    assert batched.counts == one_by_one.counts
    assert batched.count == one_by_one.count
    assert (batched.min, batched.max) == (one_by_one.min, one_by_one.max)
    assert batched.total == pytest.approx(one_by_one.total)


def test_merging_parts_equals_the_histogram_of_the_whole() -> None:
    values = log_uniform(random.Random(3), 4000)
    whole = histogram_of(values)
    merged = Histogram()
    for part in (values[:100], values[100:2500], values[2500:]):
        merged.merge(histogram_of(part))
    assert merged.counts == whole.counts
    assert (merged.count, merged.min, merged.max) == (whole.count, whole.min, whole.max)
    for fraction in QUANTILES:
        assert merged.percentile(fraction) == whole.percentile(fraction)


def test_merging_an_empty_histogram_changes_nothing() -> None:
    histogram = histogram_of([0.5, 0.25])
    histogram.merge(Histogram())
    assert (histogram.count, histogram.min, histogram.max) == (2, 0.25, 0.5)


def test_memory_is_bounded_by_the_bucket_range() -> None:
    histogram = Histogram()
    histogram.record_many(log_uniform(random.Random(1), 50_000, low=1e-12, high=1e6))
    assert len(histogram.counts) <= MAX_BUCKET + 1


def test_json_round_trip_keeps_everything() -> None:
    values = log_uniform(random.Random(11), 500)
    histogram = histogram_of(values)
    stats = ProcedureStats(histogram, {"ValueError": 2})
    again = ProcedureStats.from_json(stats.to_json())
    assert again.latency.counts == histogram.counts
    assert (again.ok, again.failed, again.errors) == (500, 2, {"ValueError": 2})
    assert (again.latency.min, again.latency.max) == (histogram.min, histogram.max)
    assert again.latency.total == histogram.total


def test_json_with_mismatched_counts_is_rejected() -> None:
    data = ProcedureStats(histogram_of([0.1, 0.2])).to_json()
    data["ok"] = 3
    with pytest.raises(ValueError):
        ProcedureStats.from_json(data)


# -- procedure stats ---------------------------------------------------------------------------


def test_error_rate_and_top_errors() -> None:
    stats = ProcedureStats(histogram_of([0.1] * 6))
    for name in ["KeyError", "ValueError", "ValueError", "ZeroDivisionError"]:
        stats.record_error(name)
    assert (stats.ok, stats.failed, stats.calls) == (6, 4, 10)
    assert stats.error_rate == 0.4
    assert stats.top_errors(2) == [("ValueError", 2), ("KeyError", 1)]
    assert ProcedureStats().error_rate == 0.0


def test_error_types_are_capped() -> None:
    stats = ProcedureStats()
    for i in range(MAX_ERROR_TYPES + 5):
        stats.record_error(f"Error{i}")
    assert len(stats.errors) == MAX_ERROR_TYPES + 1
    assert stats.errors[OTHER_ERRORS] == 5
    assert stats.failed == MAX_ERROR_TYPES + 5


def test_merging_procedure_stats_adds_errors() -> None:
    first = ProcedureStats(histogram_of([0.1]), {"KeyError": 1})
    second = ProcedureStats(histogram_of([0.3, 0.2]), {"KeyError": 2, "OSError": 1})
    first.merge(second)
    assert first.errors == {"KeyError": 3, "OSError": 1}
    assert (first.ok, first.latency.min, first.latency.max) == (3, 0.1, 0.3)


# -- collector ---------------------------------------------------------------------------------


def test_collector_counts_calls_errors_and_unknown_procedures() -> None:
    collector = Collector(["add", "div"])
    collector.record("add", 0.001)
    collector.record("add", 0.003)
    collector.record("div", 0.002, "ZeroDivisionError")
    collector.record("nope", 0.0001, "UnknownProcedureError")
    collector.record("other", 0.0001, "UnknownProcedureError")
    snapshot = collector.snapshot()
    assert set(snapshot) == {"add", "div", UNKNOWN_PROCEDURE}
    assert (snapshot["add"].ok, snapshot["add"].latency.max) == (2, 0.003)
    assert snapshot["div"].errors == {"ZeroDivisionError": 1}
    assert snapshot["div"].ok == 0
    assert snapshot[UNKNOWN_PROCEDURE].errors == {"UnknownProcedureError": 2}


def test_snapshots_are_cumulative_and_changed_only_lists_what_moved() -> None:
    collector = Collector(["add", "sub"])
    collector.record("add", 0.001)
    collector.record("sub", 0.001)
    assert set(collector.snapshot(changed_only=True)) == {"add", "sub"}
    assert collector.snapshot(changed_only=True) == {}
    collector.record("add", 0.002)
    changed = collector.snapshot(changed_only=True)
    assert set(changed) == {"add"}
    assert changed["add"].ok == 2  # cumulative, not a delta
    assert set(collector.snapshot()) == {"add", "sub"}


def test_a_snapshot_is_a_copy() -> None:
    collector = Collector(["add"])
    collector.record("add", 0.001)
    first = collector.snapshot()["add"]
    collector.record("add", 0.002)
    assert first.ok == 1
    assert collector.snapshot()["add"].ok == 2


def test_collector_loses_nothing_under_concurrent_recording_and_snapshots() -> None:
    collector = Collector(["a", "b"])
    threads_n, calls_n = 8, 5000
    start = threading.Barrier(threads_n + 1)
    done = threading.Event()

    def hammer(worker: int) -> None:
        start.wait()
        for i in range(calls_n):
            if i % 10 == 0:
                collector.record("b", 0.001, "ValueError")
            else:
                collector.record("a" if worker % 2 else "b", 1e-5 * (1 + i % 50))

    def snapshot_repeatedly() -> None:
        start.wait()
        while not done.is_set():
            collector.snapshot(changed_only=True)

    workers = [threading.Thread(target=hammer, args=(n,)) for n in range(threads_n)]
    reader = threading.Thread(target=snapshot_repeatedly)
    for thread in [*workers, reader]:
        thread.start()
    for thread in workers:
        thread.join()
    done.set()
    reader.join()
    final = collector.snapshot()
    assert final["a"].calls + final["b"].calls == threads_n * calls_n
    assert final["b"].errors == {"ValueError": threads_n * calls_n // 10}
    assert final["a"].ok == (threads_n // 2) * calls_n * 9 // 10


# -- aggregator --------------------------------------------------------------------------------

T0 = 1_700_000_000.0


def info(writer: str, started: float, procedures: tuple[str, ...] = ("add", "div")) -> WriterInfo:
    return WriterInfo(
        writer=writer,
        pid=100,
        host="h",
        service="calc.CalcInterface",
        address=f"tcp://127.0.0.1:{5000 + len(writer)}",
        transport="tcp",
        codec="json",
        started=started,
        procedures=procedures,
        flush_interval=1.0,
        heartbeat=5.0,
    )


def stats(ok: int, errors: dict[str, int] | None = None, seconds: float = 0.001) -> ProcedureStats:
    return ProcedureStats(histogram_of([seconds] * ok), dict(errors or {}))


class Log:
    """Builds the records one writer would write."""

    def __init__(self, writer: str, started: float) -> None:
        self.info = info(writer, started)
        self.seq = 0
        self.records: list[dict[str, Any]] = [writer_record(self.info, self._seq(), started)]

    def _seq(self) -> int:
        self.seq += 1
        return self.seq - 1

    def stats(self, at: float, **procedures: ProcedureStats) -> Log:
        self.records.append(stats_record(self.info.writer, self._seq(), at, procedures, False))
        return self

    def stop(self, at: float) -> Log:
        self.records.append(stop_record(self.info.writer, self._seq(), at))
        return self


def test_two_writers_are_summed() -> None:
    first = Log("aaa", T0).stats(T0 + 1, add=stats(10), div=stats(1, {"ZeroDivisionError": 2}))
    second = Log("bbb", T0 + 0.5).stats(T0 + 1.5, add=stats(5, seconds=0.1))
    aggregator = MetricsAggregator()
    aggregator.feed(first.records + second.records)
    view = aggregator.view(now=T0 + 2)
    assert [server.writer for server in view.servers] == ["aaa", "bbb"]
    rows = {row.name: row for row in view.procedures}
    assert list(rows) == ["add", "div"]
    assert rows["add"].stats.ok == 15
    assert rows["add"].stats.latency.max == 0.1
    assert rows["div"].stats.errors == {"ZeroDivisionError": 2}
    assert view.total.stats.calls == 18


def test_later_records_replace_earlier_ones_because_they_are_cumulative() -> None:
    log = Log("aaa", T0).stats(T0 + 1, add=stats(10)).stats(T0 + 2, add=stats(25))
    aggregator = MetricsAggregator()
    aggregator.feed(log.records)
    assert aggregator.view(now=T0 + 3).procedures[0].stats.ok == 25


def test_calls_per_second_over_the_window() -> None:
    log = Log("aaa", T0 - 100).stats(T0, add=stats(1000))
    for second in range(1, 11):
        log.stats(T0 + second, add=stats(1000 + 50 * second))  # 50 calls/s
    aggregator = MetricsAggregator(window=5.0)
    aggregator.feed(log.records)
    assert aggregator.view(now=T0 + 10).procedures[0].calls_per_second == pytest.approx(50)
    # Nothing new for longer than the window: the rate falls to zero.
    assert aggregator.view(now=T0 + 16).procedures[0].calls_per_second == 0


def test_calls_per_second_of_a_server_younger_than_the_window() -> None:
    log = Log("aaa", T0).stats(T0 + 1, add=stats(100)).stats(T0 + 2, add=stats(200))
    aggregator = MetricsAggregator(window=10.0)
    aggregator.feed(log.records)
    view = aggregator.view(now=T0 + 2)
    assert view.procedures[0].calls_per_second == pytest.approx(100)
    assert view.total.calls_per_second == pytest.approx(100)


def test_calls_per_second_of_two_writers_add_up() -> None:
    first = Log("aaa", T0 - 60).stats(T0, add=stats(0)).stats(T0 + 10, add=stats(100))
    second = Log("bbb", T0 - 60).stats(T0, add=stats(0)).stats(T0 + 10, add=stats(300))
    aggregator = MetricsAggregator(window=10.0)
    aggregator.feed(first.records + second.records)
    assert aggregator.view(now=T0 + 10).procedures[0].calls_per_second == pytest.approx(40)


def test_a_restarted_server_replaces_the_stopped_one() -> None:
    old = Log("old", T0).stats(T0 + 5, add=stats(500)).stop(T0 + 6)
    new = Log("new", T0 + 7).stats(T0 + 8, add=stats(3))
    aggregator = MetricsAggregator()
    aggregator.feed(old.records + new.records)
    view = aggregator.view(now=T0 + 9)
    assert [server.writer for server in view.servers] == ["new"]
    assert view.procedures[0].stats.ok == 3
    assert view.servers[0].state == "live"
    assert view.servers[0].uptime == pytest.approx(2)


def test_when_every_server_stopped_the_last_run_stays_in_view() -> None:
    old = Log("old", T0).stats(T0 + 5, add=stats(500)).stop(T0 + 6)
    last = Log("last", T0 + 7).stats(T0 + 8, add=stats(3)).stop(T0 + 9)
    aggregator = MetricsAggregator()
    aggregator.feed(old.records + last.records)
    view = aggregator.view(now=T0 + 1000)
    assert [(s.writer, s.state) for s in view.servers] == [("last", "stopped")]
    assert view.servers[0].uptime == pytest.approx(2)
    assert view.procedures[0].stats.ok == 3


def test_a_server_still_running_when_another_starts_stays_in_view() -> None:
    first = Log("first", T0).stats(T0 + 5, add=stats(5)).stats(T0 + 12, add=stats(6)).stop(T0 + 13)
    second = Log("second", T0 + 10).stats(T0 + 11, add=stats(1))
    aggregator = MetricsAggregator()
    aggregator.feed(first.records + second.records)
    view = aggregator.view(now=T0 + 14)
    assert [s.writer for s in view.servers] == ["first", "second"]
    assert view.procedures[0].stats.ok == 7


def test_a_killed_server_drops_out_once_silent() -> None:
    killed = Log("killed", T0).stats(T0 + 1, add=stats(50))  # no stop record: SIGKILL
    new = Log("new", T0 + 2).stats(T0 + 3, add=stats(1))
    aggregator = MetricsAggregator()
    aggregator.feed(killed.records + new.records)
    # While it could still be alive (idle between heartbeats) it counts ...
    assert {s.writer for s in aggregator.view(now=T0 + 4).servers} == {"killed", "new"}
    # ... and once silent for longer than its heartbeat allows, it does not.
    new.stats(T0 + 30, add=stats(2))
    aggregator.feed(new.records[-1:])
    view = aggregator.view(now=T0 + 30)
    assert [s.writer for s in view.servers] == ["new"]
    assert view.procedures[0].stats.ok == 2


def test_a_writer_first_seen_mid_log_still_counts() -> None:
    log = Log("aaa", T0).stats(T0 + 100, add=stats(40)).stats(T0 + 101, add=stats(45))
    aggregator = MetricsAggregator(window=5.0)
    aggregator.feed(log.records[1:])  # its writer record was rotated away
    view = aggregator.view(now=T0 + 101)
    assert view.procedures[0].stats.ok == 45
    assert view.servers[0].address == "?"
    assert view.procedures[0].calls_per_second == pytest.approx(1.0)  # 5 calls in the window


def test_malformed_records_are_ignored_and_counted() -> None:
    aggregator = MetricsAggregator()
    good = Log("aaa", T0).stats(T0 + 1, add=stats(2)).records
    bad: list[dict[str, Any]] = [
        {"v": 1, "type": "stats", "time": T0, "writer": "aaa", "procedures": {"add": {"ok": 1}}},
        {"v": 1, "type": "writer", "time": T0, "writer": "x"},
        {"v": 1, "type": "future-kind", "time": T0, "writer": "y"},
    ]
    aggregator.feed(bad + good)
    assert aggregator.ignored == 2
    assert aggregator.view(now=T0 + 2).procedures[0].stats.ok == 2


def test_procedure_order_follows_the_interface_and_unknown_comes_last() -> None:
    log = Log("aaa", T0).stats(
        T0 + 1, **{UNKNOWN_PROCEDURE: stats(0, {"UnknownProcedureError": 1}), "div": stats(1)}
    )
    aggregator = MetricsAggregator()
    aggregator.feed(log.records)
    names = [row.name for row in aggregator.view(now=T0 + 2).procedures]
    assert names == ["add", "div", UNKNOWN_PROCEDURE]


def test_view_as_json() -> None:
    log = Log("aaa", T0).stats(T0 + 1, add=stats(4, {"KeyError": 1}, seconds=0.002))
    aggregator = MetricsAggregator()
    aggregator.feed(log.records)
    document = aggregator.view(now=T0 + 2).to_json()
    add = document["procedures"][0]
    assert (add["name"], add["ok"], add["failed"], add["error_rate"]) == ("add", 4, 1, 0.2)
    assert add["errors"] == {"KeyError": 1}
    assert add["latency"] == {k: 0.002 for k in ("min", "mean", "p50", "p95", "p99", "max")}
    assert document["procedures"][1]["latency"]["p99"] is None
    assert document["servers"][0]["state"] == "live"
    assert document["total"]["ok"] == 4
