"""Prometheus metrics of one :class:`~issuer.runtime.Runtime` (``GET /metrics``, text format 0.0.4).

Cheap on the hot path by construction: the request path only increments plain integers (in this
module's :class:`Metrics`, and counters the components keep themselves: the grants' refresh
outcomes, the denylist's additions and Redis errors, the database's outages, the rate limits'
refusals, introspection's unknown ``kid``\\ s). Nothing on the request path takes a lock or does
I/O; everything is turned into metric families when ``/metrics`` is scraped, and the gauges that
need the database (denylist size, key ages) are read then.

Each runtime has its own :class:`prometheus_client.CollectorRegistry` (never the global default
one), so tests and several runtimes in one process do not collide. With ``issuer serve
--workers N`` every worker process is a runtime of its own: a scrape is answered by whichever
worker accepted the connection, with that worker's counters and a ``worker`` label (its pid), so
Prometheus sees one series per worker (sum them with ``sum without (worker)``). Gauges read from
the database are the same whichever worker answers.

The metrics (labels in braces):

======================================================  ==========================================
``issuer_http_request_duration_seconds{endpoint,grant}`` histogram of request latency; ``grant``
                                                        is the token request's grant type
                                                        (``unsupported`` for others), empty off /token
``issuer_http_responses_total{endpoint,status}``        responses by status code
``issuer_tokens_issued_total{grant}``                   successful token responses per grant
``issuer_refresh_total{outcome}``                       refresh presentations: ``rotated``,
                                                        ``replayed`` (grace window), ``reused``
                                                        (reuse detected), ``unknown``, ``foreign``,
                                                        ``expired``, ``revoked``
``issuer_families_revoked_total{reason}``               refresh families revoked: ``reuse``,
                                                        ``client`` (RFC 7009), ``other``
``issuer_denylist_additions_total{kind}``               denylist entries written by this process
``issuer_denylist_entries``                             live denylist entries (database, at scrape)
``issuer_signing_keys{state}``                          keys per state (``next``, ``active``,
                                                        ``retired``)
``issuer_signing_key_age_seconds{state}``               age of the oldest key in each state,
                                                        since it was created
``issuer_signing_key_state_age_seconds{state}``         time the longest-standing key of each state
                                                        has been in it (``active``: since it began
                                                        signing; alert when it passes the rotation
                                                        interval)
``issuer_introspections_total{active}``                 introspection answers; ``false``: a token
                                                        that failed verification
``issuer_unknown_kid_total``                            tokens presented to ``/introspect`` or
                                                        ``/revoke`` whose ``kid`` is not in the
                                                        JWKS (forged, foreign, or a key dropped too
                                                        early); a JWKS request names no kid
``issuer_backend_errors_total{backend}``                ``database`` outages (connection lost,
                                                        timeout) and ``redis`` errors
``issuer_rate_limited_total{limit}``                    requests refused by a rate limit: 429 for
                                                        ``client``, ``password`` (username and
                                                        address), ``address``; 503 for ``global``
``issuer_password_verifications_total``                 argon2 password verifications run
``issuer_password_shed_total``                          password checks refused with 503 because
                                                        ``ISSUER_PASSWORD_HASH_QUEUE`` checks were
                                                        already waiting for a hashing slot
``issuer_metrics_scrape_errors_total``                  scrapes whose database gauges could not be
                                                        read (they keep their last values)
======================================================  ==========================================

plus the standard ``process_*`` metrics of the worker process.
"""

from __future__ import annotations

import bisect
import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from issuer.store.denylist import DenylistStore
from issuer.store.keys import KeyStore

if TYPE_CHECKING:
    from issuer.runtime import Runtime

