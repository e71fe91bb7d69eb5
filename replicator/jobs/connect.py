"""Registering the Debezium connectors with Kafka Connect (`replicator setup --connect`).

Every connector file is expanded (``${VAR}`` / ``${VAR:-default}``, the configuration file's
rules; ``${env:VAR}`` is left for the Connect worker's config provider), then validated through
``PUT /connector-plugins/{class}/config/validate``. Only when every file is valid is any of them
created or updated (``PUT /connectors/{name}/config``, idempotent); then their states are reported.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from replicator.config.load import _interpolate as interpolate

# Keys Connect accepts under a prefix without listing them in the validate answer.
_PREFIXED = (
    "key.converter.",
    "value.converter.",
    "header.converter.",
    "transforms.",
    "predicates.",
    "topic.creation.",
    "errors.",
    "producer.override.",
    "consumer.override.",
    "admin.override.",
    "driver.",
    "database.",
    "signal.",
    "notification.",
    "schema.history.internal.",
)


class ConnectorFileError(Exception):
    """A connector file that cannot be read, parsed or expanded; names the file and key."""


class ConnectError(Exception):
    """Kafka Connect is unreachable or answered with an error."""


@dataclass(frozen=True)
class ConnectorFile:
    path: Path
    name: str
    config: dict[str, str]

    @property
    def connector_class(self) -> str:
        return self.config["connector.class"]


def load_connector_file(path: Path, env: Mapping[str, str] | None = None) -> ConnectorFile:
    """``{"name": ..., "config": {...}}`` with placeholders expanded; every value a string."""
    env = os.environ if env is None else env
    try:
        raw = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ConnectorFileError(f"{path}: cannot read: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise ConnectorFileError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict) or not isinstance(raw.get("name"), str):
        shape = '{"name": "...", "config": {...}}'
        raise ConnectorFileError(f"{path}: expected {shape} (the body of POST /connectors)")
    missing: list[tuple[str, str]] = []
    data = interpolate(raw, "", env, missing)
    if missing:
        lines = [f"  {where}: environment variable {var} is not set; export it" for where, var in missing]
        raise ConnectorFileError(f"{path}:\n" + "\n".join(lines))
    config: dict[str, str] = {}
    for key, value in data["config"].items():
        if not isinstance(value, str):
            raise ConnectorFileError(f"{path}: config.{key}: Connect takes strings; write {orjson.dumps(str(value))!r}")
        config[key] = value
    if "connector.class" not in config:
        raise ConnectorFileError(f"{path}: config.connector.class is missing")
    return ConnectorFile(path, data["name"], config)


def resolve_files(config_path: Path, files: list[str]) -> list[Path]:
    """Connector files as the configuration names them: relative to the configuration file."""
    base = config_path.resolve().parent
    return [p if (p := Path(f)).is_absolute() else base / p for f in files]


# --- validation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldError:
    field: str
    value: str | None
    errors: tuple[str, ...]


@dataclass(frozen=True)
class Validation:
    connector_class: str
    errors: list[FieldError]
    unknown_keys: list[str]  # not known to the connector: Connect does not flag misspellings

    @property
    def ok(self) -> bool:
        return not self.errors


def parse_validation(body: Mapping[str, Any], submitted: Mapping[str, str]) -> Validation:
    """The validate endpoint's answer: ``{"name", "error_count", "configs": [{"definition", "value"}]}``."""
    if not isinstance(body.get("configs"), list):
        raise ConnectError(f"unexpected answer from the validate endpoint: {str(dict(body))[:300]}")
    errors: list[FieldError] = []
    known: set[str] = set()
    for item in body["configs"]:
        value = item.get("value") or {}
        name = value.get("name") or (item.get("definition") or {}).get("name")
        if not name:
            continue
        known.add(name)
        # Some connectors report one problem twice; the answer's value is often null.
        messages = tuple(dict.fromkeys(m for m in value.get("errors") or [] if m))
        if messages:
            shown = value.get("value")
            errors.append(FieldError(name, shown if shown is not None else submitted.get(name), messages))
    if body.get("error_count", 0) and not errors:
        errors.append(FieldError("<connector>", None, (f"{body['error_count']} error(s) without a field",)))
    # Custom converters take their settings under their own name: converters=boolean -> boolean.type.
    converters = tuple(f"{c.strip()}." for c in submitted.get("converters", "").split(",") if c.strip())
    unknown = sorted(k for k in submitted if k not in known and not k.startswith(_PREFIXED + converters))
    return Validation(str(body.get("name", "")), errors, unknown)


def only_connection_errors(validation: Validation) -> bool:
    """All fields valid, and only the connection attempt failed (reported on database.hostname)."""
    return bool(validation.errors) and all(e.field == "database.hostname" for e in validation.errors)


# --- states ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskState:
    id: int
    state: str
    trace_head: str | None


@dataclass(frozen=True)
class ConnectorState:
    name: str
    state: str
    trace_head: str | None
    tasks: list[TaskState] = field(default_factory=list)

    @property
    def settled(self) -> bool:
        """RUNNING with every task RUNNING, or anything FAILED: waiting longer changes nothing."""
        states = [self.state, *(t.state for t in self.tasks)]
        return "FAILED" in states or (bool(self.tasks) and all(s == "RUNNING" for s in states))

    @property
    def tasks_text(self) -> str:
        return ", ".join(f"{t.id}:{t.state}" for t in self.tasks) or "none"

    @property
    def detail(self) -> str:
        """The first line of the first failure's trace, if any."""
        return next((x for x in [self.trace_head, *(t.trace_head for t in self.tasks)] if x), "")

    @property
    def healthy(self) -> bool:
        return self.state == "RUNNING" and bool(self.tasks) and all(t.state == "RUNNING" for t in self.tasks)


