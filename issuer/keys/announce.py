"""Announcing key-ring changes to the instances over Redis, and listening for them.

After a change, :mod:`issuer.keys.rotation` calls :func:`announce`, which publishes on the Redis
channel ``<prefix>keys``; every serving instance runs :func:`watch`, which reloads its
:class:`~issuer.keys.ring.KeyRing` on each message. A lost message costs nothing but time:
instances also reload every ``ISSUER_KEY_RELOAD_INTERVAL``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from issuer.errors import TemporarilyUnavailable
from issuer.keys.ring import KeyRing, KeyRingError
from issuer.settings import Settings

__all__ = ["announce", "channel", "watch"]

log = logging.getLogger("issuer.keys")


def channel(settings: Settings) -> str:
    return f"{settings.redis_prefix}keys"


async def announce(settings: Settings, event: str) -> bool:
    """Publish a key-ring change on ``<prefix>keys``; False (and a warning) when Redis is down.

    Without Redis, or when the message is lost, instances still reload within
    ``ISSUER_KEY_RELOAD_INTERVAL``.
    """
    if not settings.redis_url:
        return False
    from redis.exceptions import RedisError

    from issuer import redis_conn

    client = redis_conn.async_client(settings.redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        await client.publish(channel(settings), json.dumps({"event": event, "at": int(time.time())}))
        return True
    except (RedisError, OSError) as error:
        log.warning("key change not announced on Redis: %s", type(error).__name__)
        return False
    finally:
        await client.aclose()


async def watch(settings: Settings, keyring: KeyRing) -> None:
    """Reload ``keyring`` whenever a change is announced on Redis; reconnect when Redis goes away."""
    from redis.exceptions import RedisError

    from issuer import redis_conn

    assert settings.redis_url
    delay = 0.5
    while True:
        client = redis_conn.async_client(settings.redis_url, socket_connect_timeout=3)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel(settings))
            await keyring.reload()  # anything announced while we were not listening
            delay = 0.5
            while True:
                message = await pubsub.get_message(timeout=30.0)
                if message is not None and await keyring.reload():
                    log.info("key ring reloaded on announcement", extra={"kids": keyring.kids})
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError, KeyRingError, TemporarilyUnavailable) as error:
            log.warning("key change channel unavailable (%s); retrying", type(error).__name__)
        except Exception:
            log.exception("key ring reload failed")
        finally:
            with _suppress():
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
            with _suppress():
                await client.aclose()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


def _suppress() -> Any:
    import contextlib

    return contextlib.suppress(Exception)
