"""
Prometheus metrics, read from the catalog at scrape time so they survive restarts.

A scrape costs a constant number of queries (the fleet view of ``service.health``,
shared with the health routes and cached for a second), whatever the fleet's size.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from safehold.service.context import ServiceContext
from safehold.service.health import FleetHealth, FleetView

__all__ = ["CatalogCollector", "Rendering"]

log = logging.getLogger("safehold.metrics")


class CatalogCollector(Collector):
    """Exposes safehold's backup metrics."""

    def __init__(self, ctx: ServiceContext, fleet: FleetView) -> None:
        self._ctx = ctx
        self._fleet = fleet

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | SummaryMetricFamily]:
        """Yield the metric families."""
        view = self._fleet.get(self._ctx)
        outcomes = CounterMetricFamily(
            "safehold_backups",
            "Finished backup jobs by outcome (within the job retention window).",
            labels=["outcome"],
        )
        for outcome in ("Success", "Failure", "Timeout"):
            outcomes.add_metric([outcome], view.outcomes.get(outcome, (0, 0.0))[0])
        yield outcomes
        yield SummaryMetricFamily(
            "safehold_backup_duration_seconds",
            "How long finished backup jobs ran.",
            count_value=sum(n for n, _ in view.outcomes.values()),
            sum_value=sum(total for _, total in view.outcomes.values()),
        )
        yield GaugeMetricFamily(
            "safehold_backup_bytes",
            "Logical bytes held by the catalogued backups.",
            value=view.backup_bytes,
        )
        states = GaugeMetricFamily(
            "safehold_partitions", "Registered partitions by backup health.", labels=["health"]
        )
        for state, n in sorted(view.counts().items()):
            states.add_metric([state], n)
        yield states
        ages = GaugeMetricFamily(
            "safehold_last_good_backup_age_seconds",
            "Seconds since each partition's newest successful backup.",
            labels=["partition_id"],
        )
        for h in view.partitions:
            if h.last_good is not None:
                ages.add_metric([h.partition_id], (view.at - h.last_good).total_seconds())
        yield ages
        yield from _drill_metrics(view)


def _drill_metrics(view: FleetHealth) -> Iterator[GaugeMetricFamily]:
    """Per partition: the newest drill's time and outcome, measured RTO, achieved RPO."""
    label = ["partition_id"]
    last = GaugeMetricFamily(
        "safehold_drill_last_timestamp_seconds",
        "When the newest drill ended (Unix time).",
        labels=label,
    )
    ok = GaugeMetricFamily(
        "safehold_drill_last_success", "1 if the newest drill passed, else 0.", labels=label
    )
    good = GaugeMetricFamily(
        "safehold_drill_last_success_timestamp_seconds",
        "When the newest successful drill ended (Unix time).",
        labels=label,
    )
    rto = GaugeMetricFamily(
        "safehold_drill_rto_seconds", "Measured RTO of the newest successful drill.", labels=label
    )
    rpo = GaugeMetricFamily(
        "safehold_drill_rpo_seconds", "Achieved RPO of the newest drill.", labels=label
    )
    for pid, st in sorted(view.drills.items()):
        if st.last_finished_at is not None:
            last.add_metric([pid], st.last_finished_at.timestamp())
            ok.add_metric([pid], 1.0 if st.last_state == "Success" else 0.0)
        if st.last_success_at is not None:
            good.add_metric([pid], st.last_success_at.timestamp())
        if st.rto_seconds is not None:
            rto.add_metric([pid], st.rto_seconds)
        if st.rpo_seconds is not None:
            rpo.add_metric([pid], st.rpo_seconds)
    yield from (last, ok, good, rto, rpo)


class Rendering:
    """
    The ``/metrics`` page, rendered by one thread at a time and served to every scrape.

    A rendering younger than *ttl* seconds (or, with *cpu_share*, that share's
    inverse times the CPU its rendering took) is served as it is; an older one is
    still served at once while a background thread renders the next. Only the
    first scrape waits for a rendering. The API paces by *ttl* alone: counters and
    histograms (the scheduler's ticks) must not lag by more than a second or so.
    """

    def __init__(
        self, render: Callable[[], bytes], *, ttl: float = 1.0, cpu_share: float | None = None
    ) -> None:
        self._render, self._ttl, self._share = render, ttl, cpu_share
        self._lock = threading.Lock()
        self._busy = False
        self._page: tuple[float, float, bytes] | None = None  # (when, CPU seconds, page)

    def get(self) -> bytes:
        """The newest page (rendering the first one in this call)."""
        with self._lock:
            page = self._page
            stale = page is None or time.monotonic() - page[0] >= self._max_age(page[1])
            start = stale and page is not None and not self._busy
            self._busy = self._busy or start
        if page is None:
            return self._refresh()
        if start:
            threading.Thread(
                target=self._refresh_quietly, name="metrics-render", daemon=True
            ).start()
        return page[2]

    def _max_age(self, cost: float) -> float:
        return self._ttl if self._share is None else max(self._ttl, cost / self._share)

    def _refresh_quietly(self) -> None:
        # In the background: a failure is logged, and a later scrape tries again.
        try:
            self._refresh()
        except Exception:
            log.exception("rendering /metrics failed")

    def _refresh(self) -> bytes:
        try:
            cpu = time.thread_time()
            text = self._render()
            with self._lock:
                self._page = (time.monotonic(), time.thread_time() - cpu, text)
            return text
        finally:
            with self._lock:
                self._busy = False
