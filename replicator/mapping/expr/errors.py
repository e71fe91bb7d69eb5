"""The two error types: MappingError (a mapping that cannot work) and ExprEvalError (a row that fails)."""

from __future__ import annotations


class MappingError(ValueError):
    """A mapping that cannot work, found before any row is processed."""

    def __init__(self, location: str, message: str, hint: str | None = None) -> None:
        self.location, self.message, self.hint = location, message, hint
        super().__init__(f"{location}: {message}" + (f"\n  hint: {hint}" if hint else ""))


class ExprEvalError(ValueError):
    """A row made an expression fail (division by zero, bad cast input, ...)."""
