"""Per-schema plans: what the decoder builds once from a key or value schema and reuses for
every record of that schema (see ``schema_cache``)."""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from replicator.change import Row
from replicator.sources.debezium.errors import ENVELOPE_HINT, FieldFailure, field_failure_from
from replicator.sources.debezium.kinds import kind_of_schema
from replicator.sources.debezium.logical_types import build_struct, field_decoders, wrap
from replicator.sources.debezium.placeholders import Placeholders
from replicator.sources.debezium.primitives import DECODE_ERRORS, Decoder, Schema

# --- per-schema plans -------------------------------------------------------------------------


class RowPlan:
    """Decodes one ``before``/``after`` image in place; returns the unchanged columns."""

    __slots__ = ("by_name", "decs", "image", "ph")

    def __init__(self, image: str, schema: Schema | None, tz: tzinfo, ph: Placeholders) -> None:
        self.image = image
        self.ph = ph
        self.decs = field_decoders(schema, tz) if schema else []
        self.by_name: dict[str, Schema] = {f["field"]: f for f in (schema or {}).get("fields") or ()}

    def __call__(self, row: Any) -> tuple[Row, list[str] | None]:
        if type(row) is not dict:
            raise FieldFailure(self.image, f"expected a JSON object or null, got {type(row).__name__}", ENVELOPE_HINT)
        unchanged = self.ph.strip(row) if self.ph.present(row) else None
        name = ""
        try:
            for name, dec in self.decs:
                x = row.get(name)
                if x is not None:
                    row[name] = dec(x)
        except DECODE_ERRORS as e:
            err = wrap(name, self.by_name.get(name), row.get(name), e)
            raise field_failure_from(self.image, err) from e
        return row, unchanged


class ValuePlan:
    """The value schema's record kind and the plans for its ``before``/``after`` images."""

    __slots__ = ("after", "before", "kind")

    def __init__(self, schema: Schema | None, tz: tzinfo, ph: Placeholders) -> None:
        name = (schema or {}).get("name") or ""
        fields = {f.get("field"): f for f in (schema or {}).get("fields") or ()}
        self.kind = kind_of_schema(name, fields)
        self.before = RowPlan("before", fields.get("before"), tz, ph)
        self.after = RowPlan("after", fields.get("after"), tz, ph)


class KeyPlan:
    """The key schema's column order and the decoder for its logical types."""

    __slots__ = ("dec", "order")

    def __init__(self, schema: Schema | None, tz: tzinfo) -> None:
        fields = (schema or {}).get("fields")
        self.order: tuple[str, ...] | None = tuple(f["field"] for f in fields) if fields else None
        self.dec: Decoder | None = build_struct(schema, tz) if fields and schema else None
