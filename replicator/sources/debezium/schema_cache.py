"""Plans cached by schema text, and the record parse that uses them.

Schemas repeat verbatim on every record of a table, so the decoder caches what it builds
from a schema under the schema's exact JSON text. On a hit only the payload is parsed: the
schema text, usually most of the record, is skipped (see ``SchemaCache``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import orjson

from replicator.sources.debezium.errors import FieldFailure
from replicator.sources.debezium.primitives import DECODE_ERRORS, Schema

P = TypeVar("P")


class SchemaCache(Generic[P]):
    """Plans by schema text, and the parse that uses them.

    Kafka Connect's JsonConverter writes ``{"schema":<schema>,"payload":<payload>}``
    compactly, schema first. The bytes before ``,"payload":`` are then the schema's exact
    text and the cache key; on a hit only the payload is parsed. A prefix is admitted to the
    cache only after checking it parses to the very schema of the full parse, so a
    ``,"payload":`` occurring inside a schema can never split a record wrongly. Records
    written differently (spaces, other key order) take the full parse and a cache keyed by
    the re-serialised schema.
    """

    _HEAD = b'{"schema":'
    _SPLIT = b',"payload":'

    def __init__(self, build: Callable[[Schema | None], P], limit: int = 1024) -> None:
        self.build = build
        self.limit = limit
        self.by_prefix: dict[bytes, P] = {}
        self.by_text: dict[bytes, P] = {}

    def parse(self, raw: bytes) -> tuple[Any, P | None]:
        """(payload, plan); plan None when the record carries no schema."""
        i = -1
        if raw.startswith(self._HEAD):
            i = raw.find(self._SPLIT, 10)
            if i > 0:
                plan = self.by_prefix.get(raw[:i])
                if plan is not None:
                    j = raw.rfind(b"}")
                    try:
                        return orjson.loads(memoryview(raw)[i + 11 : j]), plan
                    except orjson.JSONDecodeError:
                        pass  # let the full parse report the error precisely
        doc = orjson.loads(raw)
        if type(doc) is not dict or len(doc) != 2 or "schema" not in doc or "payload" not in doc:
            return doc, None
        schema = doc["schema"]
        if schema is None:
            return doc["payload"], None
        if type(schema) is not dict:
            raise FieldFailure("schema", f"expected a Kafka Connect schema object, got {type(schema).__name__}")
        if i > 0 and self._prefix_is_schema(raw, i, schema):
            plan = self.by_prefix.get(raw[:i])
            if plan is None:
                plan = self._store(self.by_prefix, raw[:i], schema)
        else:
            text = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
            plan = self.by_text.get(text)
            if plan is None:
                plan = self._store(self.by_text, text, schema)
        return doc["payload"], plan

    @staticmethod
    def _prefix_is_schema(raw: bytes, i: int, schema: Schema) -> bool:
        try:
            return bool(orjson.loads(raw[10:i]) == schema)
        except orjson.JSONDecodeError:
            return False

    def _store(self, cache: dict[bytes, P], key: bytes, schema: Schema) -> P:
        try:
            plan = self.build(schema)
        except DECODE_ERRORS as e:
            raise FieldFailure(
                "schema",
                f"is not a usable Kafka Connect schema ({type(e).__name__}: {e})",
                "check the converter's schema output (schemas.enable=true, JsonConverter)",
            ) from e
        if len(cache) >= self.limit:
            cache.clear()  # schemas change rarely; a full cache means churn, start over
        cache[key] = plan
        return plan
