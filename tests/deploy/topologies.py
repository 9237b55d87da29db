"""Throwaway Redis topologies built from the machine's ``redis-server`` on free loopback ports:
a Sentinel setup (master, replica, one sentinel) and a three-master Cluster. Nothing persists;
every process is killed on exit, and every wait is bounded."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import redis

from tests import support
from tests.revocation.support import until

SERVICE = "issuer-test"


def _redis(tmp: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *extra,
        ],
        cwd=str(tmp),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _answers(port: int) -> bool:
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


class SentinelSetup:
    """A master, one replica and one sentinel (quorum 1) monitoring them as :data:`SERVICE`."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.master_port, self.replica_port, self.sentinel_port = (support.free_port() for _ in range(3))
        self.url = f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SERVICE}/0"
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> SentinelSetup:
        self.procs.append(_redis(self.tmp, self.master_port))
        self.procs.append(
            _redis(self.tmp, self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        )
        conf = self.tmp / f"sentinel-{self.sentinel_port}.conf"
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndaemonize no\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        self.procs.append(
            subprocess.Popen(
                ["redis-server", str(conf), "--sentinel"],
                cwd=str(self.tmp),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        ports = (self.master_port, self.replica_port, self.sentinel_port)
        assert until(lambda: all(_answers(p) for p in ports), hang_guard=15), "Sentinel setup did not start"
        assert until(self._replica_synced, hang_guard=20), "the replica did not sync"
        assert until(lambda: self.master() == self.master_port, hang_guard=15), "sentinel knows no master"
        assert until(self._sentinel_knows_replica, hang_guard=20), "sentinel did not find the replica"
        return self

    def _replica_synced(self) -> bool:
        client = redis.Redis(port=self.replica_port)
        try:
            return client.info("replication").get("master_link_status") == "up"
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _sentinel_knows_replica(self) -> bool:
        client = redis.Redis(port=self.sentinel_port, decode_responses=True)
        try:
            replicas = client.execute_command("SENTINEL", "REPLICAS", SERVICE)
            return any("s_down" not in str(r) and str(self.replica_port) in str(r) for r in replicas)
        except redis.RedisError:
            return False
        finally:
            client.close()

    def master(self) -> int | None:
        client = redis.Redis(port=self.sentinel_port, decode_responses=True)
        try:
            address = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            return int(address[1]) if address else None
        except redis.RedisError:
            return None
        finally:
            client.close()

    def failover(self) -> int:
        """Promote the replica (``SENTINEL FAILOVER``) and wait until it is the master; its port."""
        old = self.master()
        client = redis.Redis(port=self.sentinel_port)
        try:
            client.execute_command("SENTINEL", "FAILOVER", SERVICE)
        finally:
            client.close()
        assert until(lambda: self.master() not in (None, old), hang_guard=30), "no failover"
        new = self.master()
        assert new is not None
        promoted = redis.Redis(port=new)
        try:
            assert until(lambda: promoted.info("replication")["role"] == "master", hang_guard=15)
        finally:
            promoted.close()
        return new

    def stop(self) -> None:
        _stop(self.procs)


def _cluster_port() -> int:
    """A free port whose cluster-bus twin (port + 10000) is free and valid too."""
    for _ in range(200):
        port = support.free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class ClusterSetup:
    """Three masters, no replicas, all 16384 slots assigned (``redis-cli --cluster create``)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ports = [_cluster_port() for _ in range(3)]
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> ClusterSetup:
        for port in self.ports:
            self.procs.append(
                _redis(
                    self.tmp,
                    port,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    "2000",
                )
            )
        assert until(lambda: all(_answers(p) for p in self.ports), hang_guard=15), (
            "cluster nodes did not start"
        )
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        assert until(self._ok, hang_guard=30), "the cluster did not reach cluster_state:ok"
        return self

    def _ok(self) -> bool:
        for port in self.ports:
            client = redis.Redis(port=port, decode_responses=True)
            try:
                if "cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                    return False
            except redis.RedisError:
                return False
            finally:
                client.close()
        return True

    def flushall(self) -> None:
        for port in self.ports:
            client = redis.Redis(port=port)
            try:
                client.flushall()
            finally:
                client.close()

    def stop(self) -> None:
        _stop(self.procs)


@contextlib.contextmanager
def sentinel_setup(tmp: Path) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(tmp)
    try:
        yield setup.start()
    finally:
        setup.stop()


@contextlib.contextmanager
def cluster_setup(tmp: Path) -> Iterator[ClusterSetup]:
    setup = ClusterSetup(tmp)
    try:
        yield setup.start()
    finally:
        setup.stop()
