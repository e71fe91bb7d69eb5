"""Evaluating a CRM search request body against records.

Follows "Search the CRM" (developers.hubspot.com/docs/guides/api/crm/search): ``filterGroups`` are
ORed and the filters of a group ANDed; operators EQ, NEQ, LT, LTE, GT, GTE, BETWEEN (``value`` and
``highValue``), IN / NOT_IN (``values``), HAS_PROPERTY, NOT_HAS_PROPERTY, CONTAINS_TOKEN,
NOT_CONTAINS_TOKEN; string comparisons ignore case; date properties compare as epoch milliseconds
(filters may give them as ms or ISO 8601); one sort (``propertyName`` + ``direction``); at most 200
results per page; a query pages through at most 10,000 results.

Filter-count limits: the page's "Limitations" section says at most five filterGroups, six filters
per group and 18 filters in all; a developer changelog ("Expanded filtering capabilities", 2024)
raised them to 5 / 10 / 25. The sandbox keeps the stricter numbers, so a client that passes here
passes there.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from .schema import to_epoch_ms

MAX_FILTER_GROUPS = 5
MAX_FILTERS_PER_GROUP = 6
MAX_FILTERS = 18
MAX_PAGE = 200

OPERATORS = frozenset(
    {
        "EQ",
        "NEQ",
        "LT",
        "LTE",
        "GT",
        "GTE",
        "BETWEEN",
        "IN",
        "NOT_IN",
        "HAS_PROPERTY",
        "NOT_HAS_PROPERTY",
        "CONTAINS_TOKEN",
        "NOT_CONTAINS_TOKEN",
    }
)


class SearchError(Exception):
    """A search body HubSpot answers 400 VALIDATION_ERROR."""


def check_limits(filter_groups: Any) -> list[dict[str, Any]]:
    """The filter groups, validated for shape and the documented limits."""
    if filter_groups is None:
        return []
    if not isinstance(filter_groups, list):
        raise SearchError("filterGroups must be a list of {filters: [...]} objects")
    if len(filter_groups) > MAX_FILTER_GROUPS:
        raise SearchError(
            f"Too many filter groups: {len(filter_groups)}. A search request may contain at most "
            f"{MAX_FILTER_GROUPS} filterGroups."
        )
    total = 0
    for index, group in enumerate(filter_groups):
        filters = group.get("filters") if isinstance(group, dict) else None
        if not isinstance(filters, list):
            raise SearchError(f"filterGroups[{index}].filters must be a list")
        if len(filters) > MAX_FILTERS_PER_GROUP:
            raise SearchError(
                f"Too many filters in filterGroups[{index}]: {len(filters)}. A filter group may contain at most "
                f"{MAX_FILTERS_PER_GROUP} filters."
            )
        total += len(filters)
        for f_index, flt in enumerate(filters):
            where = f"filterGroups[{index}].filters[{f_index}]"
            if not isinstance(flt, dict) or not isinstance(flt.get("propertyName"), str):
                raise SearchError(f"{where} needs a propertyName")
            operator = flt.get("operator", "EQ")
            if operator not in OPERATORS:
                raise SearchError(f"{where}: unknown operator {operator!r}; use one of {sorted(OPERATORS)}")
            if operator in {"IN", "NOT_IN"} and not isinstance(flt.get("values"), list):
                raise SearchError(f"{where}: operator {operator} needs a 'values' list")
            if operator == "BETWEEN" and ("value" not in flt or "highValue" not in flt):
                raise SearchError(f"{where}: operator BETWEEN needs 'value' and 'highValue'")
            if operator not in {"IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY"} and "value" not in flt:
                raise SearchError(f"{where}: operator {operator} needs a 'value'")
    if total > MAX_FILTERS:
        raise SearchError(f"Too many filters: {total}. A search request may contain at most {MAX_FILTERS} filters.")
    return filter_groups


def _key(kind: str, raw: Any) -> Any:
    """A comparable form of a property or filter value for a property type; None if not comparable."""
    if raw is None:
        return None
    text = str(raw).lower() if isinstance(raw, bool) else str(raw)
    if kind == "number":
        try:
            return Decimal(text)
        except InvalidOperation:
            return None
    if kind in {"datetime", "date"}:
        return to_epoch_ms(text)
    return text.lower()


def matches(properties: dict[str, str], groups: list[dict[str, Any]], kind_of: Callable[[str], str]) -> bool:
    """Whether a record's properties satisfy the groups (no groups: everything matches)."""
    if not groups:
        return True
    return any(all(_match(properties, flt, kind_of) for flt in group["filters"]) for group in groups)


def _match(properties: dict[str, str], flt: dict[str, Any], kind_of: Callable[[str], str]) -> bool:
    name = flt["propertyName"]
    operator = flt.get("operator", "EQ")
    raw = properties.get(name)
    present = raw is not None and raw != ""
    if operator == "HAS_PROPERTY":
        return present
    if operator == "NOT_HAS_PROPERTY":
        return not present
    kind = kind_of(name)
    if operator in {"NEQ", "NOT_IN", "NOT_CONTAINS_TOKEN"} and not present:
        return True
    if not present:
        return False
    have = _key(kind, raw)
    if operator in {"IN", "NOT_IN"}:
        hit = any(have == _key(kind, v) for v in flt["values"])
        return hit if operator == "IN" else not hit
    if operator in {"CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"}:
        token = str(flt["value"]).lower()
        pattern = "^" + ".*".join(re.escape(part) for part in token.split("*")) + "$"
        words = re.split(r"[\s,;@.]+", str(raw).lower())
        hit = any(re.match(pattern, w) for w in words) or re.match(pattern, str(raw).lower()) is not None
        return hit if operator == "CONTAINS_TOKEN" else not hit
    want = _key(kind, flt["value"])
    if have is None or want is None:
        return operator == "NEQ"
    if operator == "EQ":
        return bool(have == want)
    if operator == "NEQ":
        return bool(have != want)
    if operator == "BETWEEN":
        high = _key(kind, flt["highValue"])
        return high is not None and bool(want <= have <= high)
    return bool(
        {
            "LT": have < want,
            "LTE": have <= want,
            "GT": have > want,
            "GTE": have >= want,
        }[operator]
    )


def sort_value(properties: dict[str, str], name: str, kind_of: Callable[[str], str]) -> Any:
    """The value a record sorts by on property ``name``; None when it has none (sorted last)."""
    raw = properties.get(name)
    return None if raw in (None, "") else _key(kind_of(name), raw)
