"""A small SOQL parser and evaluator for the subset a connector sends.

Follows the SOQL and SOSL Reference (developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta):
"SOQL SELECT Syntax", "fieldExpression Syntax", "Comparison Operators", "Logical Operators",
"Quoted String Escape Sequences", "Date Formats and Date Literals", "ORDER BY", "LIMIT",
"OFFSET". Implemented, exactly::

    SELECT field [, field ...] FROM sObject
    [WHERE condition]
    [ORDER BY field [ASC|DESC] [NULLS FIRST|NULLS LAST] [, ...]]
    [LIMIT n] [OFFSET n]

where a condition is ``field op value``, ``field [NOT] IN (value, ...)``, ``field LIKE 'pattern'``,
``NOT condition`` or a parenthesised condition, joined by AND or OR; as in SOQL, AND and OR
cannot be mixed at one level without parentheses. Operators: ``= != <> < > <= >=``. Values:
``'strings'`` with backslash escapes, numbers, ``true``/``false``, ``null``, unquoted datetimes
(``2026-12-05T14:20:35.000Z``, ``+hh:mm``/``-hh:mm`` offsets) and dates (``2026-12-05``).

Semantics as documented: keywords and field names are case-insensitive; text comparisons,
LIKE and ORDER BY on text ignore case; Id comparisons compare the 18-char id strings; a
null never satisfies ``< > <= >=`` and ``!=`` is true for nulls; ORDER BY puts nulls first
ascending and last descending unless told; OFFSET is at most 2000.

Not implemented (answered MALFORMED_QUERY): relationship paths (``Account.Name``), aggregate
functions and GROUP BY, ``FIELDS()``, subqueries, INCLUDES/EXCLUDES, named date literals
(``TODAY``, ``LAST_N_DAYS:n``), FOR UPDATE/VIEW, USING SCOPE, WITH.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from .schema import (
    ID_TYPES,
    NUMBER_TYPES,
    SOBJECTS,
    TEXT_TYPES,
    Field,
    SObjectType,
    format_datetime,
    normalize_id,
    parse_datetime,
)

MAX_OFFSET = 2000
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}
_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:\d{2}))
    |(?P<date>\d{4}-\d{2}-\d{2}(?![\w:]))
    |(?P<number>[+-]?\d+(?:\.\d+)?(?![\w]))
    |(?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
    |(?P<op>!=|<>|<=|>=|=|<|>)
    |(?P<punct>[(),])
    |(?P<string>')""",
    re.VERBOSE,
)
_KEYWORDS = frozenset(
    [
        "SELECT",
        "FROM",
        "WHERE",
        "AND",
        "OR",
        "NOT",
        "IN",
        "LIKE",
        "ORDER",
        "BY",
        "ASC",
        "DESC",
        "NULLS",
        "FIRST",
        "LAST",
        "LIMIT",
        "OFFSET",
        "NULL",
        "TRUE",
        "FALSE",
    ]
)


class QueryError(Exception):
    """MALFORMED_QUERY, INVALID_FIELD, INVALID_TYPE...: the message points at the column like Salesforce's."""

    def __init__(self, code: str, problem: str, query: str = "", column: int | None = None) -> None:
        if column is not None:
            message = f"\n{query}\n{' ' * column}^\nERROR at Row:1:Column:{column + 1}\n{problem}"
        else:
            message = problem
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Token:
    kind: str  # keyword, ident, string, number, datetime, date, op, punct, eof
    text: str
    pos: int
    value: Any = None


