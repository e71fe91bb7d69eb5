"""HubSpot's object types, their seeded properties, association types and value formats.

Follows:
- "Understanding the CRM" / object type ids (developers.hubspot.com/docs/guides/crm/understanding-the-crm):
  contacts 0-1, companies 0-2, deals 0-3, products 0-7, line_items 0-8.
- "Properties" (developers.hubspot.com/docs/guides/api/crm/properties): property definition shape
  (name, label, type, fieldType, groupName, options, hasUniqueValue, modificationMetadata, ...), the
  valid ``type``/``fieldType`` values, and values always exchanged as strings.
- "Associations v4" (developers.hubspot.com/docs/guides/api/crm/associations/associations-v4), table
  "HubSpot defined association type IDs": contact→company 279 / company→contact 280, deal→company 341 /
  company→deal 342, line item→deal 20 / deal→line item 19, contact→deal 4 / deal→contact 3.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

# name -> (object type id, singular name used in webhooks and error messages)
OBJECT_TYPES: dict[str, tuple[str, str]] = {
    "contacts": ("0-1", "contact"),
    "companies": ("0-2", "company"),
    "deals": ("0-3", "deal"),
    "products": ("0-7", "product"),
    "line_items": ("0-8", "line_item"),
}

_ALIASES: dict[str, str] = {}
for _name, (_type_id, _singular) in OBJECT_TYPES.items():
    for _alias in (_name, _type_id, _singular, _singular.replace("_", "")):
        _ALIASES[_alias.lower()] = _name
_ALIASES["lineitems"] = "line_items"


def object_name(raw: str) -> str | None:
    """The canonical object name for a path segment (``contacts``, ``0-1``, ``contact``), else None."""
    return _ALIASES.get(raw.lower())


# (from, to) -> default (unlabeled) association type id; both directions, as the v4 table lists them.
DEFAULT_ASSOCIATION_TYPES: dict[tuple[str, str], int] = {
    ("contacts", "companies"): 279,
    ("companies", "contacts"): 280,
    ("deals", "companies"): 341,
    ("companies", "deals"): 342,
    ("line_items", "deals"): 20,
    ("deals", "line_items"): 19,
    ("contacts", "deals"): 4,
    ("deals", "contacts"): 3,
}

# Properties HubSpot maintains itself: writes to them fail with READ_ONLY_VALUE.
READ_ONLY = frozenset({"hs_object_id", "hs_lastmodifieddate", "lastmodifieddate", "hs_createdate"})
# Properties whose change is bookkeeping, not a user's edit: no propertyChange webhook for them.
SYSTEM = READ_ONLY | {"createdate"}

# The properties returned when a request names none ("Search the CRM", "Retrieve records" pages).
DEFAULT_PROPERTIES: dict[str, tuple[str, ...]] = {
    "contacts": ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"),
    "companies": ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
    "deals": (
        "amount",
        "closedate",
        "createdate",
        "dealname",
        "dealstage",
        "hs_lastmodifieddate",
        "hs_object_id",
        "pipeline",
    ),
    "products": ("createdate", "description", "hs_lastmodifieddate", "hs_object_id", "name", "price"),
    "line_items": ("createdate", "hs_lastmodifieddate", "hs_object_id", "hs_product_id", "name", "price", "quantity"),
}

# The modification-time property the object's records carry ("contacts" keep their historical name).
MODIFIED_PROPERTY = {"contacts": "lastmodifieddate"}

# Which properties may be an ``idProperty`` besides custom ones with hasUniqueValue: the record id
# everywhere, and email for contacts ("Contacts" guide: upsert by email).
BUILTIN_ID_PROPERTIES = {"contacts": frozenset({"hs_object_id", "email"})}

DEAL_STAGES = (
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
)

PROPERTY_TYPES = {
    "string": {"text", "textarea", "html", "phonenumber", "file", "select", "radio"},
    "number": {"number", "calculation_equation"},
    "date": {"date"},
    "datetime": {"date"},
    "enumeration": {"select", "radio", "checkbox", "booleancheckbox"},
    "bool": {"booleancheckbox", "calculation_equation"},
    "phone_number": {"phonenumber"},
}

_S, _N, _DT, _D, _E = "string", "number", "datetime", "date", "enumeration"

# (name, type, group) per object; labels are derived.
_SEED: dict[str, list[tuple[str, str, str]]] = {
    "companies": [
        ("name", _S, "companyinformation"),
        ("domain", _S, "companyinformation"),
        ("website", _S, "companyinformation"),
        ("phone", _S, "companyinformation"),
        ("industry", _S, "companyinformation"),
        ("address", _S, "companyinformation"),
        ("city", _S, "companyinformation"),
        ("state", _S, "companyinformation"),
        ("zip", _S, "companyinformation"),
        ("country", _S, "companyinformation"),
        ("description", _S, "companyinformation"),
        ("numberofemployees", _N, "companyinformation"),
        ("annualrevenue", _N, "companyinformation"),
        ("type", _S, "companyinformation"),
        ("hubspot_owner_id", _S, "companyinformation"),
    ],
    "contacts": [
        ("firstname", _S, "contactinformation"),
        ("lastname", _S, "contactinformation"),
        ("email", _S, "contactinformation"),
        ("phone", _S, "contactinformation"),
        ("mobilephone", _S, "contactinformation"),
        ("jobtitle", _S, "contactinformation"),
        ("company", _S, "contactinformation"),
        ("website", _S, "contactinformation"),
        ("address", _S, "contactinformation"),
        ("city", _S, "contactinformation"),
        ("state", _S, "contactinformation"),
        ("zip", _S, "contactinformation"),
        ("country", _S, "contactinformation"),
        ("lifecyclestage", _S, "contactinformation"),
        ("hubspot_owner_id", _S, "contactinformation"),
        ("lastmodifieddate", _DT, "contactinformation"),
    ],
    "products": [
        ("name", _S, "productinformation"),
        ("description", _S, "productinformation"),
        ("price", _N, "productinformation"),
        ("hs_sku", _S, "productinformation"),
        ("hs_cost_of_goods_sold", _N, "productinformation"),
        ("hs_url", _S, "productinformation"),
    ],
    "deals": [
        ("dealname", _S, "dealinformation"),
        ("amount", _N, "dealinformation"),
        ("dealstage", _E, "dealinformation"),
        ("pipeline", _E, "dealinformation"),
        ("closedate", _DT, "dealinformation"),
        ("description", _S, "dealinformation"),
        ("dealtype", _E, "dealinformation"),
        ("hubspot_owner_id", _S, "dealinformation"),
    ],
    "line_items": [
        ("name", _S, "lineiteminformation"),
        ("description", _S, "lineiteminformation"),
        ("quantity", _N, "lineiteminformation"),
        ("price", _N, "lineiteminformation"),
        ("amount", _N, "lineiteminformation"),
        ("discount", _N, "lineiteminformation"),
        ("hs_product_id", _N, "lineiteminformation"),
        ("hs_sku", _S, "lineiteminformation"),
    ],
}

_OPTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("deals", "dealstage"): DEAL_STAGES,
    ("deals", "pipeline"): ("default",),
    ("deals", "dealtype"): ("newbusiness", "existingbusiness"),
}

_FIELD_TYPE = {_S: "text", _N: "number", _DT: "date", _D: "date", _E: "select"}


def property_definition(
    name: str,
    type_: str,
    group: str,
    *,
    label: str | None = None,
    field_type: str | None = None,
    options: list[dict[str, Any]] | None = None,
    has_unique_value: bool = False,
    hubspot_defined: bool = True,
    description: str = "",
    now_iso: str = "2019-08-06T02:41:52.000Z",
) -> dict[str, Any]:
    """A property in the shape of the Properties API's answers."""
    read_only = name in READ_ONLY
    return {
        "name": name,
        "label": label or name.replace("_", " ").title(),
        "type": type_,
        "fieldType": field_type or _FIELD_TYPE.get(type_, "text"),
        "description": description,
        "groupName": group,
        "options": options or [],
        "displayOrder": -1,
        "calculated": False,
        "externalOptions": False,
        "hasUniqueValue": has_unique_value,
        "hidden": False,
        "hubspotDefined": hubspot_defined,
        "modificationMetadata": {
            "archivable": not hubspot_defined,
            "readOnlyDefinition": hubspot_defined,
            "readOnlyValue": read_only,
        },
        "formField": not read_only,
        "createdAt": now_iso,
        "updatedAt": now_iso,
        "archived": False,
    }


