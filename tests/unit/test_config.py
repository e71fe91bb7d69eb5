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
    assert "'account', 'contact', 'product' or 'opportunity'" in message
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