def tokenize(query: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(query):
        match = _TOKEN.match(query, pos)
        if match is None:
            raise QueryError("MALFORMED_QUERY", f"unexpected token: '{query[pos]}'", query, pos)
        kind = match.lastgroup or ""
        if kind == "ws":
            pos = match.end()
            continue
        if kind == "string":
            value, end = _string(query, pos)
            tokens.append(Token("string", query[pos:end], pos, value))
            pos = end
            continue
        text = match.group()
        if kind == "ident" and text.upper() in _KEYWORDS:
            tokens.append(Token("keyword", text.upper(), pos))
        else:
            tokens.append(Token(kind, text, pos))
        pos = match.end()
    tokens.append(Token("eof", "<EOF>", len(query)))
    return tokens


def _string(query: str, start: int) -> tuple[tuple[str, str], int]:
    """((value, LIKE regex), index after the closing quote) of the quoted string at `start`.

    ``\\%`` and ``\\_`` stand for a literal percent sign and underscore; unescaped, they are
    LIKE wildcards, so the regex is built while the escapes are still visible."""
    plain: list[str] = []
    like: list[str] = []
    pos = start + 1
    while pos < len(query):
        ch = query[pos]
        if ch == "'":
            return ("".join(plain), "".join(like)), pos + 1
        if ch == "\\":
            nxt = query[pos + 1 : pos + 2]
            if nxt in _ESCAPES or nxt.lower() in ("n", "r", "t", "b", "f"):
                char = _ESCAPES[nxt if nxt in _ESCAPES else nxt.lower()]
            elif nxt in ("%", "_"):
                char = nxt
            else:
                raise QueryError(
                    "MALFORMED_QUERY", f"Invalid string literal: Illegal escape sequence \\{nxt}", query, pos
                )
            plain.append(char)
            like.append(re.escape(char))
            pos += 2
            continue
        plain.append(ch)
        like.append({"%": ".*", "_": "."}.get(ch) or re.escape(ch))
        pos += 1
    raise QueryError("MALFORMED_QUERY", "unterminated string literal", query, start)


# ---------------------------------------------------------------- syntax tree


@dataclass
class Cmp:
    field: Field
    op: str  # = != < > <= >= in notin like
    value: Any  # comparison key, a list of keys for in/notin, a compiled regex for like


@dataclass
class BoolOp:
    op: str  # AND / OR / NOT
    items: list[Any]


@dataclass
class Order:
    field: Field
    descending: bool
    nulls_first: bool


@dataclass
class Query:
    sobject: SObjectType
    fields: list[Field]
    where: Cmp | BoolOp | None
    order: list[Order]
    limit: int | None
    offset: int


class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = tokenize(query)
        self.i = 0
        self.sobject: SObjectType | None = None

    # helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def fail(self, problem: str | None = None, code: str = "MALFORMED_QUERY", tok: Token | None = None) -> QueryError:
        tok = tok or self.tok
        return QueryError(code, problem or f"unexpected token: '{tok.text}'", self.query, tok.pos)

    def keyword(self, *words: str) -> bool:
        if self.tok.kind == "keyword" and self.tok.text in words:
            self.i += 1
            return True
        return False

    def expect(self, word: str) -> None:
        if not self.keyword(word):
            raise self.fail()

    def punct(self, char: str) -> bool:
        if self.tok.kind == "punct" and self.tok.text == char:
            self.i += 1
            return True
        return False

    # grammar
    def parse(self) -> Query:
        self.expect("SELECT")
        names: list[Token] = [self.ident()]
        while self.punct(","):
            names.append(self.ident())
        self.expect("FROM")
        obj = self.ident()
        sobject = SOBJECTS.get(next((n for n in SOBJECTS if n.lower() == obj.text.lower()), ""))
        if sobject is None:
            raise self.fail(
                f"sObject type '{obj.text}' is not supported. If you are attempting to use a custom object, be sure "
                "to append the '__c' after the entity name. Please reference your WSDL or the describe call for "
                "the appropriate names.",
                "INVALID_TYPE",
                obj,
            )
        self.sobject = sobject
        fields: list[Field] = []
        for name in names:
            f = self.field(name)
            if f in fields:
                raise self.fail(f"duplicate field selected: {f.name}", tok=name)
            fields.append(f)
        where = self.condition() if self.keyword("WHERE") else None
        order: list[Order] = []
        if self.keyword("ORDER"):
            self.expect("BY")
            order.append(self.order_item())
            while self.punct(","):
                order.append(self.order_item())
        limit = self.integer() if self.keyword("LIMIT") else None
        offset = 0
        if self.keyword("OFFSET"):
            at = self.tok
            offset = self.integer()
            if offset > MAX_OFFSET:
                raise self.fail(f"Maximum SOQL offset allowed is {MAX_OFFSET}", "NUMBER_OUTSIDE_VALID_RANGE", at)
        if self.tok.kind != "eof":
            raise self.fail()
        return Query(sobject, fields, where, order, limit, offset)

    def ident(self) -> Token:
        tok = self.tok
        if tok.kind != "ident":
            raise self.fail()
        self.i += 1
        return tok

    def field(self, tok: Token) -> Field:
        assert self.sobject is not None
        if "." in tok.text:
            raise self.fail(
                f"Didn't understand relationship '{tok.text.split('.')[0]}' in field path: relationship queries "
                "are not supported by this sandbox",
                "INVALID_FIELD",
                tok,
            )
        f = self.sobject.field(tok.text)
        if f is None:
            raise self.fail(
                f"No such column '{tok.text}' on entity '{self.sobject.name}'. If you are attempting to use a custom "
                "field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the "
                "describe call for the appropriate names.",
                "INVALID_FIELD",
                tok,
            )
        return f

    def integer(self) -> int:
        tok = self.tok
        if tok.kind != "number" or not tok.text.isdigit():
            raise self.fail()
        self.i += 1
        return int(tok.text)

    def order_item(self) -> Order:
        f = self.field(self.ident())
        descending = False
        if self.keyword("DESC"):
            descending = True
        else:
            self.keyword("ASC")
        nulls_first = not descending
        if self.keyword("NULLS"):
            if self.keyword("FIRST"):
                nulls_first = True
            else:
                self.expect("LAST")
                nulls_first = False
        return Order(f, descending, nulls_first)

    def condition(self) -> Cmp | BoolOp:
        first = self.unary()
        if self.tok.kind != "keyword" or self.tok.text not in ("AND", "OR"):
            return first
        joiner = self.tok.text
        items = [first]
        while self.keyword(joiner):
            items.append(self.unary())
        # The other joiner is left unconsumed, so the caller fails on it: SOQL needs
        # parentheses to mix AND and OR at one level.
        return BoolOp(joiner, items)

    def unary(self) -> Cmp | BoolOp:
        if self.keyword("NOT"):
            return BoolOp("NOT", [self.unary()])
        if self.punct("("):
            inner = self.condition()
            if not self.punct(")"):
                raise self.fail()
            return inner
        return self.comparison()

    def comparison(self) -> Cmp:
        f = self.field(self.ident())
        if self.tok.kind == "op":
            op = "!=" if self.tok.text == "<>" else self.tok.text
            self.i += 1
            return Cmp(f, op, self.value(f, allow_null=True))
        if self.keyword("LIKE"):
            tok = self.tok
            if tok.kind != "string":
                raise self.fail()
            if f.type not in TEXT_TYPES and f.type not in ID_TYPES:
                raise self.fail(f"invalid operator on {f.type} field: LIKE", "INVALID_QUERY_FILTER_OPERATOR", tok)
            self.i += 1
            return Cmp(f, "like", re.compile(tok.value[1], re.IGNORECASE | re.DOTALL))
        negated = self.keyword("NOT")
        if self.keyword("IN"):
            if not self.punct("("):
                raise self.fail()
            values = [self.value(f, allow_null=True)]
            while self.punct(","):
                values.append(self.value(f, allow_null=True))
            if not self.punct(")"):
                raise self.fail()
            return Cmp(f, "notin" if negated else "in", values)
        raise self.fail()

    def value(self, f: Field, *, allow_null: bool) -> Any:
        """The literal at the cursor as a comparison key for field `f`, type-checked like SOQL does."""
        tok = self.tok
        self.i += 1
        if tok.kind == "keyword" and tok.text == "NULL" and allow_null:
            return None
        kind = _literal_kind(tok)
        if kind is None:
            self.i -= 1
            raise self.fail()
        expected = _expected_kind(f)
        if kind != expected:
            quoting = "should be enclosed in quotes" if expected == "string" else "should not be enclosed in quotes"
            raise self.fail(
                f"value of filter criterion for field '{f.name}' must be of type {_TYPE_NAMES[expected]} and {quoting}",
                "INVALID_FIELD",
                tok,
            )
        if kind == "string":
            if f.type in ID_TYPES:
                full = normalize_id(tok.value[0])
                if full is None:
                    raise self.fail(f"invalid ID field: {tok.value[0]}", "INVALID_QUERY_FILTER_OPERATOR", tok)
                return full
            return tok.value[0].casefold()
        if kind == "number":
            return float(tok.text)
        if kind == "boolean":
            return tok.text == "TRUE"
        if kind == "datetime":
            parsed = parse_datetime(tok.text)
            if parsed is None:
                raise self.fail(f"invalid datetime: {tok.text}", tok=tok)
            # Stored datetimes are fixed-width UTC text, so text order is time order.
            return format_datetime(parsed)
        try:
            return date.fromisoformat(tok.text).isoformat()
        except ValueError:
            raise self.fail(f"invalid date: {tok.text}", tok=tok) from None


_TYPE_NAMES = {"string": "string", "number": "number", "boolean": "boolean", "datetime": "dateTime", "date": "date"}


def _literal_kind(tok: Token) -> str | None:
    if tok.kind in ("string", "number", "datetime", "date"):
        return tok.kind
    if tok.kind == "keyword" and tok.text in ("TRUE", "FALSE"):
        return "boolean"
    return None


def _expected_kind(f: Field) -> str:
    if f.type in NUMBER_TYPES:
        return "number"
    if f.type in ("boolean", "datetime", "date"):
        return f.type
    return "string"


def parse(query: str) -> Query:
    return _Parser(query).parse()


# ---------------------------------------------------------------- evaluation


def key(f: Field, value: Any) -> Any:
    """A stored value as a comparison key (None stays None)."""
    if value is None:
        return None
    if f.type in TEXT_TYPES:
        return str(value).casefold()
    if f.type in NUMBER_TYPES:
        return float(value)
    return value


def matches(node: Cmp | BoolOp | None, record: dict[str, Any]) -> bool:
    if node is None:
        return True
    if isinstance(node, BoolOp):
        if node.op == "AND":
            return all(matches(item, record) for item in node.items)
        if node.op == "OR":
            return any(matches(item, record) for item in node.items)
        return not matches(node.items[0], record)
    have = key(node.field, record.get(node.field.name))
    want = node.value
    if node.op == "=":
        return bool(have == want)
    if node.op == "!=":
        return bool(have != want)
    if node.op == "in":
        return have in want
    if node.op == "notin":
        return have not in want
    if node.op == "like":
        return have is not None and want.fullmatch(str(record.get(node.field.name))) is not None
    if have is None or want is None:
        return False
    if node.op == "<":
        return bool(have < want)
    if node.op == ">":
        return bool(have > want)
    if node.op == "<=":
        return bool(have <= want)
    return bool(have >= want)


def execute(query: Query, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The matching records, ordered, limited and offset (records are not copied)."""
    rows = [r for r in records if matches(query.where, r)]
    rows.sort(key=lambda r: r["Id"])
    for order in reversed(query.order):
        present = [r for r in rows if r.get(order.field.name) is not None]
        absent = [r for r in rows if r.get(order.field.name) is None]
        present.sort(key=lambda r, f=order.field: key(f, r[f.name]), reverse=order.descending)  # type: ignore[misc]
        rows = absent + present if order.nulls_first else present + absent
    rows = rows[query.offset :]
    return rows if query.limit is None else rows[: query.limit]