def seeded_properties() -> dict[str, dict[str, dict[str, Any]]]:
    """Every object's standard properties, plus those every record carries (id, create/modify times)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for obj, seeds in _SEED.items():
        group = seeds[0][2]
        rows = [*seeds, ("hs_object_id", _N, group), ("createdate", _DT, group), ("hs_lastmodifieddate", _DT, group)]
        defs: dict[str, dict[str, Any]] = {}
        for name, type_, grp in rows:
            choices = _OPTIONS.get((obj, name))
            options = [
                {"label": c, "value": c, "displayOrder": i, "hidden": False} for i, c in enumerate(choices or ())
            ]
            defs[name] = property_definition(name, type_, grp, options=options)
        out[obj] = defs
    return out


# ------------------------------------------------------------------ time and value formats


def iso_ms(ms: int) -> str:
    """HubSpot's timestamp format: ISO 8601 UTC with milliseconds and ``Z``."""
    stamp = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{ms % 1000:03d}Z"


_ISO = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?\Z")


def to_epoch_ms(value: str) -> int | None:
    """A datetime given as epoch milliseconds or ISO 8601 (as search filters and writes accept it)."""
    text = value.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if not _ISO.match(text):
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


class InvalidValue(Exception):
    """A property value HubSpot refuses; ``code`` is its error code (INVALID_FLOAT, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def normalize(definition: dict[str, Any], raw: Any) -> str:
    """The string HubSpot stores for ``raw`` written to the property, or InvalidValue.

    Values are strings on the wire; numbers and booleans sent as JSON are accepted and turned
    into their string form, the way HubSpot's API does.
    """
    name = definition["name"]
    if isinstance(raw, bool):
        text = "true" if raw else "false"
    elif isinstance(raw, int | float):
        text = repr(raw) if isinstance(raw, float) else str(raw)
    elif isinstance(raw, str):
        text = raw
    else:
        raise InvalidValue("INVALID_PROPERTY_VALUE", f"{raw!r} is not a valid value for property {name!r}")
    if text == "":
        return text
    kind = definition["type"]
    if kind == "number":
        try:
            number = Decimal(text.strip())
        except InvalidOperation:
            raise InvalidValue("INVALID_FLOAT", f"{text!r} was not a valid number.") from None
        if not number.is_finite():
            raise InvalidValue("INVALID_FLOAT", f"{text!r} was not a valid number.")
        return format(number.normalize(), "f") if number != 0 else "0"
    if kind == "datetime":
        ms = to_epoch_ms(text)
        if ms is None:
            raise InvalidValue("INVALID_DATE", f"{text!r} is not a valid datetime: use epoch milliseconds or ISO 8601.")
        return iso_ms(ms)
    if kind == "date":
        ms = to_epoch_ms(text)
        if ms is None or ms % 86_400_000:
            raise InvalidValue("INVALID_DATE", f"{text!r} is not a valid date: use YYYY-MM-DD or midnight UTC in ms.")
        return iso_ms(ms)[:10]
    if kind == "bool":
        if text.lower() not in {"true", "false"}:
            raise InvalidValue("INVALID_BOOLEAN", f"{text!r} is not a valid boolean: use true or false.")
        return text.lower()
    if kind == "enumeration" and definition["options"]:
        allowed = [o["value"] for o in definition["options"]]
        chosen = text.split(";") if definition["fieldType"] == "checkbox" else [text]
        for value in chosen:
            if value not in allowed:
                raise InvalidValue(
                    "INVALID_OPTION",
                    f"{value} was not one of the allowed options: {', '.join(allowed)}",
                )
    return text
