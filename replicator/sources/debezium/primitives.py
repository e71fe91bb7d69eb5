"""What every logical-type decoder shares: the ``Decoder``/``Schema`` aliases, the errors a
malformed value may raise (``DECODE_ERRORS``, ``LogicalValueError``) and the primitive
readers (strict ints, base64 BYTES) the decoders are built from."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

Decoder: TypeAlias = Callable[[Any], Any]
Schema: TypeAlias = Mapping[str, Any]

# Exceptions a decoder may raise on a malformed value; anything else is a bug and propagates.
DECODE_ERRORS = (ValueError, TypeError, ArithmeticError, AttributeError, LookupError)


class LogicalValueError(ValueError):
    """One value did not match its schema. ``path`` grows outward as structs re-raise it."""

    def __init__(
        self, path: tuple[str, ...], logical: str, expected: str, value: Any, detail: str = "", hint: str = ""
    ) -> None:
        self.path = path
        self.logical = logical
        self.expected = expected
        self.value = value
        self.detail = detail
        self.hint = hint
        super().__init__(self.describe())

    def within(self, name: str) -> LogicalValueError:
        # Array indices attach to their field ("tags[3]") instead of becoming a path level.
        if self.path and self.path[0].startswith("["):
            path = (name + self.path[0], *self.path[1:])
        else:
            path = (name, *self.path)
        return LogicalValueError(path, self.logical, self.expected, self.value, self.detail, self.hint)

    @property
    def field(self) -> str:
        return ".".join(self.path)

    def describe(self) -> str:
        shown = repr(self.value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        why = f" ({self.detail})" if self.detail else ""
        return f"expected {self.expected}, got {shown}{why}"


# --- primitive helpers ------------------------------------------------------------------------


def require_int(v: Any) -> int:
    # bool is an int subclass; a JSON true where epoch days are due is a malformed record.
    if type(v) is not int:
        raise TypeError(f"not an integer: {type(v).__name__}")
    return v


def b64_bytes(v: Any) -> bytes:
    """Kafka Connect BYTES in the JSON converter: standard base64 (``binary.handling.mode=bytes``)."""
    if type(v) is not str:
        raise TypeError(f"not a base64 string: {type(v).__name__}")
    return base64.b64decode(v, validate=True)
