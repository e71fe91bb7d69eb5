"""What handler modules share with the compiler: the compiled Node, constants and the Compiler interface."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlglot import exp

from replicator.mapping.expr.errors import MappingError

Context = Mapping[str | None, Mapping[str, Any] | None]
# Mapping keys are invariant: accept schemas typed with only the base row or only aliases too.
Schema = Mapping[str | None, Collection[str]] | Mapping[None, Collection[str]] | Mapping[str, Collection[str]]
Fn = Callable[[Context], Any]


@dataclass(frozen=True, slots=True)
class Node:
    fn: Fn
    const: bool = False
    value: Any = None
    untyped: bool = False  # a bare string literal: PG types it after what it meets


def const_fn(v: Any) -> Fn:
    return lambda ctx: v


def const(v: Any, untyped: bool = False) -> Node:
    return Node(const_fn(v), True, v, untyped)


class Compiler(Protocol):
    """The compiler as handlers see it (implemented by compiler._Compiler)."""

    def error(self, message: str, hint: str | None = None) -> MappingError: ...
    def compile(self, e: exp.Expr) -> Node: ...
    def unsupported(self, e: exp.Expr) -> MappingError: ...
    def fold(self, node: Node, *parts: Node) -> Node: ...
    def strict(self, f: Callable[..., Any], *args: Node) -> Node: ...
    def binary(self, f: Callable[[Any, Any], Any], left: Node, right: Node) -> Node: ...
    def sub(self, e: exp.Expr, key: str = "this") -> Node: ...
    def opt(self, e: exp.Expr, key: str) -> Node | None: ...
    def constant_text(self, e: exp.Expr, what: str) -> str: ...


Handler = Callable[[Compiler, Any], Node]


class Handlers(dict[type[exp.Expr], Handler]):
    """One module's handlers by sqlglot node type; the compiler merges every module's table."""

    def on(self, *types: type[exp.Expr]) -> Callable[[Handler], Any]:
        def register(h: Handler) -> Any:
            for t in types:
                self[t] = h
            return h

        return register
