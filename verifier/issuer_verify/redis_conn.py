"""Redis connections: the one place that turns a Redis URL (the issuer's ``ISSUER_REDIS_URL``) into a client.

The verifier's :class:`~issuer_verify.denylist.RedisDenylist` builds its blocking client here,
and the issuer builds its asyncio clients (:mod:`issuer.redis_conn`) from the same parsing and
builder, so the three topologies an operator may run work everywhere a token's revocation
travels through Redis:

==================  =====================================================================
URL                 topology
==================  =====================================================================
``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``, ``rediss://...``, ``unix://PATH``
                    one server (redis-py's own URL form; ``rediss`` is TLS)
``redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]``
                    Redis Sentinel: the sentinels (default port 26379) name the master of
                    ``SERVICE``; the client asks them again after a failover. Credentials
                    are the master's; ``?sentinel_password=...`` authenticates to sentinels
                    that require it.
``redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]``
                    Redis Cluster: any reachable node(s) (default port 6379) seed the slot
                    map; no database number (a cluster has only 0).
==================  =====================================================================

Pub/sub works on each: a single server and the Sentinel master subscribe as usual; on a Cluster a
classic ``PUBLISH`` reaches every node, so the subscriber holds one node connection (redis-py's
:class:`~redis.asyncio.cluster.ClusterPubSub`) and reconnects through the slot map when that node
goes. On a Cluster, multi-key commands (the denylist's ``MGET``) need every key in one hash slot,
so ``ISSUER_REDIS_PREFIX`` must contain a hash tag (``{issuer}:``); :func:`parse` is where
settings validation asks, and :func:`check_prefix` states the rule.

This module imports nothing but redis-py (the ``[redis]`` extra).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import parse_qs, unquote

import redis
import redis.connection
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

__all__ = ["Flavor", "RedisTarget", "build", "check_prefix", "parse", "sync_client"]

SENTINEL_PORT = 26379
REDIS_PORT = 6379
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$")
_HASH_TAG = re.compile(r"\{[^{}]+\}")


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed ``ISSUER_REDIS_URL``. ``url`` is set for a single server (redis-py parses it)."""

    kind: Literal["single", "sentinel", "cluster"]
    url: str | None = None
    nodes: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


def _nodes(text: str, default_port: int, scheme: str) -> tuple[tuple[str, int], ...]:
    nodes = []
    for part in text.split(","):
        match = _HOST.match(part.strip())
        if not match:
            raise ValueError(f"{scheme}:// needs HOST[:PORT][,HOST[:PORT]...] (got {part.strip()!r})")
        host, port = match.group(1).strip("[]"), int(match.group(2) or default_port)
        if not 1 <= port <= 65535:
            raise ValueError(f"{scheme}:// port {port} is out of range")
        nodes.append((host, port))
    return tuple(nodes)


def parse(url: str) -> RedisTarget:
    """Parse and check a Redis URL; :class:`ValueError` with a one-line reason when it is wrong.

    Secrets in the URL never appear in the message.
    """
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            redis.connection.parse_url(url)  # type: ignore[no-untyped-call]  # what from_url does
        except ValueError:  # its message may quote parts of the URL
            raise ValueError("is not a valid Redis URL (check the host, port and database)") from None
        return RedisTarget("single", url=url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis+sentinel", "redis+cluster"):
        raise ValueError(
            "must start with redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://"
        )
    rest, _, query = rest.partition("?")
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        userinfo, hostpart = "", rest
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    netloc, _, path = hostpart.partition("/")
    params = {key: values[-1] for key, values in parse_qs(query).items()}
    unknown = set(params) - ({"sentinel_password"} if scheme == "redis+sentinel" else set())
    if unknown:
        raise ValueError(f"{scheme}:// does not take the parameter(s) {', '.join(sorted(unknown))}")
    if scheme == "redis+cluster":
        if path not in ("", "0"):
            raise ValueError("redis+cluster:// takes no database number (a cluster has only database 0)")
        return RedisTarget(
            "cluster",
            nodes=_nodes(netloc, REDIS_PORT, scheme),
            username=username,
            password=password,
        )
    service, _, db_text = path.partition("/")
    if not service:
        raise ValueError("redis+sentinel:// needs the master's service name: redis+sentinel://HOST:PORT/NAME")
    if db_text and not db_text.isdigit():
        raise ValueError(f"redis+sentinel:// database must be a number (got {db_text!r})")
    return RedisTarget(
        "sentinel",
        nodes=_nodes(netloc, SENTINEL_PORT, scheme),
        service=unquote(service),
        db=int(db_text or 0),
        username=username,
        password=password,
        sentinel_password=params.get("sentinel_password"),
    )


def check_prefix(target: RedisTarget, prefix: str) -> None:
    """On a Cluster every key the issuer uses must hash to one slot: the prefix needs a hash tag."""
    if target.kind == "cluster" and not _HASH_TAG.search(prefix):
        raise ValueError(
            f"on Redis Cluster the prefix must contain a hash tag so the denylist's keys share a slot, "
            f"e.g. {{{prefix.rstrip(':') or 'issuer'}}}: (got {prefix!r})"
        )


def sync_client(
    url: str,
    *,
    socket_connect_timeout: float | None = 3.0,
    socket_timeout: float | None = None,
    client_name: str | None = None,
) -> redis.Redis:
    """A blocking client for ``url`` (the verifier's denylist thread); ``close()`` it when done."""
    common: dict[str, Any] = {
        "socket_connect_timeout": socket_connect_timeout,
        "socket_timeout": socket_timeout,
        "client_name": client_name,
    }
    return cast("redis.Redis", build(SYNC, parse(url), common))


@dataclass(frozen=True, slots=True)
class Flavor:
    """The redis-py classes of one I/O style: one builder serves both (the issuer's asyncio
    flavor is in :mod:`issuer.redis_conn`)."""

    single: Any
    cluster: Any
    cluster_node: Any
    sentinel: Any
    sentinel_redis: Any


def build(flavor: Flavor, target: RedisTarget, common: dict[str, Any]) -> Any:
    """A client of ``flavor`` for ``target``; ``common`` are the connection keyword arguments."""
    if target.kind == "single":
        assert target.url is not None
        return flavor.single.from_url(target.url, **common)
    if target.kind == "cluster":
        return flavor.cluster(
            startup_nodes=[flavor.cluster_node(host, port) for host, port in target.nodes],
            username=target.username,
            password=target.password,
            **common,
        )
    sentinel = flavor.sentinel(
        list(target.nodes),
        sentinel_kwargs={
            "socket_connect_timeout": common["socket_connect_timeout"],
            "socket_timeout": common["socket_timeout"],
            "password": target.sentinel_password,
        },
    )
    assert target.service is not None
    client = sentinel.master_for(
        target.service,
        redis_class=flavor.sentinel_redis,
        db=target.db,
        username=target.username,
        password=target.password,
        **common,
    )
    client.sentinel_manager = sentinel
    return client


class _SyncSentinelRedis(redis.Redis):
    """The master's client that also closes its connections to the sentinels."""

    sentinel_manager: Any = None

    def close(self) -> None:
        super().close()
        if self.sentinel_manager is not None:
            for sentinel in self.sentinel_manager.sentinels:
                sentinel.close()


SYNC = Flavor(redis.Redis, RedisCluster, ClusterNode, Sentinel, _SyncSentinelRedis)
