"""A throwaway Redis (Debian ``redis-server``): BottleCRM's Celery broker in tests.

In memory only (no RDB snapshots, no AOF), loopback TCP on a free port, no unix socket.

    redis = start_redis(workdir)   # redis.url = "redis://127.0.0.1:<port>/0"
    ...
    redis.stop()
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from replicator.devstack.cache import log_tail, pid_alive, stop_pid
from replicator.devstack.postgres import free_port

MISSING = (
    "redis-server not found on PATH or in /usr/bin: install it with `apt-get install redis-server` "
    "(script/bootstrap does)"
)


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.access("/usr/bin/redis-server", os.X_OK):
        return "/usr/bin/redis-server"
    raise RuntimeError(MISSING)


@dataclass
class Redis:
    port: int
    pid: int
    log_path: Path
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def alive(self) -> bool:
        return pid_alive(self.pid)

    def ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        stop_pid(self.pid, timeout)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)


def start_redis(workdir: Path, *, ready_timeout: float = 15.0) -> Redis:
    """Start redis-server on a free loopback port; returns once it answers PING."""
    binary = redis_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / "redis.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                binary,
                "--bind", "127.0.0.1",
                "--port", str(port),
                "--unixsocket", "",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--dir", str(workdir),
                "--logfile", "",
                # A test broker must not refuse writes when the machine's memory settings look odd.
                "--stop-writes-on-bgsave-error", "no",
            ],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    redis = Redis(port=port, pid=proc.pid, log_path=log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"redis-server exited with {proc.returncode} at start; log {log_path}:\n{redis.log_tail()}"
            )
        if redis.ping():
            return redis
        time.sleep(0.05)
    redis.stop()
    raise RuntimeError(
        f"redis-server did not answer PING within {ready_timeout:.0f}s; log {log_path}:\n{redis.log_tail()}"
    )
