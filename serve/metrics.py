"""The service's Prometheus metrics (prometheus-client), served by the ingress at ``/metrics``.

Each ingress replica keeps its own registry (scrape every replica, as Prometheus does with
pod discovery). Ray Serve's own metrics (``ray_serve_*``: replica queue lengths, request
latency per deployment, ``@serve.batch`` batch sizes and wait times) are exported beside
these by Ray's metrics agent on each node's metrics export port.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Mapping, Sequence

#: Latency buckets in seconds: a cached CPU query takes milliseconds, an enrollment of 50
#: images on a loaded CPU several seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServiceMetrics:
    """The metric families, in a registry of their own (two apps in one process do not clash)."""

    def __init__(self, window_s: float = 300.0) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "synthray_http_requests",
            "HTTP requests by endpoint, method and status.",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.errors = Counter(
            "synthray_http_errors",
            "Refused or failed requests by endpoint and error kind.",
            ["endpoint", "kind"],
            registry=r,
        )
        self.latency = Histogram(
            "synthray_http_request_duration_seconds",
            "Request latency by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.images = Counter(
            "synthray_images",
            "Images received, by endpoint and validation outcome.",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.attributions = Counter(
            "synthray_attributions", "Attributed images by predicted label.", ["label"], registry=r
        )
        self.explanations = Counter(
            "synthray_explanations", "Explained images, by the kinds asked for.", ["kinds"], registry=r
        )
        self.batch_size = Histogram(
            "synthray_encoder_batch_size",
            "Size of the encoder batch each image was embedded in.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.index_size = Gauge(
            "synthray_index_references",
            "References in the index per generator and origin.",
            ["generator", "origin"],
            registry=r,
        )
        self.enrollments = Counter(
            "synthray_enrollments", "Enrollment requests by outcome (ok, partial, rejected).", ["outcome"], registry=r
        )
        self.enrolled = Counter(
            "synthray_enrolled_images", "Images newly added by enrollment, per generator.", ["generator"], registry=r
        )
        self.deleted = Counter(
            "synthray_deleted_references", "Enrolled references deleted, per generator.", ["generator"], registry=r
        )

        # Discovery: how often answers are "unknown" lately, and what waits in the inbox.
        self.unknown_rate = UnknownRate(registry=r, window_s=window_s)
        self.inbox = Gauge(
            "synthray_inbox_entries",
            "Discovery inbox entries by kind (inbox = unknown answers kept, "
            "feedback = labelled images waiting to be enrolled).",
            ["kind"],
            registry=r,
        )
        self.discoveries = Gauge("synthray_discoveries", "Open discoveries (candidate new generators).", registry=r)
        self.inbox_dropped = Gauge(
            "synthray_inbox_dropped",
            "Unknown answers not recorded since the index owner started, by reason (overload, failure).",
            ["reason"],
            registry=r,
        )
        self.discovery_enrollments = Counter(
            "synthray_discovery_enrollments", "Discoveries enrolled by one call.", registry=r
        )
        self.feedback = Counter(
            "synthray_feedback_images", "Images labelled through feedback, by how they were named.", ["via"], registry=r
        )

    def set_discovery(self, stats: Mapping[str, Any]) -> None:
        """Updates the inbox gauges from the owner's figures (``inbox_stats`` or a listing's counts)."""
        for kind in ("inbox", "feedback"):
            if kind in stats:
                self.inbox.labels(kind).set(stats[kind])
        if "discoveries" in stats:
            self.discoveries.set(stats["discoveries"])
        if "dropped" in stats:
            self.inbox_dropped.labels("overload").set(stats["dropped"])
            self.inbox_dropped.labels("failure").set(stats.get("record_failures", 0))

    def set_index_size(self, counts: Mapping[str, Mapping[str, int]]) -> None:
        """Replaces the index size gauge with ``{generator: {origin: n}}`` (deleted ones disappear)."""
        self.index_size.clear()
        for generator, by_origin in counts.items():
            for origin, n in by_origin.items():
                self.index_size.labels(generator, origin).set(n)

    def render(self) -> tuple[bytes, str]:
        """(body, content type) in the Prometheus text exposition format."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float, kind: str | None) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status >= 400:
            self.errors.labels(endpoint, kind or f"http_{status}").inc()


def route_template(scope: Mapping[str, Any]) -> str:
    """The matched route's path template (``/v1/generators/{name}``): bounded label values."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class UnknownRate:
    """The share of attributed images answered ``unknown`` over the last ``window_s`` seconds
    (this ingress replica's answers), as the gauge ``synthray_unknown_rate``: a new generator
    in the traffic shows up as a rise."""

    def __init__(self, registry: Any, window_s: float = 300.0) -> None:
        from prometheus_client import Gauge

        self.window_s = window_s
        self._events: deque[tuple[float, int, int]] = deque()  # (time, images, unknown)
        self._images = self._unknown = 0
        gauge = Gauge(
            "synthray_unknown_rate",
            "Share of attributed images answered 'unknown' over the sliding window (discovery.window_s).",
            registry=registry,
        )
        gauge.set_function(self.rate)

    def observe(self, unknown: Sequence[bool], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._events.append((now, len(unknown), sum(bool(u) for u in unknown)))
        self._images += len(unknown)
        self._unknown += sum(bool(u) for u in unknown)
        self._expire(now)

    def _expire(self, now: float) -> None:
        while self._events and self._events[0][0] < now - self.window_s:
            _, n, u = self._events.popleft()
            self._images -= n
            self._unknown -= u

    def rate(self, now: float | None = None) -> float:
        self._expire(time.monotonic() if now is None else now)
        return self._unknown / self._images if self._images else 0.0
