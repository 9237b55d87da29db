"""A bounded load on loopback for the deploy tests: client threads behind a round-robin balancer.

* :class:`Balancer` is what a load balancer does, in a few lines: round-robin over the instances
  in rotation, a refused connection sent to the next one (nothing was sent, so nothing can have
  been processed), :meth:`Balancer.drain` to take an instance out before it is stopped.
* :class:`Load` runs client threads through it: ``client_credentials``, password logins and
  refresh chains (one :class:`Chain` per thread, so consecutive rotations of a chain land on
  different instances). A chain's client keeps the latest refresh token it was *answered*; a
  refresh that got no answer (a reset, a timeout) or a 503 is retried later with the same token,
  as a real client does: inside the grace window a rotation whose answer was lost returns the
  same successor, and a 503 must never have spent the token.
* :func:`check_chains` looks in the database: every chain's family has exactly one live token
  (no fork) and it is the one its client was last answered (no rotation acknowledged and lost).
* :class:`RevocationWatch` keeps presenting revoked tokens to every instance while a fault is on:
  a revoked token may meet a 503, never an ``active`` introspection or a 200 refresh.

The load runs to a request count with a wall-clock cap: a slow machine takes longer, it does not
do less, and a broken build cannot hang the run.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg

from tests import support
from tests.revocation.support import PASSWORD, Client, until

__all__ = ["Balancer", "Chain", "Load", "RevocationWatch", "check_chains", "figures_line"]

RETRY_PAUSE = 0.2  # seconds before a chain retries a token that met a 503 or no answer


class Balancer:
    """Round-robin over the instances in rotation; a refused connection goes to the next one.

    Like a real load balancer it drains an instance before it is stopped: :meth:`drain` takes it
    out of rotation and returns once the requests already sent to it have been answered. Counts
    every answer by status (``counts``); ``unanswered`` lists the requests that were sent and got
    no response (a reset, a connection closed, a timeout); ``errors`` the 5xx answers.
    """

    def __init__(self, urls: list[str], *, timeout: float = 30.0) -> None:
        self.urls = urls
        self.up = set(urls)
        self.timeout = timeout
        self._next = itertools.count()
        self._lock = threading.Lock()
        self.inflight: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.unanswered: list[str] = []
        self.errors: list[str] = []
        self.problems: list[str] = []  # answers breaking a rule (a 503 without Retry-After, ...)
        self._local = threading.local()

    def http(self) -> httpx.Client:
        """This thread's HTTP client (building one per request costs more than the request)."""
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            # no idle keep-alive connection to lose on shutdown: a fresh connection per request
            limits = httpx.Limits(max_keepalive_connections=0)
            client = self._local.client = httpx.Client(limits=limits, timeout=self.timeout)
        return client

    def close_http(self) -> None:
        """Close this thread's HTTP client (each load thread does, when it ends)."""
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is not None:
            client.close()
            self._local.client = None

    def drain(self, url: str) -> None:
        with self._lock:
            self.up.discard(url)
        assert until(lambda: self.inflight[url] == 0, hang_guard=60)

    def replace(self, old: str, new: str) -> None:
        """Put ``new`` in the place of ``old`` (same port, another process: usually the same URL)."""
        with self._lock:
            self.urls[self.urls.index(old)] = new
            self.up.discard(old)
            self.up.add(new)

    def note(self, problem: str) -> None:
        with self._lock:
            self.problems.append(problem)

    def _pick(self, tried: set[str]) -> str | None:
        with self._lock:
            start = next(self._next)
            for i in range(len(self.urls)):
                url = self.urls[(start + i) % len(self.urls)]
                if url in self.up and url not in tried:
                    self.inflight[url] += 1
                    return url
        return None

    def post(self, path: str, auth: tuple[str, str], data: dict[str, str]) -> httpx.Response | None:
        """One request; None when no answer came back (recorded in ``unanswered``)."""
        tried: set[str] = set()
        while (url := self._pick(tried)) is not None:
            tried.add(url)
            try:
                response = self.http().post(url + path, auth=auth, data=data, headers={"Connection": "close"})
            except httpx.ConnectError:
                with self._lock:
                    self.counts["refused"] += 1
                continue
            except httpx.TransportError as error:
                with self._lock:
                    self.counts["unanswered"] += 1
                    self.unanswered.append(f"{path} {type(error).__name__}: {error}")
                return None
            finally:
                with self._lock:
                    self.inflight[url] -= 1
            with self._lock:
                self.counts[str(response.status_code)] += 1
                if response.status_code >= 500:
                    self.counts["5xx"] += 1
                if response.status_code >= 500 and response.status_code != 503:
                    self.errors.append(f"{path} {response.status_code}: {response.text}")
                if response.status_code == 503 and (
                    "retry-after" not in response.headers
                    or response.json().get("error") != "temporarily_unavailable"
                ):
                    self.problems.append(f"{path} 503 without Retry-After/temporarily_unavailable")
            return response
        with self._lock:
            self.counts["unanswered"] += 1
            self.unanswered.append(f"{path}: no instance in rotation answered")
        return None


