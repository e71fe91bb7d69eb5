"""Text operators and functions: ||, LIKE/ILIKE, CONCAT, UPPER/LOWER, TRIM, SUBSTRING, PAD and friends."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from sqlglot import exp

from replicator.mapping.expr.casts import to_int
from replicator.mapping.expr.errors import ExprEvalError
from replicator.mapping.expr.nodes import Compiler, Context, Handlers, Node, const
from replicator.mapping.expr.values import to_text


def _case_map(s: str, f: Callable[[str], str]) -> str:
    r = f(s)
    if len(r) == len(s):
        return r
    # libc's towupper() maps one character to one ('ß' stays 'ß'); str.upper() may not.
    return "".join(m if len(m := f(c)) == 1 else c for c in s)


def upper(s: Any) -> str:
    return _case_map(to_text(s), str.upper)


def lower(s: Any) -> str:
    s = to_text(s)
    r = s.lower()
    # Only 'İ' lowercases to two characters; its single-character mapping is 'i'.
    return r if len(r) == len(s) else "".join(c.lower()[0] for c in s)


_HAS_DIGIT = re.compile(r"\d")


def initcap(s: Any) -> str:
    s = to_text(s)
    if s.isascii() and not _HAS_DIGIT.search(s):
        return s.title()  # same word boundaries as PG when there are only ASCII letters to case
    out = []
    in_word = False
    for c in s:
        m = c.lower()[0] if in_word else c.upper()  # lower()[0]: 'İ' -> 'i', as towlower() does
        out.append(m if len(m) == 1 else c)
        in_word = c.isalnum()
    return "".join(out)


def trim(s: Any, chars: str | None, where: str) -> str:
    s = to_text(s)
    chars = " " if chars is None else chars
    if where == "LEADING":
        return s.lstrip(chars)
    if where == "TRAILING":
        return s.rstrip(chars)
    return s.strip(chars)


def substring(s: Any, start: Any, count: Any = None) -> str:
    s = to_text(s)
    start = to_int(start, "integer")
    begin = max(start, 1)
    if count is None:
        return s[begin - 1 :]
    count = to_int(count, "integer")
    if count < 0:
        raise ExprEvalError("negative substring length not allowed")
    end = start + count
    return s[begin - 1 : end - 1] if end > begin else ""


def replace(s: Any, old: Any, new: Any) -> str:
    s, old = to_text(s), to_text(old)
    return s.replace(old, to_text(new)) if old else s


def left(s: Any, n: Any) -> str:
    return to_text(s)[: to_int(n, "integer")]


def right(s: Any, n: Any) -> str:
    s, n = to_text(s), to_int(n, "integer")
    if n >= 0:
        return s[len(s) - n :] if n else ""
    return s[-n:]


def split_part(s: Any, delim: Any, n: Any) -> str:
    s, delim, n = to_text(s), to_text(delim), to_int(n, "integer")
    if n == 0:
        raise ExprEvalError("field position must not be zero")
    if not s:
        return ""
    parts = s.split(delim) if delim else [s]
    idx = n - 1 if n > 0 else len(parts) + n
    return parts[idx] if 0 <= idx < len(parts) else ""


def strpos(s: Any, sub: Any) -> int:
    return to_text(s).find(to_text(sub)) + 1


def pad(s: Any, length: Any, fill: Any, is_left: bool) -> str:
    s, n = to_text(s), to_int(length, "integer")
    fill = " " if fill is None else to_text(fill)
    if n <= 0:
        return ""
    if len(s) >= n or not fill:
        return s[:n]
    padding = (fill * ((n - len(s)) // len(fill) + 1))[: n - len(s)]
    return padding + s if is_left else s + padding


@lru_cache(maxsize=512)
def like_regex(pattern: str, escape: str | None) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if escape and c == escape:
            i += 1
            if i == len(pattern):
                raise ExprEvalError("LIKE pattern must not end with escape character")
            out.append(re.escape(pattern[i]))
        elif c == "%":
            out.append(".*")
        elif c == "_":
            out.append(".")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _dpipe(a: Any, b: Any) -> str:
    return to_text(a) + to_text(b)


# ---------------------------------------------------------------- handlers

HANDLERS = Handlers()
HANDLERS.on(exp.DPipe)(lambda c, e: c.strict(_dpipe, c.sub(e), c.sub(e, "expression")))
HANDLERS.on(exp.Upper)(lambda c, e: c.strict(upper, c.sub(e)))
HANDLERS.on(exp.Lower)(lambda c, e: c.strict(lower, c.sub(e)))
HANDLERS.on(exp.Initcap)(lambda c, e: c.strict(initcap, c.sub(e)))  # sqlglot adds a delimiter list PG lacks
HANDLERS.on(exp.Length)(lambda c, e: c.strict(lambda s: len(to_text(s)), c.sub(e)))
HANDLERS.on(exp.Replace)(lambda c, e: c.strict(replace, c.sub(e), c.sub(e, "expression"), c.sub(e, "replacement")))
HANDLERS.on(exp.Left)(lambda c, e: c.strict(left, c.sub(e), c.sub(e, "expression")))
HANDLERS.on(exp.Right)(lambda c, e: c.strict(right, c.sub(e), c.sub(e, "expression")))
HANDLERS.on(exp.SplitPart)(lambda c, e: c.strict(split_part, c.sub(e), c.sub(e, "delimiter"), c.sub(e, "part_index")))


@HANDLERS.on(exp.Like, exp.ILike)
def _like(c: Compiler, e: exp.Like | exp.ILike, escape: str | None = "\\") -> Node:
    x, pat = c.sub(e), c.sub(e, "expression")
    negate = bool(e.args.get("negate"))
    # ILIKE lower-cases both sides first, as PostgreSQL does for multibyte encodings.
    fold = lower if isinstance(e, exp.ILike) else to_text
    if pat.const and pat.value is not None:
        try:
            rx = like_regex(fold(pat.value), escape)
        except ExprEvalError as ex:
            raise c.error(str(ex)) from None
        return c.strict(lambda s: (rx.fullmatch(fold(s)) is not None) != negate, x)

    def dynamic(s: Any, p: Any) -> bool:
        return (like_regex(fold(p), escape).fullmatch(fold(s)) is not None) != negate

    return c.strict(dynamic, x, pat)


@HANDLERS.on(exp.Escape)
def _escape(c: Compiler, e: exp.Escape) -> Node:
    if not isinstance(e.this, exp.Like | exp.ILike):
        raise c.unsupported(e)
    esc = c.sub(e, "expression")
    if not esc.const or (esc.value is not None and len(esc.value) > 1):
        raise c.error("ESCAPE must be a constant of at most one character")
    return _like(c, e.this, esc.value or None)


@HANDLERS.on(exp.Concat)
def _concat(c: Compiler, e: exp.Concat) -> Node:
    fns = [c.compile(x).fn for x in e.expressions]
    return Node(lambda ctx: "".join(to_text(v) for f in fns if (v := f(ctx)) is not None))


@HANDLERS.on(exp.ConcatWs)
def _concat_ws(c: Compiler, e: exp.ConcatWs) -> Node:
    sep, *fns = [c.compile(x).fn for x in e.expressions]

    def g(ctx: Context) -> str | None:
        s = sep(ctx)
        if s is None:
            return None
        return to_text(s).join(to_text(v) for f in fns if (v := f(ctx)) is not None)

    return Node(g)


@HANDLERS.on(exp.Trim)
def _trim(c: Compiler, e: exp.Trim) -> Node:
    where = str(e.args.get("position") or "BOTH").upper()
    chars = c.opt(e, "expression")
    if chars is None:
        return c.strict(lambda s: trim(s, None, where), c.sub(e))
    return c.strict(lambda s, ch: trim(s, to_text(ch), where), c.sub(e), chars)


@HANDLERS.on(exp.Substring)
def _substring(c: Compiler, e: exp.Substring) -> Node:
    start = c.opt(e, "start") or const(1)
    if start.untyped:
        raise c.error("SUBSTRING(x FROM pattern) (regular expressions) is not supported")
    length = c.opt(e, "length")
    if length is None:
        return c.strict(substring, c.sub(e), start)
    return c.strict(substring, c.sub(e), start, length)


@HANDLERS.on(exp.StrPosition)
def _strpos(c: Compiler, e: exp.StrPosition) -> Node:
    if e.args.get("position") or e.args.get("occurrence"):
        raise c.unsupported(e)
    return c.strict(strpos, c.sub(e), c.sub(e, "substr"))


@HANDLERS.on(exp.Pad)
def _pad(c: Compiler, e: exp.Pad) -> Node:
    is_left = bool(e.args.get("is_left"))
    fill = c.opt(e, "fill_pattern")
    if fill is None:
        return c.strict(lambda s, n: pad(s, n, None, is_left), c.sub(e), c.sub(e, "expression"))
    return c.strict(lambda s, n, f: pad(s, n, f, is_left), c.sub(e), c.sub(e, "expression"), fill)
