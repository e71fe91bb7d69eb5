"""JSON access: the -> and ->> operators and their value functions."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from sqlglot import exp

from replicator.mapping.expr.casts import to_json
from replicator.mapping.expr.nodes import Compiler, Handlers, Node, const
from replicator.mapping.expr.values import json_text, to_text


def json_get(v: Any, key: Any) -> Any:
    if isinstance(key, int) and not isinstance(key, bool):
        if not isinstance(v, dict | list):
            v = [v]  # jsonb stores a scalar as a one-element array, and '5'::jsonb -> 0 shows it
        if isinstance(v, list) and -len(v) <= key < len(v):
            return v[key]
        return None
    if isinstance(v, dict):
        return v.get(to_text(key))
    return None


def json_parse_text(v: Any) -> Any:
    # Some decoders hand json/jsonb columns over as text.
    return to_json(v) if type(v) is str else v


def json_get_text(v: Any, key: Any) -> str | None:
    r = json_get(v, key)
    if r is None or type(r) is str:
        return r
    if type(r) is bool:
        return "true" if r else "false"
    if type(r) is float:
        return format(Decimal(repr(r)), "f") if math.isfinite(r) else json_text(r)
    return to_text(r)


HANDLERS = Handlers()


@HANDLERS.on(exp.JSONExtract, exp.JSONExtractScalar)
def _json(c: Compiler, e: exp.JSONExtract | exp.JSONExtractScalar) -> Node:
    node = c.sub(e)
    if not isinstance(e.this, exp.JSONExtract | exp.JSONExtractScalar):
        node = c.strict(json_parse_text, node)
    path = e.expression
    steps: list[Node] = []
    if isinstance(path, exp.JSONPath):
        for part in path.expressions:
            if isinstance(part, exp.JSONPathRoot):
                continue
            step = part.this
            if not isinstance(part, exp.JSONPathKey | exp.JSONPathSubscript) or not isinstance(step, str | int):
                raise c.unsupported(e)
            steps.append(const(part.this))
    else:
        steps.append(c.compile(path))
    for i, step in enumerate(steps):
        scalar = isinstance(e, exp.JSONExtractScalar) and i == len(steps) - 1
        node = c.strict(json_get_text if scalar else json_get, node, step)
    return node
