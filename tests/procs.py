"""Real processes for the tests: a redis-server and Celery workers that tests can kill -9 and restart."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def stop_process(proc: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within `grace` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class RedisServer:
    """A redis-server on a free port with AOF (appendfsync everysec), in its own directory."""

    def __init__(self, workdir: Path, appendfsync: str = "everysec", replicaof: int | None = None):
        self.workdir = workdir
        self.port = free_port()
        self.appendfsync = appendfsync
        self.replicaof = replicaof  # the primary's port: this server is its replica
        self.extra: list[str] = []
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        cmd = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
            "--save", "", "--appendonly", "yes", "--appendfsync", self.appendfsync,
            "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        cmd += self.extra
        if self.replicaof is not None:
            # Any node may become the primary: none waits 5 s (7.0's default) before a replica's sync.
            cmd += ["--replicaof", "127.0.0.1", str(self.replicaof), "--repl-diskless-sync-delay", "0"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.exceptions.RedisError:
                return False

        wait_for(up, 15, what="redis-server to answer")

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            # A server a test stopped (SIGSTOP, a stall) handles SIGTERM only once it runs again.
            self.proc.send_signal(signal.SIGCONT)
            stop_process(self.proc)


class Worker:
    """``celery -A services.worker worker`` as a subprocess with the test Redis: started the standard
    way, without ``-Q`` (so every test proves a bare worker does all the work), unless ``queues``
    names the queues to consume (``"patients"``: ``-Q patients``)."""

    def __init__(
        self,
        redis_url: str,
        name: str,
        logdir: Path,
        concurrency: int = 2,
        env: dict | None = None,
        queues: str | None = None,
    ):
        self.redis_url, self.name, self.concurrency, self.queues = redis_url, name, concurrency, queues
        self.log = logdir / f"worker-{name}.log"
        self.env = env or {}
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> None:
        env = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "SWEEP_INTERVAL_S": "0.5",
            "REQUEUE_AFTER_S": "2",
            "PYTHONPATH": str(ROOT),
            **self.env,
        }
        cmd = [
            sys.executable, "-m", "celery", "-A", "services.worker", "worker",
            "-c", str(self.concurrency), "-n", f"{self.name}@%h", "--loglevel", "INFO", "--without-gossip",
            "--without-mingle",
        ]  # fmt: skip
        if self.queues is not None:
            cmd += ["-Q", self.queues]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        client = redis.Redis.from_url(self.redis_url)

        def beating() -> bool:
            assert self.proc and self.proc.poll() is None, self.log.read_text()[-3000:]
            members = client.zrangebyscore("cml:workers", (time.time() - 3) * 1000, "+inf")
            return any(m.decode().startswith(f"{self.name}@") for m in members)

        wait_for(beating, timeout, what=f"worker {self.name} heartbeat")

    def kill9(self) -> None:
        """SIGKILL the whole process group: the main process and its prefork children."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()


def start_gunicorn(redis_url: str, log: Path, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """The API under gunicorn with the deployed settings (services/api/gunicorn_conf.py, as scripts/run and
    docker-compose), on a free loopback port; returns the process and its base URL once /healthz answers.
    ``env`` adds variables (REDIS_SENTINELS, WRITE_REPLICAS...)."""
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT), **(env or {})}
    cmd = [
        sys.executable, "-m", "gunicorn", "-c", str(ROOT / "services" / "api" / "gunicorn_conf.py"),
        "-b", f"127.0.0.1:{port}", "services.api:create_app()",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    wait_for(up, 30, what="gunicorn")
    return proc, base


class SentinelSet:
    """A primary with AOF, ``replicas`` replicas (``--replicaof``) and three sentinels (``redis-server
    --sentinel``, what the ``redis-sentinel`` binary runs) monitoring it as ``master`` with quorum 2,
    on free loopback ports; each sentinel has its own config file, since sentinels rewrite theirs."""

    def __init__(self, workdir: Path, master: str = "mymaster", replicas: int = 1, down_after_ms: int = 1000):
        self.workdir, self.master, self.down_after_ms = workdir, master, down_after_ms
        self.primary = RedisServer(workdir / "primary", appendfsync="always")
        self.primary.extra = ["--repl-diskless-sync-delay", "0"]
        self.replicas = [
            RedisServer(workdir / f"replica-{i}", appendfsync="always", replicaof=self.primary.port)
            for i in range(replicas)
        ]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen] = []

    @property
    def env(self) -> dict[str, str]:
        """What the API and workers are configured with to use this set (README, "High availability")."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return {"REDIS_SENTINELS": hosts, "REDIS_SENTINEL_MASTER": self.master}

    def _sentinel_conf(self, i: int, port: int) -> Path:
        d = self.workdir / f"sentinel-{i}"
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {d}\nlogfile {d / 'sentinel.log'}\n"
            "sentinel resolve-hostnames yes\n"
            f"sentinel monitor {self.master} 127.0.0.1 {self.primary.port} 2\n"
            f"sentinel down-after-milliseconds {self.master} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.master} 5000\n"
            f"sentinel parallel-syncs {self.master} 1\n"
        )
        return conf

    def start(self) -> None:
        self.primary.start()
        for replica in self.replicas:
            replica.start()
        primary = redis.Redis(port=self.primary.port)

        def in_sync() -> bool:
            info = primary.info("replication")
            states = [info.get(f"slave{i}", {}).get("state") for i in range(len(self.replicas))]
            return states == ["online"] * len(self.replicas)

        wait_for(in_sync, 15, what="replicas in sync")
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        for i, port in enumerate(self.sentinel_ports):
            conf = self._sentinel_conf(i, port)
            self.sentinels.append(
                subprocess.Popen(
                    [binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        for port in self.sentinel_ports:
            s = redis.Redis(port=port, socket_connect_timeout=0.2, decode_responses=True)

            def knows_all(s: redis.Redis = s) -> bool:
                try:
                    state = s.sentinel_master(self.master)
                except redis.exceptions.RedisError:
                    return False
                return state["num-other-sentinels"] == 2 and state["num-slaves"] == len(self.replicas)

            wait_for(knows_all, 20, interval=0.1, what="sentinels to find each other and the replicas")

    def master_port(self) -> int | None:
        """The primary's port as the sentinels' majority currently says, or None."""
        votes: dict[int, int] = {}
        for port in self.sentinel_ports:
            try:
                _, p = redis.Redis(port=port, socket_timeout=0.5).sentinel_get_master_addr_by_name(
                    self.master
                )
            except (redis.exceptions.RedisError, TypeError):
                continue
            votes[int(p)] = votes.get(int(p), 0) + 1
        best = max(votes.items(), key=lambda kv: kv[1], default=(None, 0))
        return best[0] if best[1] >= 2 else None

    def wait_failover(self, timeout: float = 30) -> RedisServer:
        """The replica the sentinels promoted, once it answers as a primary."""
        old = self.primary.port

        def promoted() -> RedisServer | None:
            port = self.master_port()
            if port is None or port == old:
                return None
            server = next(s for s in self.replicas if s.port == port)
            try:
                role = redis.Redis(port=port, socket_timeout=0.5).role()[0]
            except redis.exceptions.RedisError:
                return None
            return server if role in (b"master", "master") else None

        return wait_for(promoted, timeout, interval=0.1, what="the sentinels to promote a replica")

    def stop(self) -> None:
        for proc in self.sentinels:
            stop_process(proc, grace=5)
        for server in (*self.replicas, self.primary):
            server.stop()
