"""Unchanged-TOAST placeholders: Debezium's stand-in for column values it did not receive."""

from __future__ import annotations

import base64
from typing import Any

# Default of the connectors' `unavailable.value.placeholder` (postgresql.adoc "Toasted values").
UNAVAILABLE_VALUE_PLACEHOLDER = "__debezium_unavailable_value"

# --- unchanged-TOAST placeholders -------------------------------------------------------------


class Placeholders:
    """Recognises the placeholder in every shape Debezium PostgreSQL sends it: the string for
    text/JSON, its UTF-8 bytes (base64 in JSON) for bytea and precise decimals, a one-element
    list for arrays, and ``{placeholder: placeholder}`` for hstore in map mode."""

    __slots__ = ("as_b64", "as_list", "as_list_b64", "as_map", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.as_b64 = base64.b64encode(text.encode()).decode()
        self.as_list = [text]
        self.as_list_b64 = [self.as_b64]
        self.as_map = {text: text}

    def present(self, row: dict[str, Any]) -> bool:
        # One C-level scan per shape; nearly every row has none, so this is the whole cost.
        vals = row.values()
        return (
            self.text in vals
            or self.as_b64 in vals
            or self.as_list in vals
            or self.as_list_b64 in vals
            or self.as_map in vals
        )

    def strip(self, row: dict[str, Any]) -> list[str]:
        gone = [
            name
            for name, v in row.items()
            if v == self.text or v == self.as_b64 or v == self.as_list or v == self.as_list_b64 or v == self.as_map
        ]
        for name in gone:
            del row[name]
        return gone