@dataclass
class Chain:
    """One login's refresh chain as its client sees it: the latest token it was answered."""

    sid: str
    token: str
    rotations: int = 0
    retries: int = 0
    dead: str | None = None  # why the chain could not go on (an invalid_grant: a defect under load)

    @classmethod
    def login(cls, url: str, app: Client, username: str = "alice") -> Chain:
        response = support.post(
            url + "/token",
            auth=app.auth,
            data={"grant_type": "password", "username": username, "password": PASSWORD},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        sid = jwt.decode(body["access_token"], options={"verify_signature": False})["sid"]
        return cls(str(sid), body["refresh_token"])


@dataclass
class Load:
    """Client threads over ``balancer``: thread ``i`` drives ``chains[i]`` and, between its
    rotations, ``client_credentials`` requests and (every fourth step) a password login."""

    balancer: Balancer
    app: Client
    chains: list[Chain]
    requests_per_thread: int = 400
    cap: float = 60.0  # seconds: a hard wall-clock bound on the whole run
    strict: bool = False  # the rolling restart: a 503 or a lost answer ends the chain (no retry)
    logins: bool = True
    stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _deadline: float = 0.0

    def __enter__(self) -> Load:
        self._deadline = time.monotonic() + self.cap
        self._threads = [
            threading.Thread(target=self._run, args=(chain,), daemon=True) for chain in self.chains
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def finish(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
            assert not thread.is_alive(), "a load thread did not stop"

    @property
    def ok(self) -> int:
        return self.balancer.counts["200"]

    def wait_ok(self, count: int, hang_guard: float = 60) -> bool:
        """Until ``count`` requests in all were answered 200 (or every thread is done)."""
        return until(
            lambda: self.ok >= count or not any(t.is_alive() for t in self._threads), hang_guard=hang_guard
        )

    def _run(self, chain: Chain) -> None:
        try:
            self._steps(chain)
        finally:
            self.balancer.close_http()

    def _steps(self, chain: Chain) -> None:
        auth = self.app.auth
        for n in range(self.requests_per_thread):
            if self.stop.is_set() or time.monotonic() > self._deadline or chain.dead:
                break
            if n % 2 == 0:
                self._rotate(chain)
            elif self.logins and n % 4 == 3:
                data = {"grant_type": "password", "username": "alice", "password": PASSWORD}
                self._expect_200_or_503("password", self.balancer.post("/token", auth, data))
            else:
                data = {"grant_type": "client_credentials"}
                self._expect_200_or_503("client_credentials", self.balancer.post("/token", auth, data))

    def _expect_200_or_503(self, what: str, response: httpx.Response | None) -> None:
        if response is None or response.status_code == 200:
            return
        if response.status_code == 503 and not self.strict:
            return
        self.balancer.note(f"{what} {response.status_code}: {response.text}")

    def _rotate(self, chain: Chain) -> None:
        data = {"grant_type": "refresh_token", "refresh_token": chain.token}
        response = self.balancer.post("/token", self.app.auth, data)
        if response is not None and response.status_code == 200:
            chain.token = response.json()["refresh_token"]
            chain.rotations += 1
            return
        if response is None or response.status_code == 503:
            if self.strict and response is not None:
                chain.dead = f"refresh 503: {response.text}"
                self.balancer.note(chain.dead)
            # no answer, or not now: the same token again, a little later (the grace window
            # returns the same successor if the lost answer had rotated it)
            chain.retries += 1
            time.sleep(RETRY_PAUSE)
            return
        chain.dead = f"refresh {response.status_code}: {response.text}"
        self.balancer.note(chain.dead)


def check_chains(database_url: str, chains: Iterable[Chain]) -> tuple[int, int, list[str]]:
    """(forked, lost, details): families with more than one live token; chains whose live token
    is not the one their client was last answered (or whose family is gone)."""
    import hashlib

    forked = lost = 0
    details = []
    now = int(time.time())
    with psycopg.connect(database_url, autocommit=True) as conn:
        for chain in chains:
            family = conn.execute(
                "SELECT revoked_at, revoked_reason FROM refresh_families WHERE id = %s", (chain.sid,)
            ).fetchone()
            live = [
                bytes(row[0])
                for row in conn.execute(
                    "SELECT digest FROM refresh_tokens WHERE family_id = %s AND used_at IS NULL "
                    "AND expires_at > %s",
                    (chain.sid, now),
                ).fetchall()
            ]
            if len(live) > 1:
                forked += 1
                details.append(f"{chain.sid}: {len(live)} live tokens")
            expected = hashlib.sha256(chain.token.encode("ascii")).digest()
            if family is None or family[0] is not None or live != [expected]:
                lost += 1
                details.append(
                    f"{chain.sid}: revoked={family and family[1]!r}, live={len(live)}, "
                    f"last answered token live={expected in live}"
                )
    return forked, lost, details


class RevocationWatch:
    """A thread presenting revoked tokens to every instance: introspection must never say
    ``active`` and a refresh must never succeed; a 503 (cannot check now) is allowed."""

    def __init__(self, urls: Callable[[], list[str]], app: Client, rs: Client) -> None:
        self.urls = urls
        self.app = app
        self.rs = rs
        self.access: list[str] = []
        self.refresh: list[str] = []
        self.counts: Counter[str] = Counter()
        self.accepted: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._http = threading.local()

    def add(self, *, access: str | None = None, refresh: str | None = None) -> None:
        """Watch these from now on (call once the revocation was answered 200)."""
        with self._lock:
            if access:
                self.access.append(access)
            if refresh:
                self.refresh.append(refresh)

    def __enter__(self) -> RevocationWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive()
        self._close_http()  # the client of a sweep made by this (the test's) thread

    def _close_http(self) -> None:
        client: httpx.Client | None = getattr(self._http, "client", None)
        if client is not None:
            client.close()
            self._http.client = None

    def sweep(self) -> None:
        with self._lock:
            access, refresh = list(self.access), list(self.refresh)
        for url in self.urls():
            for token in access:
                self._count(url, "introspect", token, "/introspect", self.rs, {"token": token})
            for token in refresh:
                data = {"grant_type": "refresh_token", "refresh_token": token}
                self._count(url, "refresh", token, "/token", self.app, data)

    def _count(
        self, url: str, what: str, token: str, path: str, client: Client, data: dict[str, str]
    ) -> None:
        http: httpx.Client | None = getattr(self._http, "client", None)
        if http is None:
            http = self._http.client = httpx.Client(timeout=30)
        try:
            response = http.post(url + path, auth=client.auth, data=data)
        except httpx.TransportError:
            self.counts["unanswered"] += 1
            return
        self.counts[f"{what} {response.status_code}"] += 1
        accepted = (
            response.json().get("active") is True if what == "introspect" else response.status_code == 200
        )
        if accepted:
            self.accepted.append(f"{what} on {url}: a revoked token was accepted ({token[:12]}...)")

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.sweep()
                self._stop.wait(0.05)
        finally:
            self._close_http()


def figures_line(name: str, figures: dict[str, Any]) -> str:
    shown = {key: value for key, value in figures.items() if value != []}  # details only when any
    return f"faults[{name}]: " + " ".join(f"{key}={value}" for key, value in shown.items())


def record(tmp: Path, name: str, figures: dict[str, Any]) -> str:
    """Print the figures line (shown with ``pytest -s`` and in the captured output on failure)
    and write the figures to ``faults-NAME.json`` in the test's tmp dir."""
    line = figures_line(name, figures)
    print(line, flush=True)
    (tmp / f"faults-{name}.json").write_text(json.dumps({"fault": name, **figures}, indent=1) + "\n")
    return line
