"""Redis connections: the one place that turns ``ISSUER_REDIS_URL`` into an asyncio client.

Every Redis user of the server (the denylist, the key-change announcer and listener, the rate
limits) builds its client here, so the three topologies an operator may run (one server,
``redis+sentinel://``, ``redis+cluster://``) work everywhere the issuer touches Redis. The URL
forms, their parsing, the prefix rule and the blocking client are the verifier's, defined once in
:mod:`issuer_verify.redis_conn` (re-exported here), so a resource server's denylist copy takes
exactly the URLs the issuer takes.

Pub/sub works on each topology: on a Cluster a classic ``PUBLISH`` reaches every node, so the
subscriber holds one node connection (redis-py's :class:`~redis.asyncio.cluster.ClusterPubSub`)
and reconnects through the slot map when that node goes. On a Cluster, multi-key commands (the
denylist's ``MGET``) need every key in one hash slot, so ``ISSUER_REDIS_PREFIX`` must contain a
hash tag (``{issuer}:``); :func:`parse` is where settings validation asks, and
:func:`check_prefix` states the rule.
"""

from __future__ import annotations

from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import ClusterPubSub as AsyncClusterPubSub
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.sentinel import Sentinel as AsyncSentinel

from issuer_verify.redis_conn import Flavor, RedisTarget, build, check_prefix, parse, sync_client

__all__ = ["RedisTarget", "async_client", "check_prefix", "parse", "sync_client"]


def async_client(
    url: str,
    *,
    decode_responses: bool = False,
    socket_connect_timeout: float | None = 3.0,
    socket_timeout: float | None = None,
    retry: Any = None,
    client_name: str | None = None,
) -> aioredis.Redis:
    """An asyncio client for ``url``; ``aclose()`` it when done.

    For a Cluster this is a :class:`redis.asyncio.RedisCluster`: it offers every command the
    issuer uses (``GET/SET/MGET`` in one slot, ``EVALSHA``, ``PUBLISH``, ``SCAN``, pipelines,
    ``pubsub()``), so callers treat it as a :class:`redis.asyncio.Redis`.
    """
    common: dict[str, Any] = {
        "decode_responses": decode_responses,
        "socket_connect_timeout": socket_connect_timeout,
        "socket_timeout": socket_timeout,
        "client_name": client_name,
    }
    if retry is not None:
        common["retry"] = retry
    return cast("aioredis.Redis", build(_ASYNC, parse(url), common))


class _AsyncClusterPubSub(AsyncClusterPubSub):
    """redis-py routes a cluster ``SUBSCRIBE`` by the channel's slot, from a slot map the asyncio
    client only learns on its first command: learn it first (a no-op once known)."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        await self.cluster.initialize()
        return await super().execute_command(*args, **kwargs)


class _Queued:
    """What a queued pipeline command returns: awaitable (like redis-py's) or ignorable."""

    __slots__ = ("pipe",)

    def __init__(self, pipe: _ClusterSequence) -> None:
        self.pipe = pipe

    def __await__(self) -> Any:
        return self.pipe
        yield  # unreachable: makes this a generator, so awaiting returns the pipeline at once


class _ClusterSequence:
    """A non-transactional "pipeline" for the cluster client that may hold ``EVALSHA``.

    redis-py refuses scripts in cluster pipelines; the denylist pipelines its merge script. This
    queues the same calls and runs them one after another on the cluster client at ``execute``
    (each routed to its key's node), loading a script a node does not know yet.
    """

    def __init__(self, cluster: _AsyncCluster) -> None:
        self.cluster = cluster
        self.queue: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    async def __aenter__(self) -> _ClusterSequence:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.queue.clear()

    def __getattr__(self, name: str) -> Any:
        def queue(*args: Any, **kwargs: Any) -> _Queued:
            self.queue.append((name, args, kwargs))
            return _Queued(self)

        return queue

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        from redis.exceptions import NoScriptError

        results = []
        queued, self.queue = self.queue, []
        for name, args, kwargs in queued:
            try:
                results.append(await getattr(self.cluster, name)(*args, **kwargs))
            except NoScriptError:
                await self.cluster.script_load(self.cluster.scripts_by_sha[args[0]])
                results.append(await getattr(self.cluster, name)(*args, **kwargs))
        return results


class _AsyncCluster(AsyncRedisCluster):
    scripts_by_sha: dict[str, str]

    def register_script(self, script: Any) -> Any:
        registered = super().register_script(script)
        self.scripts_by_sha = getattr(self, "scripts_by_sha", {})
        self.scripts_by_sha[registered.sha] = script
        return registered

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        if transaction:
            raise ValueError("the issuer uses no transactions on Redis Cluster")
        return _ClusterSequence(self)

    def pubsub(
        self, node: Any = None, host: str | None = None, port: int | None = None, **kwargs: Any
    ) -> AsyncClusterPubSub:
        return _AsyncClusterPubSub(self, node=node, host=host, port=port, **kwargs)


class _AsyncSentinelRedis(aioredis.Redis):
    """The master's client that also closes its connections to the sentinels."""

    sentinel_manager: Any = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.aclose()


_ASYNC = Flavor(aioredis.Redis, _AsyncCluster, AsyncClusterNode, AsyncSentinel, _AsyncSentinelRedis)
