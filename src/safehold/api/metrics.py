"""Prometheus metrics, read from the catalog at scrape time so they survive restarts."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from safehold.service.context import ServiceContext
from safehold.service.health import metrics_snapshot

__all__ = ["CatalogCollector"]


class CatalogCollector(Collector):
    """Exposes safehold's backup metrics."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | SummaryMetricFamily]:
        """Yield the metric families."""
        snap = metrics_snapshot(self._ctx)
        outcomes = CounterMetricFamily(
            "safehold_backups", "Finished backup jobs by outcome.", labels=["outcome"]
        )
        for outcome in ("Success", "Failure", "Timeout"):
            outcomes.add_metric([outcome], snap["outcomes"].get(outcome, 0))
        yield outcomes
        durations = snap["durations"]
        yield SummaryMetricFamily(
            "safehold_backup_duration_seconds",
            "How long finished backup jobs ran.",
            count_value=len(durations),
            sum_value=sum(durations),
        )
        yield GaugeMetricFamily(
            "safehold_backup_bytes",
            "Logical bytes held by the catalogued backups.",
            value=snap["bytes"],
        )
        ages = GaugeMetricFamily(
            "safehold_last_good_backup_age_seconds",
            "Seconds since each partition's newest successful backup.",
            labels=["partition_id"],
        )
        for pid, age in sorted(snap["ages"].items()):
            ages.add_metric([pid], age)
        yield ages