def _head(trace: str | None) -> str | None:
    return trace.strip().splitlines()[0] if trace and trace.strip() else None


def parse_status(body: Mapping[str, Any]) -> ConnectorState:
    conn = body.get("connector") or {}
    tasks = [
        TaskState(int(t.get("id", i)), str(t.get("state", "?")), _head(t.get("trace")))
        for i, t in enumerate(body.get("tasks") or [])
    ]
    return ConnectorState(str(body.get("name", "?")), str(conn.get("state", "?")), _head(conn.get("trace")), tasks)


# --- the REST client ---------------------------------------------------------------------------


class ConnectClient:
    def __init__(self, url: str, timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        try:
            return self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ConnectError(f"Kafka Connect at {self.url} is unreachable ({method} {path}): {exc}") from None

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        resp = self._call(method, path, body)
        if resp.status_code >= 400:
            try:
                message = resp.json().get("message", resp.text)
            except ValueError:
                message = resp.text
            raise ConnectError(f"{method} {path}: HTTP {resp.status_code}: {message}")
        return resp.json() if resp.content else None

    def validate(self, connector: ConnectorFile) -> Validation:
        config = {**connector.config, "name": connector.name}
        body = self._json("PUT", f"/connector-plugins/{connector.connector_class}/config/validate", config)
        return parse_validation(body, connector.config)

    def list_connectors(self) -> list[str]:
        return sorted(self._json("GET", "/connectors") or [])

    def exists(self, name: str) -> bool:
        return self._call("GET", f"/connectors/{name}").status_code == 200

    def put_config(self, connector: ConnectorFile) -> None:
        self._json("PUT", f"/connectors/{connector.name}/config", connector.config)

    def status(self, name: str) -> ConnectorState | None:
        resp = self._call("GET", f"/connectors/{name}/status")
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            raise ConnectError(f"GET /connectors/{name}/status: HTTP {resp.status_code}: {resp.text[:300]}")
        return parse_status(resp.json())


# --- registering -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Invalid:
    file: Path
    validation: Validation


class ConnectorsInvalid(Exception):
    def __init__(self, invalid: list[Invalid]) -> None:
        self.invalid = invalid
        super().__init__(render_invalid(invalid))


def render_invalid(invalid: list[Invalid]) -> str:
    lines = []
    for item in invalid:
        lines.append(f"{item.file} ({item.validation.connector_class}):")
        for err in item.validation.errors:
            shown = "" if err.value is None else f" = {err.value!r}"
            for message in err.errors:
                lines.append(f"  config.{err.field}{shown}: {message}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Registered:
    file: Path
    name: str
    created: bool
    state: ConnectorState | None
    unknown_keys: list[str]


def register(
    client: ConnectClient,
    connectors: list[ConnectorFile],
    *,
    wait_s: float = 20.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Registered]:
    """Validate all, then create or update all, then wait until each settles (or ``wait_s`` passes)."""
    validations = [(c, client.validate(c)) for c in connectors]
    invalid = [Invalid(c.path, v) for c, v in validations if not v.ok]
    if invalid:
        raise ConnectorsInvalid(invalid)
    created: dict[str, bool] = {}
    for c in connectors:
        created[c.name] = not client.exists(c.name)
        client.put_config(c)
    deadline = time.monotonic() + wait_s
    states: dict[str, ConnectorState | None] = {}
    while True:
        states = {c.name: client.status(c.name) for c in connectors}
        if all(s is not None and s.settled for s in states.values()) or time.monotonic() >= deadline:
            break
        sleep(0.5)
    return [Registered(c.path, c.name, created[c.name], states[c.name], v.unknown_keys) for c, v in validations]


# --- what the configuration asks for -----------------------------------------------------------


@dataclass(frozen=True)
class Target:
    url: str
    files: list[Path]


def target_of(source: Any, config_path: Path, url: str | None = None, files: list[Path] | None = None) -> Target | None:
    """The Connect URL and connector files for `setup`: options first, then ``source.connect``.

    None when neither names a Connect cluster; ConnectorFileError when there is one but no files.
    """
    connect = getattr(source, "connect", None)
    url = url or (connect.url if connect is not None else None)
    if not url:
        return None
    if files:
        chosen = list(files)
    elif connect is not None and connect.connectors:
        chosen = resolve_files(config_path, connect.connectors)
    else:
        raise ConnectorFileError(
            f"{config_path}: source.connect.connectors is empty: list the connector files to register "
            "(e.g. ../../connectors/debezium-postgres.json) or pass --connector FILE"
        )
    return Target(url.rstrip("/"), chosen)


def connector_names(files: list[Path], env: Mapping[str, str] | None = None) -> list[str]:
    """The connector names the files register; a file that cannot be read is skipped (status only)."""
    env = os.environ if env is None else env
    names = []
    for path in files:
        try:
            raw = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            names.append(interpolate(raw["name"], "name", env, []))
    return names


def connector_states(client: ConnectClient, names: list[str]) -> list[tuple[str, ConnectorState | None]]:
    """Each named connector's state (None: not registered); every connector of the cluster when no names."""
    if not names:
        names = client.list_connectors()
    return [(name, client.status(name)) for name in names]
