"""Prometheus metrics of one BFF app (``GET /bff/metrics``, text format 0.0.4), in a registry of
its own (several apps in one process do not collide).

- ``bff_sessions_started_total``; ``bff_sessions_ended_total{reason}`` (``logout``, ``expired``,
  ``revoked``: the issuer's denylist, ``refresh_refused``: the family ended at the issuer);
- ``bff_refreshes_total{outcome}`` (``ok``, ``refused``, ``unavailable``);
- ``bff_proxied_requests_total{upstream,status}`` and ``bff_upstream_seconds{upstream}`` (time to
  the upstream's response head).

The endpoint answers only with ``Authorization: Bearer BFF_METRICS_TOKEN`` (404 otherwise, and
always when the token is unset). Labels never hold a user, session or token.

The proxy's children are looked up once (:meth:`BffMetrics.proxied_counter`,
:meth:`BffMetrics.upstream_timer`): ``.labels()`` takes a lock and builds a key on every call.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["BffMetrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class BffMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.sessions_started = Counter(
            "bff_sessions_started_total", "Sessions started (logins completed).", registry=self.registry
        )
        self.sessions_ended = Counter(
            "bff_sessions_ended_total", "Sessions ended, by reason.", ["reason"], registry=self.registry
        )
        self.refreshes = Counter(
            "bff_refreshes_total", "Access-token refreshes at the issuer, by outcome.", ["outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.proxied = Counter(
            "bff_proxied_requests_total", "Requests proxied, by upstream prefix and status.",
            ["upstream", "status"], registry=self.registry,
        )  # fmt: skip
        self.upstream_seconds = Histogram(
            "bff_upstream_seconds", "Time to the upstream's response head.", ["upstream"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip

        self._proxied: dict[tuple[str, int], Any] = {}  # bounded: prefixes x HTTP statuses
        self._timers: dict[str, Any] = {}

    def proxied_counter(self, upstream: str, status: int) -> Any:
        """The ``bff_proxied_requests_total`` child of ``upstream`` and ``status``."""
        child = self._proxied.get((upstream, status))
        if child is None:
            child = self._proxied[upstream, status] = self.proxied.labels(upstream, str(status))
        return child

    def upstream_timer(self, upstream: str) -> Any:
        """The ``bff_upstream_seconds`` child of ``upstream``."""
        child = self._timers.get(upstream)
        if child is None:
            child = self._timers[upstream] = self.upstream_seconds.labels(upstream)
        return child

    def ended(self, reason: str) -> None:
        self.sessions_ended.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
