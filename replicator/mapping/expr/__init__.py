"""Compile mapping SQL expressions (PostgreSQL dialect) into plain Python closures: the public API."""

# Layout, lowest layer first (each module imports only from the ones above it):
#   errors       MappingError, ExprEvalError
#   values       Python value model (Float4, numeric context) and PostgreSQL text output
#   nodes        compiled Node, constants, the Compiler interface and per-module handler tables
#   casts        input parsing, CAST/::, typing of untyped string literals
#   numbers, strings, datetimes, json, comparisons, logic
#                value functions for one area plus the handlers that compile it
#   compiler     _Compiler core (structure, NULL strictness, folding), the dispatch table
#                built from every handler module, Expr and compile_expr/compile_predicate

from replicator.mapping.expr.compiler import Expr, compile_expr, compile_predicate
from replicator.mapping.expr.errors import ExprEvalError, MappingError
from replicator.mapping.expr.nodes import Context

__all__ = ["Context", "Expr", "ExprEvalError", "MappingError", "compile_expr", "compile_predicate"]
