"""The CRM -> ERP half of a mapping is checked at startup, with the location of each mistake."""

from __future__ import annotations

from typing import Any

import pytest

from replicator.config.model import EntityConfig
from replicator.mapping.catalog import TableInfo
from replicator.mapping.entity import compile_mappings
from replicator.mapping.expr import MappingError
from replicator.mapping.reverse import compile_reverse

CATALOG = {
    "public.customers": TableInfo(
        "public.customers",
        ("id", "name", "website", "industry", "updated_at"),
        {"id": "bigint", "name": "text", "website": "text", "industry": "text", "updated_at": "timestamptz"},
        ("id",),
        "f",
    ),
    "public.orders": TableInfo(
        "public.orders",
        ("id", "customer_id", "status", "crm_ref"),
        {"id": "bigint", "customer_id": "bigint", "status": "text", "crm_ref": "text"},
        ("id",),
        "f",
    ),
    "public.order_lines": TableInfo(
        "public.order_lines",
        ("id", "order_id", "quantity"),
        {"id": "bigint", "order_id": "bigint", "quantity": "numeric(12,3)"},
        ("id",),
        "f",
    ),
}
CRM_FIELDS = {"account": frozenset({"name", "website", "industry"}), "opportunity": frozenset({"name", "stage"})}


def _customers(**overrides: Any) -> dict[str, EntityConfig]:
    entity: dict[str, Any] = {
        "table": "public.customers",
        "object": "account",
        "external_id": "'CUST-' || id",
        "fields": {
            "name": {"erp": "name", "direction": "both"},
            "website": {"erp": "website", "direction": "both", "conflict": "crm_wins"},
        },
        "crm_to_erp": {"conflict": "erp_wins"},
    }
    entity.update(overrides)
    return {"customers": EntityConfig.model_validate(entity)}


def _compile(mappings: dict[str, EntityConfig]) -> Any:
    return compile_reverse(mappings, compile_mappings(mappings, CATALOG), CATALOG, CRM_FIELDS)


def test_fields_get_columns_policies_and_the_inverse_of_the_external_id() -> None:
    rev = _compile(_customers())["account"]
    assert {f.name: (f.column, f.policy) for f in rev.fields.values()} == {
        "name": ("name", "erp_wins"),
        "website": ("website", "crm_wins"),
    }
    assert rev.key_of_external_id("CUST-42") == ("42",)
    assert rev.key_of_external_id("SO-42") is None  # not one of ours
    assert rev.fields["website"].expr({None: {"website": "https://x.example"}}) == "https://x.example"


def test_an_expression_that_is_not_a_column_must_name_its_column() -> None:
    mappings = _customers(
        fields={"industry": {"erp": "upper(industry)", "direction": "both"}}, crm_to_erp={"conflict": "erp_wins"}
    )
    with pytest.raises(MappingError) as err:
        _compile(mappings)
    assert "mappings.customers.fields.industry" in str(err.value) and "column:" in str(err.value)


def test_a_reverse_expression_over_an_unknown_crm_field_stops_startup() -> None:
    mappings = _customers(
        fields={"industry": {"erp": "industry", "direction": "both", "reverse": "lower(sector)"}},
    )
    with pytest.raises(MappingError) as err:
        _compile(mappings)
    assert "mappings.customers.fields.industry.reverse" in str(err.value) and "sector" in str(err.value)


def test_an_unknown_erp_column_is_named_with_the_tables_columns() -> None:
    mappings = _customers(fields={"name": {"erp": "name", "direction": "both", "column": "title"}})
    with pytest.raises(MappingError) as err:
        _compile(mappings)
    assert "fields.name.column" in str(err.value) and "website" in str(err.value)


def test_latest_wins_needs_the_erps_modification_time() -> None:
    mappings = _customers(fields={"name": {"erp": "name", "direction": "both", "conflict": "latest_wins"}})
    with pytest.raises(MappingError) as err:
        _compile(mappings)
    assert "timestamps.erp" in str(err.value)
    ok = _customers(
        fields={"name": {"erp": "name", "direction": "both", "conflict": "latest_wins"}},
        crm_to_erp={"timestamps": {"erp": "updated_at"}},
    )
    assert _compile(ok)["account"].erp_ts is not None


def test_an_external_id_that_cannot_be_inverted_is_refused() -> None:
    with pytest.raises(MappingError) as err:
        _compile(_customers(external_id="upper('c' || id)"))
    assert "mappings.customers.external_id" in str(err.value) and "inverted" in str(err.value)


def test_audit_values_must_be_values_not_columns_or_queries() -> None:
    for bad in ("name", "(SELECT 1)"):
        with pytest.raises(MappingError) as err:
            _compile(_customers(crm_to_erp={"audit": {"updated_at": bad}}))
        assert "crm_to_erp.audit.updated_at" in str(err.value)


def test_fields_that_flow_back_need_a_crm_to_erp_section() -> None:
    with pytest.raises(ValueError, match="crm_to_erp"):
        _customers(crm_to_erp=None)


def test_inserts_with_lines_are_checked_against_both_tables() -> None:
    orders: dict[str, Any] = {
        "table": "public.orders",
        "object": "opportunity",
        "external_id": "'SO-' || id",
        "fields": {"name": "status"},
        "lookups": {"account": {"entity": "customers", "key": "customer_id"}},
        "crm_to_erp": {
            "insert": {
                "when": "stage = 'CLOSED_WON'",
                "crm_id_column": "crm_ref",
                "values": {"status": "'confirmed'"},
                "lines": {
                    "table": "public.order_lines",
                    "parent": {"order_id": "id"},
                    "values": {"quantity": "quantity"},
                },
            }
        },
    }
    mappings = {**_customers(), "orders": EntityConfig.model_validate(orders)}
    rev = _compile(mappings)["opportunity"]
    assert rev.insert and rev.crm_id_column == "crm_ref" and rev.lines is not None
    assert rev.insert_when is not None and rev.insert_when({None: {"stage": "CLOSED_WON"}})
    assert rev.parent_keys["customers"]("CUST-7") == ("7",)
    orders["crm_to_erp"]["insert"]["lines"]["values"] = {"qty": "quantity"}
    with pytest.raises(MappingError) as err:
        _compile({**_customers(), "orders": EntityConfig.model_validate(orders)})
    assert "insert.lines.values.qty" in str(err.value)
