from __future__ import annotations

from pathlib import Path

import pytest

from replicator.config import ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "erp" / "replicator.yaml"
ENV = {"ERP_DSN": "host=127.0.0.1 dbname=erp", "BOTTLECRM_URL": "http://127.0.0.1:8000", "BOTTLECRM_TOKEN": "t"}

BASE = """\
erp:
  dsn: ${ERP_DSN}
crm:
  kind: bottlecrm
  url: http://crm.example
  token: ${TOKEN:-dev-token}
mappings:
  customers:
    table: customers
    object: account
    fields:
      name: name
"""


def test_example_config_is_valid() -> None:
    cfg = load_config(EXAMPLE, env=ENV)
    assert set(cfg.mappings) == {"customers", "contacts", "products", "orders"}
    assert cfg.mappings["customers"].table == "public.customers"
    assert cfg.state_dsn == ENV["ERP_DSN"]  # state defaults to the ERP database


def test_secrets_come_from_the_environment_and_defaults_apply() -> None:
    cfg = parse_config(BASE, "c.yaml", {"ERP_DSN": "host=db"})
    assert cfg.erp.dsn.get_secret_value() == "host=db"
    assert cfg.crm.token.get_secret_value() == "dev-token"  # type: ignore[union-attr]
    assert "host=db" not in repr(cfg)  # secrets never printed


def test_missing_env_var_names_the_variable_the_path_and_the_line() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE, "c.yaml", {})
    assert "erp.dsn (c.yaml:2)" in str(err.value)
    assert "ERP_DSN is not set" in str(err.value)


def test_wrong_field_type_and_unknown_key_are_located() -> None:
    text = BASE.replace("      name: name\n", "      name: name\n    objekt: 1\n").replace(
        "object: account", "object: acount"
    )
    with pytest.raises(ConfigError) as err:
        parse_config(text, "c.yaml", {"ERP_DSN": "x"})
    message = str(err.value)
    assert "mappings.customers.object (c.yaml:10)" in message
    assert "'account', 'contact', 'product', 'opportunity' or 'line_item'" in message
    assert "mappings.customers.objekt (c.yaml:13): unknown key" in message


def test_lookup_to_unknown_entity_is_rejected() -> None:
    text = BASE + "    lookups:\n      parent: {entity: nowhere, key: parent_id}\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text, "c.yaml", {"ERP_DSN": "x"})
    assert "mappings.customers.lookups.parent.entity" in str(err.value)
    assert "nowhere" in str(err.value)


def test_invalid_yaml_reports_the_line() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("erp:\n  dsn: [unclosed\n", "c.yaml", {})
    assert "not valid YAML" in str(err.value)


def test_unreadable_file() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("/nonexistent/replicator.yaml")
    assert "cannot read" in str(err.value)


