"""Record-level failures: ``DebeziumDecodeError`` for callers, ``FieldFailure`` inside."""

from __future__ import annotations

from replicator.sources.debezium.primitives import LogicalValueError

ENVELOPE_HINT = (
    "the value must be a Debezium change envelope; is an SMT such as ExtractNewRecordState "
    "unwrapping it, or is this not a Debezium topic?"
)


class DebeziumDecodeError(ValueError):
    """A record that cannot be decoded; the caller dead-letters it and moves on.

    Names where (topic/partition/offset), what (``field``, e.g. ``after.price``; the
    ``logical_type``), what was expected, and a likely fix (``hint``).
    """

    def __init__(
        self,
        reason: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        field: str | None = None,
        logical_type: str | None = None,
        hint: str = "",
    ) -> None:
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.field = field
        self.logical_type = logical_type
        self.hint = hint
        where = "Debezium record"
        if topic is not None:
            where += f" {topic}"
            if partition is not None:
                where += f"/{partition}"
            if offset is not None:
                where += f"@{offset}"
        what = ""
        if field:
            what = f" field {field!r}"
            if logical_type:
                what += f" ({logical_type})"
        fix = f"; fix: {hint}" if hint else ""
        super().__init__(f"cannot decode {where}:{what} {reason}{fix}")


class FieldFailure(Exception):
    """Internal: carries the failing field up to ``DebeziumDecoder.decode``."""

    def __init__(self, field: str | None, reason: str, hint: str = "", logical: str | None = None) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason
        self.hint = hint
        self.logical = logical


def field_failure_from(image: str, e: LogicalValueError) -> FieldFailure:
    return FieldFailure(f"{image}.{e.field}", e.describe(), e.hint, e.logical)
