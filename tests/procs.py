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

    def __init__(self, workdir: Path, appendfsync: str = "everysec"):
        self.workdir = workdir
        self.port = free_port()
        self.appendfsync = appendfsync
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


def start_gunicorn(redis_url: str, log: Path) -> tuple[subprocess.Popen, str]:
    """The API under gunicorn with the deployed settings (services/api/gunicorn_conf.py, as scripts/run and
    docker-compose), on a free loopback port; returns the process and its base URL once /healthz answers."""
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
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