def test_extends_takes_the_base_sections_and_replaces_whole_ones(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(BASE)
    child = tmp_path / "kafka.yaml"
    child.write_text("extends: base.yaml\nsource:\n  kind: kafka\n  bootstrap_servers: k:9092\n  topic_prefix: erp\n")
    cfg = load_config(child, env={"ERP_DSN": "host=db"})
    assert cfg.source.kind == "kafka"
    assert cfg.mappings["customers"].object == "account"  # from the base
    assert cfg.erp.dsn.get_secret_value() == "host=db"


def test_extends_errors_point_into_the_file_that_holds_the_mistake(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(BASE.replace("object: account", "object: acount"))
    child = tmp_path / "kafka.yaml"
    child.write_text("extends: base.yaml\nsource:\n  kind: kafka\n  bootstrap_servers: k:9092\n  topic_prefx: erp\n")
    with pytest.raises(ConfigError) as err:
        load_config(child, env={"ERP_DSN": "host=db"})
    text = str(err.value)
    assert f"mappings.customers.object ({tmp_path / 'base.yaml'}:10)" in text
    assert f"source.topic_prefx ({child}:5)" in text
    assert "source.topic_prefix" in text  # the required key it lacks


def test_extends_cycle_and_missing_base_are_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="a cycle"):
        load_config(tmp_path / "a.yaml", env={})
    (tmp_path / "c.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"cannot read .*nowhere\.yaml"):
        load_config(tmp_path / "c.yaml", env={})


def test_sample_kafka_config_is_valid() -> None:
    cfg = load_config(EXAMPLE.with_name("replicator-kafka.yaml"), env=ENV)
    assert cfg.source.kind == "kafka"
    assert cfg.source.connect is not None  # type: ignore[union-attr]
    assert set(cfg.mappings) == {"customers", "contacts", "products", "orders"}


@pytest.mark.parametrize(
    ("dsn", "extra", "path", "message"),
    [
        ("mysql://u@h/erp", "source:\n  kind: pg_slot\nstate:\n  dsn: host=s\n", "source.kind", "is read with"),
        ("host=db", "source:\n  kind: mysql_binlog\n", "source.kind", "`mysql_binlog` needs a mysql:// erp.dsn"),
        ("mysql://u@h/erp", "source:\n  kind: mysql_binlog\n", "state.dsn", "the state store is PostgreSQL"),
    ],
)
def test_source_must_fit_the_erp_database(dsn: str, extra: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE.replace("${ERP_DSN}", dsn) + extra, "c.yaml", {})
    assert f"  {path} (c.yaml" in str(err.value)
    assert message in str(err.value)


def test_source_kind_defaults_to_the_slot() -> None:
    cfg = parse_config(BASE + "source:\n  slot: s1\n", "c.yaml", {"ERP_DSN": "host=db"})
    assert cfg.source.kind == "pg_slot"
    assert cfg.source.slot == "s1"  # type: ignore[union-attr]


def test_mysql_tables_are_qualified_with_the_dsn_database() -> None:
    text = (
        BASE.replace("${ERP_DSN}", "mysql://u@h:3306/shop")
        + "  contacts:\n    table: people\n    object: contact\n    fields: {last_name: name}\n"
        + "    related:\n      mail: {table: mails, join: {person_id: id}}\n"
        + "source:\n  kind: mysql_binlog\nstate:\n  dsn: host=s\n"
    )
    cfg = parse_config(text, "c.yaml", {})
    assert cfg.mappings["customers"].table == "shop.customers"
    assert cfg.mappings["contacts"].related["mail"].table == "shop.mails"


@pytest.mark.parametrize("path", ["crm", "source.connect"])
def test_service_urls_must_be_http(path: str) -> None:
    kafka = "source:\n  kind: kafka\n  bootstrap_servers: k:9092\n  topic_prefix: erp\n  connect:\n    url: URL\n"
    text = BASE.replace("url: http://crm.example", "url: URL" if path == "crm" else "url: http://crm.example/")
    text += kafka.replace("URL", "http://connect:8083/" if path == "crm" else "connect:8083")
    with pytest.raises(ConfigError) as err:
        parse_config(text, "c.yaml", {"ERP_DSN": "host=db"})
    assert f"{path}.url" in str(err.value) and "must start with http:// or https://" in str(err.value)
    ok = parse_config(
        BASE.replace("url: http://crm.example", "url: http://crm.example/") + kafka.replace("URL", "http://c:8083/"),
        "c.yaml",
        {"ERP_DSN": "host=db"},
    )
    assert ok.crm.url == "http://crm.example"  # type: ignore[union-attr]
    assert ok.source.connect.url == "http://c:8083"  # type: ignore[union-attr]


def test_an_object_the_crm_does_not_have_is_refused_naming_the_mapping() -> None:
    text = BASE.replace("object: account", "object: line_item")
    with pytest.raises(ConfigError) as err:
        parse_config(text, "c.yaml", {"ERP_DSN": "x"})
    assert "mappings.customers.object (c.yaml:10): crm.kind bottlecrm has no 'line_item' records" in str(err.value)


HUBSPOT = """
erp: {dsn: "host=db"}
crm: {kind: hubspot, token: "${HUBSPOT_TOKEN}"}
mappings:
  lines:
    table: sales_order_lines
    object: line_item
    fields: {quantity: quantity}
"""


def test_hubspot_defaults_to_a_private_apps_documented_budget_and_takes_line_items() -> None:
    cfg = parse_config(HUBSPOT, "h.yaml", {"HUBSPOT_TOKEN": "pat-1"})
    assert cfg.crm.kind == "hubspot"
    assert (cfg.crm.budget.burst, cfg.crm.budget.window_s, cfg.crm.budget.daily) == (190, 10.0, 650_000)  # type: ignore[union-attr]
    assert cfg.crm.url == "https://api.hubapi.com"  # type: ignore[union-attr]
    assert "pat-1" not in repr(cfg)


SALESFORCE = """
erp: {dsn: "host=db"}
crm: {kind: salesforce, client_id: app, client_secret: s, username: me@example.com, external_id_field: %s}
mappings:
  customers: {table: customers, object: account, fields: {Name: name}}
"""


def test_salesforce_flows_and_field_names_are_checked_at_startup() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(SALESFORCE % "ERP_Id__c", "s.yaml", {})
    assert "set both `username` and `password`" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config(SALESFORCE.replace("username: me@example.com, ", "") % "ERP_Id", "s.yaml", {})
    assert "crm.external_id_field" in str(err.value)


TWO_WAY = """
erp: {dsn: "host=db"}
crm: %s
mappings:
  customers:
    table: customers
    object: account
    fields: {name: {erp: name, direction: both, conflict: latest_wins}}
    crm_to_erp: {timestamps: {erp: updated_at}}
  contacts:
    table: contacts
    object: contact
    fields: {name: {erp: name, direction: both, conflict: latest_wins}}
    crm_to_erp: {timestamps: {erp: updated_at, crm: my_modified}}
"""


@pytest.mark.parametrize(
    ("crm", "account", "contact"),
    [
        ("{kind: bottlecrm, url: 'http://crm', token: t}", "updated_at", "my_modified"),
        ("{kind: hubspot, token: t}", "hs_lastmodifieddate", "my_modified"),
        ("{kind: salesforce, client_id: a, client_secret: s}", "LastModifiedDate", "my_modified"),
    ],
)
def test_the_crm_modification_time_defaults_to_the_crms_own_field(crm: str, account: str, contact: str) -> None:
    cfg = parse_config(TWO_WAY % crm, "t.yaml", {})
    stamps = {name: e.crm_to_erp.timestamps.crm for name, e in cfg.mappings.items() if e.crm_to_erp}
    assert stamps == {"customers": account, "contacts": contact}  # a field that is named is kept


def test_hubspot_contacts_default_to_their_own_modification_property() -> None:
    from replicator.config.model import CRM_MODIFIED_FIELD
    from replicator.sinks.hubspot.client import MODIFIED_PROPERTY

    cfg = parse_config(TWO_WAY.replace(", crm: my_modified", "") % "{kind: hubspot, token: t}", "t.yaml", {})
    assert cfg.mappings["contacts"].crm_to_erp.timestamps.crm == "lastmodifieddate"  # type: ignore[union-attr]
    # The sink reads exactly these properties back: the two tables must agree.
    assert CRM_MODIFIED_FIELD["hubspot"] == MODIFIED_PROPERTY
