"""Decimal logical types: Connect ``Decimal``, Debezium ``VariableScaleDecimal`` and decimals
sent as strings under ``decimal.handling.mode=string``."""

from __future__ import annotations

from datetime import tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from replicator.sources.debezium.primitives import Decoder, Schema, b64_bytes, require_int


def unscaled_to_decimal(raw: bytes, scale: int) -> Decimal:
    """Big-endian two's-complement unscaled integer + scale → exact Decimal.

    Built from a string so no decimal context (28 digits by default) can round it; the
    scale survives (``0E-2`` stays ``Decimal('0.00')``), as NUMERIC(p, s) keeps it.
    """
    n = int.from_bytes(raw, "big", signed=True)
    return Decimal(f"{n}E{-scale}")


def decimal_factory(schema: Schema, tz: tzinfo) -> Decoder:
    # org.apache.kafka.connect.data.Decimal (postgresql.adoc "Decimal types", mysql.adoc
    # "Decimal types", sqlserver.adoc "Decimal values"): BYTES with the `scale` parameter,
    # a string in the JSON, e.g. {"scale": "2", "connect.decimal.precision": "10"}.
    params = schema.get("parameters") or {}
    try:
        scale = int(params.get("scale", 0))
    except (TypeError, ValueError):
        raise ValueError(f"Decimal schema has a non-integer scale parameter {params.get('scale')!r}") from None

    def decode(v: Any) -> Any:
        if type(v) is str:
            # No fallback to parsing the text as a decimal: '1234' is also valid base64, so
            # guessing would silently turn some values into other numbers.
            return unscaled_to_decimal(b64_bytes(v), scale)
        if type(v) is int:
            # JsonConverter decimal.format=NUMERIC writes the number itself.
            return Decimal(v)
        if type(v) is float:
            # decimal.format=NUMERIC parsed by orjson: exact up to float precision only
            # (~17 significant digits); repr gives the shortest string that round-trips.
            return Decimal(repr(v))
        raise TypeError(f"not a Decimal encoding: {type(v).__name__}")

    return decode


def decode_variable_scale_decimal(v: Any) -> Any:
    # io.debezium.data.VariableScaleDecimal (postgresql.adoc: NUMERIC/DECIMAL without scale
    # constraints): STRUCT {scale: INT32, value: BYTES unscaled}.
    if type(v) is not dict:
        raise TypeError("not a {scale, value} object")
    raw = v.get("value")
    if raw is None:  # PostgreSQL NaN/Infinity have no unscaled form; Debezium leaves it out.
        return None
    return unscaled_to_decimal(b64_bytes(raw), require_int(v["scale"]))


def decode_decimal_string(v: Any) -> Any:
    # decimal.handling.mode=string; NaN arrives as 'NAN' (postgresql.adoc) → Decimal('NaN').
    # Only reachable when the schema names the source column type: without it a string
    # decimal is indistinguishable from text and stays str.
    if type(v) is not str:
        return v
    try:
        return Decimal(v)
    except InvalidOperation:
        return v