__all__ = ["BUCKETS", "CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
KEY_STATES = ("next", "active", "retired")
OUTCOMES = ("rotated", "replayed", "reused", "unknown", "foreign", "expired", "revoked")


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # per bucket, not cumulative; the last is +Inf
        self.total = 0.0


def _family_reason(reason: str) -> str:
    if reason == "refresh token reuse":
        return "reuse"
    if "RFC 7009" in reason:
        return "client"
    return "other"


class Metrics:
    """Counters of one runtime and the registry that renders them."""

    def __init__(self, runtime: Runtime | None = None) -> None:
        self.runtime = runtime
        self.worker = str(os.getpid())
        self.latency: dict[tuple[str, str], _Histogram] = {}
        self.responses: Counter[tuple[str, int]] = Counter()
        self.tokens_issued: Counter[str] = Counter()
        self.introspections: Counter[bool] = Counter()  # by answer: active or not (verification failures)
        self.scrape_errors = 0
        self.denylist_entries: int | None = None
        self.keys: list[tuple[str, int, int]] = []  # (state, created_at, state_changed_at)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)

    def observe(self, endpoint: str, grant: str, status: int, seconds: float) -> None:
        """One finished request (called by the HTTP edge for every response: integers only)."""
        histogram = self.latency.get((endpoint, grant))
        if histogram is None:
            histogram = self.latency[(endpoint, grant)] = _Histogram()
        histogram.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        histogram.total += seconds
        self.responses[(endpoint, status)] += 1
        if status == 200 and grant and endpoint == "/token":
            self.tokens_issued[grant] += 1

    async def refresh(self) -> None:
        """Read the gauges that live in the database (at scrape time, not on the request path)."""
        if self.runtime is None:
            return
        now = int(time.time())
        try:
            async with self.runtime.db.transaction() as conn:
                count = await DenylistStore().count_live(conn, now)
                rows = await KeyStore().states(conn, KEY_STATES)
        except Exception:
            self.scrape_errors += 1  # the database outage itself is counted by the database
            return
        self.denylist_entries = int(count)
        self.keys = [(row.state, int(row.created_at), int(row.state_changed_at)) for row in rows]

    async def render(self) -> bytes:
        await self.refresh()
        return generate_latest(self.registry)


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        runtime = m.runtime
        w = m.worker

        latency = HistogramMetricFamily(
            "issuer_http_request_duration_seconds",
            "Request latency by endpoint and grant type.",
            labels=["endpoint", "grant", "worker"],
        )
        for (endpoint, grant), histogram in sorted(m.latency.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*BUCKETS, float("inf")), histogram.counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(cumulative)))
            latency.add_metric([endpoint, grant, w], buckets, histogram.total)
        yield latency

        responses = CounterMetricFamily(
            "issuer_http_responses",
            "Responses by endpoint and status code.",
            labels=["endpoint", "status", "worker"],
        )
        for (endpoint, status), count in sorted(m.responses.items()):
            responses.add_metric([endpoint, str(status), w], count)
        yield responses

        issued = CounterMetricFamily(
            "issuer_tokens_issued", "Successful token responses by grant type.", labels=["grant", "worker"]
        )
        for grant, count in sorted(m.tokens_issued.items()):
            issued.add_metric([grant, w], count)
        yield issued

        introspected = CounterMetricFamily(
            "issuer_introspections",
            "Introspection answers: active=false is a token that failed verification (bad signature, "
            "unknown kid, expired, revoked, not ours).",
            labels=["active", "worker"],
        )
        for active in (True, False):
            introspected.add_metric(["true" if active else "false", w], m.introspections[active])
        yield introspected

        if runtime is None:
            return

        refresh = CounterMetricFamily(
            "issuer_refresh",
            "Refresh-token presentations by outcome (rotated, replayed in the grace window, reused: "
            "reuse detected and the family revoked, unknown, foreign, expired, revoked).",
            labels=["outcome", "worker"],
        )
        outcomes = runtime.grants.refresh_outcomes
        for outcome in OUTCOMES:
            refresh.add_metric([outcome, w], sum(c for o, c in outcomes.items() if o.value == outcome))
        yield refresh

        families: Counter[str] = Counter({"reuse": 0, "client": 0, "other": 0})
        additions: Counter[str] = Counter()
        for (kind, reason), count in runtime.denylist.additions.items():
            additions[kind] += count
            if kind == "sid":
                families[_family_reason(reason)] += count
        revoked = CounterMetricFamily(
            "issuer_families_revoked",
            "Refresh families (logins) revoked by this process, by reason.",
            labels=["reason", "worker"],
        )
        for reason, count in sorted(families.items()):
            revoked.add_metric([reason, w], count)
        yield revoked
        added = CounterMetricFamily(
            "issuer_denylist_additions",
            "Denylist entries written by this process.",
            labels=["kind", "worker"],
        )
        for kind, count in sorted(additions.items()):
            added.add_metric([kind, w], count)
        yield added

        if m.denylist_entries is not None:
            yield GaugeMetricFamily(
                "issuer_denylist_entries", "Live denylist entries (database).", value=m.denylist_entries
            )

        now = time.time()
        keys = GaugeMetricFamily("issuer_signing_keys", "Signing keys per state.", labels=["state"])
        age = GaugeMetricFamily(
            "issuer_signing_key_age_seconds",
            "Age of the oldest signing key in each state, since it was created.",
            labels=["state"],
        )
        state_age = GaugeMetricFamily(
            "issuer_signing_key_state_age_seconds",
            "How long the longest-standing key of each state has been in it.",
            labels=["state"],
        )
        for state in KEY_STATES:
            rows = [row for row in m.keys if row[0] == state]
            keys.add_metric([state], len(rows))
            if rows:
                age.add_metric([state], now - min(row[1] for row in rows))
                state_age.add_metric([state], now - min(row[2] for row in rows))
        yield keys
        yield age
        yield state_age

        unknown = CounterMetricFamily(
            "issuer_unknown_kid",
            "Access tokens presented to /introspect or /revoke with a kid not in the JWKS.",
            labels=["worker"],
        )
        unknown.add_metric([w], runtime.revocation.unknown_kids)
        yield unknown

        errors = CounterMetricFamily(
            "issuer_backend_errors", "Database outages and Redis errors met.", labels=["backend", "worker"]
        )
        errors.add_metric(["database", w], runtime.db.outages)
        errors.add_metric(["redis", w], runtime.denylist.redis_errors + runtime.rate_limits.redis_errors)
        yield errors

        limited = CounterMetricFamily(
            "issuer_rate_limited",
            "Requests refused by a rate limit (429; 503 for the global password budget), by limit.",
            labels=["limit", "worker"],
        )
        for limit, count in sorted(runtime.rate_limits.refused.items()):
            limited.add_metric([limit, w], count)
        yield limited

        verifications = CounterMetricFamily(
            "issuer_password_verifications", "argon2 password verifications run.", labels=["worker"]
        )
        verifications.add_metric([w], runtime.passwords.verifications)
        yield verifications
        shed = CounterMetricFamily(
            "issuer_password_shed",
            "Password checks refused with 503 because the queue for a hashing slot was full.",
            labels=["worker"],
        )
        shed.add_metric([w], runtime.passwords.shed)
        yield shed

        scrape = CounterMetricFamily(
            "issuer_metrics_scrape_errors",
            "Scrapes whose database gauges could not be read.",
            labels=["worker"],
        )
        scrape.add_metric([w], m.scrape_errors)
        yield scrape
