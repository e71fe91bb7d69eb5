"""Connector files, the validate endpoint's answers and connector states: the pure parts of
`replicator setup --connect` (the real worker is in tests/integration/test_connect_*.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.config.model import ConnectConfig
from replicator.jobs.connect import (
    ConnectClient,
    ConnectError,
    ConnectorFile,
    ConnectorFileError,
    ConnectorsInvalid,
    connector_names,
    load_connector_file,
    only_connection_errors,
    parse_status,
    parse_validation,
    register,
    target_of,
)

CONNECTORS = Path(__file__).resolve().parents[2] / "connectors"


def write(tmp_path: Path, body: Any, name: str = "c.json") -> Path:
    path = tmp_path / name
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    return path


# --- connector files ---------------------------------------------------------------------------


def test_placeholders_expand_and_env_provider_references_stay(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "name": "erp-${SUFFIX:-pg}",
            "config": {
                "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
                "database.hostname": "${HOST}",
                "database.port": "${PORT:-5432}",
                "database.password": "${env:ERP_DB_PASSWORD}",
            },
        },
    )
    c = load_connector_file(path, {"HOST": "db.internal"})
    assert c.name == "erp-pg"
    assert c.config["database.hostname"] == "db.internal"
    assert c.config["database.port"] == "5432"
    # Resolved by the Connect worker's config provider, never by setup: the secret stays out of the request.
    assert c.config["database.password"] == "${env:ERP_DB_PASSWORD}"
    assert c.connector_class.endswith("PostgresConnector")


def test_missing_variables_are_named_with_file_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"name": "x", "config": {"connector.class": "C", "database.hostname": "${ERP_HOST}", "topic.prefix": "${P}"}},
    )
    with pytest.raises(ConnectorFileError) as err:
        load_connector_file(path, {})
    text = str(err.value)
    assert str(path) in text
    assert "config.database.hostname: environment variable ERP_HOST is not set" in text
    assert "config.topic.prefix: environment variable P is not set" in text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "not valid JSON"),
        ({"config": {"connector.class": "C"}}, '{"name": "...", "config": {...}}'),
        ({"name": "x", "config": ["a"]}, '{"name": "...", "config": {...}}'),
        ({"name": "x", "config": {"connector.class": "C", "tasks.max": 1}}, "config.tasks.max: Connect takes strings"),
        ({"name": "x", "config": {"topic.prefix": "erp"}}, "config.connector.class is missing"),
    ],
)
def test_malformed_files_are_refused_with_the_reason(tmp_path: Path, body: Any, message: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConnectorFileError, match=re.escape(message)):
        load_connector_file(path, {})


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConnectorFileError, match="cannot read"):
        load_connector_file(tmp_path / "absent.json", {})


_names = st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True)
_text = st.text(st.characters(blacklist_characters="${}", blacklist_categories=("Cs",)), max_size=12)


@given(name=_names, value=_text, default=_text, before=_text, after=_text, is_set=st.booleans())
def test_expansion_follows_the_config_file_rules(
    tmp_path_factory: pytest.TempPathFactory, name: str, value: str, default: str, before: str, after: str, is_set: bool
) -> None:
    path = write(
        tmp_path_factory.mktemp("c"),
        {"name": "n", "config": {"connector.class": "C", "a": f"{before}${{{name}:-{default}}}{after}"}},
    )
    env = {name: value} if is_set else {}
    assert load_connector_file(path, env).config["a"] == before + (value if is_set else default) + after


@pytest.mark.parametrize("path", sorted(CONNECTORS.glob("*.json")), ids=lambda p: p.name)
def test_shipped_connector_files_load_with_their_defaults(path: Path) -> None:
    # Every placeholder has a default: docker compose posts the files with the defaults filled in.
    c = load_connector_file(path, {})
    assert "${" not in c.name
    assert not re.search(r"\$\{(?!env:)", json.dumps(c.config)), "an unexpanded placeholder is left"
    assert c.config["database.password"].startswith("${env:"), "credentials come from the worker's environment"
    assert c.config["decimal.handling.mode"] == "string"
    assert c.config["tombstones.on.delete"] == "true"
    assert "time.precision.mode" in c.config
    assert "signal.data.collection" in c.config


def test_connector_names_expand_and_skip_unreadable_files(tmp_path: Path) -> None:
    good = write(tmp_path, {"name": "erp-${X:-pg}", "config": {}}, "a.json")
    broken = write(tmp_path, "{", "b.json")
    assert connector_names([good, broken, tmp_path / "absent.json"], {}) == ["erp-pg"]


# --- where setup registers ---------------------------------------------------------------------


class _Source:
    def __init__(self, connect: ConnectConfig | None) -> None:
        self.connect = connect


def test_target_prefers_options_then_the_config(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "replicator.yaml"
    src = _Source(ConnectConfig(url="http://connect:8083/", connectors=["../connectors/pg.json", "/abs/my.json"]))
    t = target_of(src, config)
    assert t is not None and t.url == "http://connect:8083"
    assert t.files == [tmp_path / "etc" / ".." / "connectors" / "pg.json", Path("/abs/my.json")]
    t2 = target_of(src, config, "http://other:8083", [Path("x.json")])
    assert t2 is not None and (t2.url, t2.files) == ("http://other:8083", [Path("x.json")])
    assert target_of(_Source(None), config) is None
    with pytest.raises(ConnectorFileError, match=re.escape("source.connect.connectors is empty")):
        target_of(_Source(None), config, "http://connect:8083")


# --- the validate endpoint ---------------------------------------------------------------------


def _item(name: str, value: str | None, errors: list[str]) -> dict[str, Any]:
    return {
        "definition": {"name": name, "type": "STRING", "required": False},
        "value": {"name": name, "value": value, "recommended_values": [], "errors": errors, "visible": True},
    }


def test_validation_collects_field_errors_once_each() -> None:
    port_error = "The 'database.port' value is invalid: An integer is expected"
    body = {
        "name": "io.debezium.connector.sqlserver.SqlServerConnector",
        "error_count": 2,
        "groups": ["Common"],
        "configs": [
            _item("database.hostname", "db", []),
            _item("database.port", None, [port_error, port_error]),
            _item("decimal.handling.mode", "bogus", ["Value must be one of string, double, precise"]),
        ],
    }
    submitted = {"database.hostname": "db", "database.port": "x", "decimal.handling.mode": "bogus"}
    v = parse_validation(body, submitted)
    assert not v.ok
    assert [(e.field, e.value, e.errors) for e in v.errors] == [
        ("database.port", "x", (port_error,)),  # the answer's null value falls back to what was sent
        ("decimal.handling.mode", "bogus", ("Value must be one of string, double, precise",)),
    ]
    assert not only_connection_errors(v)


def test_unknown_keys_are_reported_but_prefixed_families_are_not() -> None:
    body = {
        "name": "C",
        "error_count": 0,
        "configs": [_item("topic.prefix", "erp", []), _item("converters", "boolean", [])],
    }
    submitted = {
        "topic.prefix": "erp",
        "topic.prefx": "typo",
        "key.converter.schemas.enable": "true",
        "topic.creation.default.partitions": "6",
        "schema.history.internal.kafka.topic": "h",
        "transforms.route.type": "x",
        "converters": "boolean",
        "boolean.type": "io.debezium.connector.binlog.converters.TinyIntOneToBooleanConverter",
        "bolean.selector": "typo too",
    }
    v = parse_validation(body, submitted)
    assert v.ok
    assert v.unknown_keys == ["bolean.selector", "topic.prefx"]


def test_only_a_connection_error_means_the_fields_are_valid() -> None:
    body = {
        "name": "C",
        "error_count": 1,
        "configs": [
            _item("database.hostname", "sql", ["Unable to connect. Check this and other connection properties."])
        ],
    }
    assert only_connection_errors(parse_validation(body, {}))
    assert not only_connection_errors(parse_validation({"name": "C", "error_count": 0, "configs": []}, {}))


def test_error_count_without_field_errors_is_still_an_error() -> None:
    v = parse_validation({"name": "C", "error_count": 1, "configs": []}, {})
    assert not v.ok and v.errors[0].field == "<connector>"


def test_unexpected_answer_is_an_error() -> None:
    with pytest.raises(ConnectError, match="unexpected answer"):
        parse_validation({"error_code": 500, "message": "boom"}, {})


# --- connector states --------------------------------------------------------------------------


def test_status_keeps_the_first_line_of_each_trace() -> None:
    body = {
        "name": "erp-postgres",
        "connector": {"state": "RUNNING", "worker_id": "w"},
        "tasks": [
            {
                "id": 0,
                "state": "FAILED",
                "worker_id": "w",
                "trace": "org.apache.kafka.connect.errors.ConnectException: slot in use\n\tat a.b(C.java:1)\n",
            }
        ],
        "type": "source",
    }
    s = parse_status(body)
    assert s.tasks[0].trace_head == "org.apache.kafka.connect.errors.ConnectException: slot in use"
    assert s.detail == s.tasks[0].trace_head
    assert s.settled and not s.healthy
    assert s.tasks_text == "0:FAILED"


@pytest.mark.parametrize(
    ("connector", "tasks", "settled", "healthy"),
    [
        ("RUNNING", ["RUNNING", "RUNNING"], True, True),
        ("RUNNING", [], False, False),  # tasks not started yet
        ("UNASSIGNED", ["RUNNING"], False, False),
        ("RUNNING", ["RUNNING", "FAILED"], True, False),
        ("FAILED", [], True, False),
        ("PAUSED", ["PAUSED"], False, False),
    ],
)
def test_settled_and_healthy(connector: str, tasks: list[str], settled: bool, healthy: bool) -> None:
    s = parse_status(
        {"name": "c", "connector": {"state": connector}, "tasks": [{"id": i, "state": t} for i, t in enumerate(tasks)]}
    )
    assert (s.settled, s.healthy) == (settled, healthy)


# --- registering: all or nothing ---------------------------------------------------------------


class FakeConnect:
    """Answers like a Connect worker; records what was requested."""

    def __init__(self, invalid: set[str]) -> None:
        self.invalid = invalid
        self.requests: list[tuple[str, str]] = []
        self.configs: dict[str, dict[str, str]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append((request.method, path))
        if path.endswith("/config/validate"):
            config = json.loads(request.content)
            bad = config["name"] in self.invalid
            item = _item("topic.prefix", config.get("topic.prefix"), ["Missing required configuration"] if bad else [])
            return httpx.Response(200, json={"name": "C", "error_count": int(bad), "configs": [item]})
        name = path.split("/")[2]
        if request.method == "PUT":
            created = name not in self.configs
            self.configs[name] = json.loads(request.content)
            return httpx.Response(201 if created else 200, json={"name": name, "config": self.configs[name]})
        if path.endswith("/status"):
            if name not in self.configs:
                return httpx.Response(404, json={"error_code": 404, "message": "not found"})
            running = {"state": "RUNNING", "worker_id": "w"}
            return httpx.Response(200, json={"name": name, "connector": running, "tasks": [{"id": 0, **running}]})
        return httpx.Response(200 if name in self.configs else 404, json={})


def _connector(name: str) -> ConnectorFile:
    return ConnectorFile(Path(f"{name}.json"), name, {"connector.class": "C", "topic.prefix": "erp"})


def test_one_invalid_file_registers_nothing() -> None:
    fake = FakeConnect(invalid={"b"})
    client = ConnectClient("http://connect", transport=httpx.MockTransport(fake))
    with pytest.raises(ConnectorsInvalid) as err:
        register(client, [_connector("a"), _connector("b")], sleep=lambda s: None)
    assert "b.json (C):" in str(err.value)
    assert "config.topic.prefix = 'erp': Missing required configuration" in str(err.value)
    assert not [r for r in fake.requests if r[0] == "PUT" and not r[1].endswith("/validate")]
    assert fake.configs == {}


def test_valid_files_are_created_then_updated() -> None:
    fake = FakeConnect(invalid=set())
    client = ConnectClient("http://connect", transport=httpx.MockTransport(fake))
    first = register(client, [_connector("a")], sleep=lambda s: None)
    again = register(client, [_connector("a")], sleep=lambda s: None)
    assert [r.created for r in first + again] == [True, False]
    assert first[0].state is not None and first[0].state.healthy
    assert fake.configs["a"] == {"connector.class": "C", "topic.prefix": "erp"}


def test_unreachable_connect_names_the_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    client = ConnectClient("http://connect:8083", transport=httpx.MockTransport(refuse))
    with pytest.raises(ConnectError, match=r"Kafka Connect at http://connect:8083 is unreachable"):
        register(client, [_connector("a")])
