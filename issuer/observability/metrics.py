"""Prometheus metrics of one :class:`~issuer.runtime.Runtime` (``GET /metrics``, text format 0.0.4).

Built on ``prometheus_client``'s own types: every counter is a :class:`~prometheus_client.Counter`
and the request latency a :class:`~prometheus_client.Histogram` (in one process, the edge's three
families are plain numbers rendered as those types render them: :class:`_HttpTallies`), owned by
one :class:`Metrics` per runtime and rendered from that runtime's own
:class:`~prometheus_client.CollectorRegistry`
(never the global default one), so tests and several runtimes in one process do not collide.

**One process** (``issuer serve``, the CLI, the tests): the instruments live in the runtime's
registry, next to the standard ``process_*`` metrics.

**Several workers** (``issuer serve --workers N``): the scrape is answered by whichever worker
accepted the connection, and it answers for the whole server. Every worker runs
``prometheus_client``'s multiprocess mode: its instruments write their values to memory-mapped
files in ``PROMETHEUS_MULTIPROC_DIR`` (one file per metric type and process), and a scrape
renders :class:`~prometheus_client.multiprocess.MultiProcessCollector`, which sums the files of
every worker, living or exited (a counter of a worker that exited stays in the total, so the sums
never go back). Series carry no ``worker`` label. Before spawning its workers ``issuer serve``
(:func:`share_metrics`) makes a fresh private directory for the files
(``tempfile.mkdtemp``: empty, mode 0700, under ``$TMPDIR``), sets ``PROMETHEUS_MULTIPROC_DIR``
for the workers, and removes the directory when the server exits. An operator who set
``PROMETHEUS_MULTIPROC_DIR`` (a tmpfs of their own, say) gets that directory used as it is: it
must exist, and the issuer neither creates, empties nor removes it (``prometheus_client`` wants
it emptied between runs; left as is, the counters go on from the last run's totals). A worker
that stops calls :func:`~prometheus_client.multiprocess.mark_process_dead` for itself (it removes
the files of the ``live*`` gauge modes, which the issuer does not use today; a worker that is
killed leaves nothing that needs removing). The ``process_*`` metrics are left out in this mode:
one scrape would show one worker's and the next another's (``process_cpu_seconds_total`` would
jump back and forth, which Prometheus reads as counter resets). The mode is the process's, not
the runtime's: two runtimes in one multiprocess process would share their series (the server
builds one per worker), and a CLI command run with the operator's ``PROMETHEUS_MULTIPROC_DIR`` in
its environment leaves files of zeros there (the sums do not change).

**What the request path pays**: the observing edge (:mod:`issuer.http.observe`) records each
response before the last byte of the response is handed to the server, so a client that got its
answer finds it counted whichever worker it scrapes next. In one process (:class:`_HttpTallies`)
that is a bisection and three dictionary updates, rendered as the ``Histogram`` and ``Counter``
families at scrape time; with several workers (:class:`_HttpInstruments`), cached label children
of the instruments (``prometheus_client``'s lock around each value and its file). Several
components keep plain integer tallies of their own (the grants' refresh outcomes, the denylist's
additions and Redis errors, the database's outages, the rate limits' refusals and Redis errors,
the password hasher's verifications and sheds, revocation's unknown ``kid``\\ s);
:meth:`Metrics.carry` adds what changed since the last time to the counters. It runs at every
scrape, and, with several workers, also with every response and once a second (for what
background tasks count), so that the other workers' files are current.

**Gauges read from the database** (denylist size, signing keys per state and their ages) are not
instruments: a custom collector on the scraping worker (:class:`_DatabaseGauges`) reads them at
scrape time (:func:`read_gauges`, one transaction) and yields them. They describe the shared
database, not a process, so they are never summed over workers (a multiprocess gauge would need a
mode: ``livesum`` would multiply them by N, ``liveall`` would add a ``pid`` label and stale
copies, and ``max``/``mostrecent`` would still report what some worker read at some earlier
scrape). If the database cannot be read, the scrape counts an error and shows the values the
answering worker read last.

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
``issuer_logins_total{outcome}``                        sign-ins at the login page: ``ok``,
                                                        ``failed`` (wrong password or unknown
                                                        user), ``rate_limited``
``issuer_metrics_scrape_errors_total``                  scrapes whose database gauges could not be
                                                        read (they keep their last values)
======================================================  ==========================================

plus, in one process, the standard ``process_*`` metrics.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
import time
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from typing import TYPE_CHECKING, Any, NamedTuple

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from prometheus_client.utils import INF, floatToGoString

from issuer.settings import SettingsError
from issuer.store.denylist import DenylistStore
from issuer.store.keys import KeyStore

if TYPE_CHECKING:
    from issuer.runtime import Runtime
    from issuer.store.database import Database

__all__ = ["BUCKETS", "CONTENT_TYPE", "MULTIPROC_DIR", "Metrics", "read_gauges", "share_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
KEY_STATES = ("next", "active", "retired")
OUTCOMES = ("rotated", "replayed", "reused", "unknown", "foreign", "expired", "revoked")
LIMITS = ("client", "password", "address", "global")
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
CARRY_INTERVAL = 1.0  # seconds between carries of a worker's tallies, with several workers


class _Family(NamedTuple):
    name: str
    documentation: str
    labels: list[str]


# The edge's three families (_HttpTallies, _HttpInstruments)
_LATENCY = _Family(
    "issuer_http_request_duration_seconds",
    "Request latency by endpoint and grant type.",
    ["endpoint", "grant"],
)
_RESPONSES = _Family(
    "issuer_http_responses", "Responses by endpoint and status code.", ["endpoint", "status"]
)
_ISSUED = _Family("issuer_tokens_issued", "Successful token responses by grant type.", ["grant"])


def multiprocess() -> bool:
    """Whether ``prometheus_client`` writes to ``PROMETHEUS_MULTIPROC_DIR`` in this process.

    The library decides once, when it is first imported, from the environment it finds.
    """
    return values.ValueClass is not values.MutexValue


def share_metrics(workers: int) -> str | None:
    """Called by ``issuer serve`` before it starts its workers: the directory their metrics share.

    With several workers and no ``PROMETHEUS_MULTIPROC_DIR`` of the operator's: a fresh private
    directory, put in the environment the workers inherit, and removed when this process exits.
    The operator's directory is used as it is; one that does not exist is a one-line error.
    None: one process, no directory.
    """
    own = os.environ.get(MULTIPROC_DIR)
    if own is not None:
        if not os.path.isdir(own):
            raise SettingsError(f"{MULTIPROC_DIR} must be an existing directory (got {own!r})")
        return own
    if workers == 1:
        return None
    directory = tempfile.mkdtemp(prefix="issuer-metrics-")  # new, so empty; mode 0700
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    os.environ[MULTIPROC_DIR] = directory
    return directory


def _family_reason(reason: str) -> str:
    if reason == "refresh token reuse":
        return "reuse"
    if "RFC 7009" in reason:
        return "client"
    return "other"


async def read_gauges(db: Database, now: int) -> tuple[int, list[tuple[str, int, int]]]:
    """Live denylist entries, and (state, created_at, state_changed_at) of every key in a state."""
    async with db.transaction() as conn:
        count = await DenylistStore().count_live(conn, now)
        rows = await KeyStore().states(conn, KEY_STATES)
    return int(count), [(row.state, int(row.created_at), int(row.state_changed_at)) for row in rows]


class Metrics:
    """The instruments of one runtime and the registry that renders them."""

    def __init__(self, runtime: Runtime | None = None) -> None:
        self.runtime = runtime
        self.multiprocess = multiprocess()
        # No `_created` series: the multiprocess mode has none, and today's scrapes had none.
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=False)
        # In multiprocess mode the instruments belong to no registry: their values are in the
        # files, and the MultiProcessCollector reads every worker's back.
        home = None if self.multiprocess else self.registry
        if self.multiprocess:
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        else:
            ProcessCollector(registry=self.registry)
        self.gauges = _DatabaseGauges(self)
        self.registry.register(self.gauges)

        def counter(name: str, documentation: str, *labels: str) -> Counter:
            return Counter(name, documentation, labels, registry=home)

        # The edge's three families (latency, responses, tokens issued): plain numbers in one
        # process, prometheus_client's instruments (files) with several workers.
        self.http: _HttpTallies | _HttpInstruments
        if self.multiprocess:
            self.http = _HttpInstruments()
        else:
            self.http = _HttpTallies()
            self.registry.register(self.http)
        self.introspections = counter(
            "issuer_introspections",
            "Introspection answers: active=false is a token that failed verification (bad signature, "
            "unknown kid, expired, revoked, not ours).",
            "active",
        )
        self.refresh = counter(
            "issuer_refresh",
            "Refresh-token presentations by outcome (rotated, replayed in the grace window, reused: "
            "reuse detected and the family revoked, unknown, foreign, expired, revoked).",
            "outcome",
        )
        self.families_revoked = counter(
            "issuer_families_revoked",
            "Refresh families (logins) revoked by this process, by reason.",
            "reason",
        )
        self.denylist_additions = counter(
            "issuer_denylist_additions", "Denylist entries written by this process.", "kind"
        )
        self.unknown_kid = counter(
            "issuer_unknown_kid",
            "Access tokens presented to /introspect or /revoke with a kid not in the JWKS.",
        )
        self.backend_errors = counter(
            "issuer_backend_errors", "Database outages and Redis errors met.", "backend"
        )
        self.rate_limited = counter(
            "issuer_rate_limited",
            "Requests refused by a rate limit (429; 503 for the global password budget), by limit.",
            "limit",
        )
        self.password_verifications = counter(
            "issuer_password_verifications", "argon2 password verifications run."
        )
        self.password_shed = counter(
            "issuer_password_shed",
            "Password checks refused with 503 because the queue for a hashing slot was full.",
        )
        self.logins = counter(
            "issuer_logins", "Sign-ins at the login page by outcome (ok, failed, rate_limited).", "outcome"
        )
        self.scrape_errors = counter(
            "issuer_metrics_scrape_errors", "Scrapes whose database gauges could not be read."
        )
        # Label children, made once; the fixed ones exist from the start, so that their series
        # show 0 until their first event.
        self._introspected = {
            True: self.introspections.labels("true"),
            False: self.introspections.labels("false"),
        }
        self._refresh = {outcome: self.refresh.labels(outcome) for outcome in OUTCOMES}
        self._families = {
            reason: self.families_revoked.labels(reason) for reason in ("reuse", "client", "other")
        }
        self._added: dict[str, Any] = {}
        self._database_errors = self.backend_errors.labels("database")
        self._redis_errors = self.backend_errors.labels("redis")
        self._limited = {limit: self.rate_limited.labels(limit) for limit in LIMITS}
        self._logins = {outcome: self.logins.labels(outcome) for outcome in ("ok", "failed", "rate_limited")}
        self._carried: dict[object, int] = {}  # what carry() has added so far, per tally

    # ------------------------------------------------------------ the request path

    def observe(self, endpoint: str, grant: str, status: int, seconds: float) -> None:
        """One finished request (called by the HTTP edge for every response)."""
        self.http.observe(endpoint, grant, status, seconds)
        if self.multiprocess:
            self.carry()

    def introspected(self, active: bool) -> None:
        self._introspected[active].inc()

    def carry(self) -> None:
        """Add to the counters what the components' own tallies counted since the last carry.

        Cheap when nothing changed (a comparison per tally); the last values carried are kept by
        the tally's key: an outcome, a (kind, reason) pair, a limit's name, or the counter itself.
        """
        runtime = self.runtime
        if runtime is None:
            return
        carried = self._carried
        for outcome, count in runtime.grants.refresh_outcomes.items():
            if count != carried.get(outcome, 0) and outcome.value in self._refresh:
                self._add(outcome, count, self._refresh[outcome.value])
        for key, count in runtime.denylist.additions.items():
            if count != carried.get(key, 0):
                kind, reason = key
                added = self._added.get(kind)
                if added is None:
                    added = self._added[kind] = self.denylist_additions.labels(kind)
                self._add(
                    key, count, added, *((self._families[_family_reason(reason)],) if kind == "sid" else ())
                )
        for limit, count in runtime.rate_limits.refused.items():
            if count != carried.get(limit, 0) and limit in self._limited:
                self._add(limit, count, self._limited[limit])
        for login, count in runtime.login_outcomes.items():
            if count != carried.get(("login", login), 0) and login in self._logins:
                self._add(("login", login), count, self._logins[login])
        for counter, count in (
            (self.unknown_kid, runtime.revocation.unknown_kids),
            (self._database_errors, runtime.db.outages),
            (self._redis_errors, runtime.denylist.redis_errors + runtime.rate_limits.redis_errors),
            (self.password_verifications, runtime.passwords.verifications),
            (self.password_shed, runtime.passwords.shed),
        ):
            if count != carried.get(counter, 0):
                self._add(counter, count, counter)

    def _add(self, key: object, count: int, *counters: Any) -> None:
        delta = count - self._carried.get(key, 0)
        for counter in counters:
            counter.inc(delta)
        self._carried[key] = count

    async def carry_forever(self) -> None:
        """With several workers: carry what background tasks count, too; at the end, this worker
        is marked dead (its ``live*`` gauge files, if any, go; its counters stay in the sums)."""
        try:
            while True:
                await asyncio.sleep(CARRY_INTERVAL)
                self.carry()
        finally:
            self.carry()
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------ the scrape

    async def render(self) -> bytes:
        self.carry()
        await self.gauges.refresh()
        return generate_latest(self.registry)


class _HttpTallies(Collector):
    """``issuer_http_request_duration_seconds``, ``issuer_http_responses_total`` and
    ``issuer_tokens_issued_total`` in one process, recorded by :meth:`observe` for every response.

    Plain numbers: per (endpoint, grant) a count per bucket and the sum of the latencies, per
    (endpoint, status) and per grant a count; :meth:`collect` turns them into the families at
    scrape time, exactly as ``prometheus_client``'s ``Histogram`` and ``Counter`` would render
    them (same names, help, bucket bounds, order of series, float values). The request path then
    costs a bisection and three dictionary updates, where the instruments took a lock per value
    and a Python loop over the buckets (about 17,000 instructions of each request,
    ``bench/README.md``). The event loop is the only writer.
    """

    def __init__(self) -> None:
        self.latency: dict[tuple[str, str], list[float]] = {}  # counts per bucket (+Inf last), then the sum
        self.responses: dict[tuple[str, int], int] = {}
        self.issued: dict[str, int] = {}

    def observe(self, endpoint: str, grant: str, status: int, seconds: float) -> None:
        latency = self.latency.get((endpoint, grant))
        if latency is None:
            latency = self.latency[(endpoint, grant)] = [0.0] * (len(BUCKETS) + 2)
        latency[bisect_left(BUCKETS, seconds)] += 1  # the first bound >= seconds, as Histogram.observe
        latency[-1] += seconds
        key = (endpoint, status)
        self.responses[key] = self.responses.get(key, 0) + 1
        if status == 200 and grant and endpoint == "/token":
            self.issued[grant] = self.issued.get(grant, 0) + 1

    def collect(self) -> Iterator[Metric]:
        bounds = [floatToGoString(bound) for bound in (*BUCKETS, INF)]  # type: ignore[no-untyped-call]
        latency = HistogramMetricFamily(_LATENCY.name, _LATENCY.documentation, labels=_LATENCY.labels)
        for labels, counts in self.latency.items():
            cumulative = list(accumulate(counts[:-1]))
            latency.add_metric(labels, list(zip(bounds, cumulative, strict=True)), counts[-1])
        yield latency
        responses = CounterMetricFamily(_RESPONSES.name, _RESPONSES.documentation, labels=_RESPONSES.labels)
        for (endpoint, status), count in self.responses.items():
            responses.add_metric([endpoint, str(status)], float(count))
        yield responses
        issued = CounterMetricFamily(_ISSUED.name, _ISSUED.documentation, labels=_ISSUED.labels)
        for grant, count in self.issued.items():
            issued.add_metric([grant], float(count))
        yield issued


class _HttpInstruments:
    """The same three families with several workers: ``prometheus_client``'s instruments, whose
    values the library keeps in the shared files, so that every worker's scrape sums them."""

    def __init__(self) -> None:
        self._instruments = (
            Histogram(*_LATENCY, buckets=BUCKETS, registry=None),
            Counter(*_RESPONSES, registry=None),
            Counter(*_ISSUED, registry=None),
        )
        self._children: dict[tuple[object, ...], Any] = {}  # label children, made once per series

    def observe(self, endpoint: str, grant: str, status: int, seconds: float) -> None:
        self._child(0, endpoint, grant).observe(seconds)
        self._child(1, endpoint, str(status)).inc()
        if status == 200 and grant and endpoint == "/token":
            self._child(2, grant).inc()

    def _child(self, which: int, *labels: str) -> Any:
        key = (which, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._instruments[which].labels(*labels)
        return child


class _DatabaseGauges(Collector):
    """The gauges read from the database, by the worker answering the scrape (never summed)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.denylist_entries: int | None = None
        self.keys: list[tuple[str, int, int]] = []  # (state, created_at, state_changed_at)

    async def refresh(self) -> None:
        """Read them (at scrape time, not on the request path); on failure keep the last values."""
        runtime = self.metrics.runtime
        if runtime is None:
            return
        try:
            self.denylist_entries, self.keys = await read_gauges(runtime.db, int(time.time()))
        except Exception:
            self.metrics.scrape_errors.inc()  # the database outage itself is counted by the database

    def collect(self) -> Iterator[Metric]:
        if self.metrics.runtime is None:
            return
        if self.denylist_entries is not None:
            yield GaugeMetricFamily(
                "issuer_denylist_entries", "Live denylist entries (database).", value=self.denylist_entries
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
            rows = [row for row in self.keys if row[0] == state]
            keys.add_metric([state], len(rows))
            if rows:
                age.add_metric([state], now - min(row[1] for row in rows))
                state_age.add_metric([state], now - min(row[2] for row in rows))
        yield keys
        yield age
        yield state_age
