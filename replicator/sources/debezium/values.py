"""The other logical types, text-borne and binary: Json, Uuid, Enum, EnumSet, Bits."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from replicator.sources.debezium.primitives import b64_bytes

# --- text-borne and binary types --------------------------------------------------------------


def decode_json(v: Any) -> Any:
    # io.debezium.data.Json (PostgreSQL JSON/JSONB/HSTORE in json mode, MySQL JSON): the
    # document as a string.
    if type(v) is not str:
        raise TypeError(f"not a JSON document string: {type(v).__name__}")
    return orjson.loads(v)


def decode_uuid(v: Any) -> Any:
    # io.debezium.data.Uuid (postgresql.adoc UUID).
    if type(v) is not str:
        raise TypeError(f"not a UUID string: {type(v).__name__}")
    return uuid.UUID(v)


def decode_enum(v: Any) -> Any:
    # io.debezium.data.Enum: the label; the `allowed` parameter lists the labels.
    if type(v) is not str:
        raise TypeError(f"not an enum label: {type(v).__name__}")
    return v


def decode_enum_set(v: Any) -> Any:
    # io.debezium.data.EnumSet (mysql.adoc SET): comma-separated labels; '' is the empty set.
    if type(v) is not str:
        raise TypeError(f"not a comma-separated SET string: {type(v).__name__}")
    return v.split(",") if v else []


def decode_bits(v: Any) -> Any:
    # io.debezium.data.Bits (BIT(n>1), BIT VARYING): bytes holding the bits little-endian,
    # n/8 rounded up long; the bit count is the schema's `length` parameter. Kept as bytes.
    return b64_bytes(v)
