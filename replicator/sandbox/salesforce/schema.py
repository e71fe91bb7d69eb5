"""The sObjects the Salesforce sandbox knows, their fields, record ids, and value checks.

Field types, lengths and flags follow the Object Reference for the Salesforce Platform
(Account, Contact, Product2, Opportunity) and the ``fields`` of "sObject Describe"
(REST API Developer Guide, resources_sobject_describe). Each sObject also carries the
custom field ``ERP_Id__c``: text(255), External ID, unique, case sensitive, as an admin
would create it in Setup → Object Manager for an integration.

Record ids follow "What is a Salesforce ID" (18-character case-insensitive form: a 3-char
key prefix, 12 chars, and a 3-char checksum of the case of the first 15 chars). Ids are
issued in ascending order, so sorting by Id follows creation order.

Per-record error codes (``statusCode``) follow the StatusCode list of the SOAP API
Developer Guide ("Core Data Types Used in API Calls" → StatusCode), which the REST API
reuses in SaveResult/UpsertResult errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CHECKSUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID = re.compile(r"[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_DATETIME_IN = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:?\d{2})?")

TEXT_TYPES = frozenset({"string", "textarea", "url", "phone", "email", "picklist", "combobox"})
NUMBER_TYPES = frozenset({"double", "currency", "percent", "int"})
ID_TYPES = frozenset({"id", "reference"})


class RecordError(Exception):
    """One record's failure, answered as ``{"statusCode", "message", "fields"}``."""

    def __init__(self, status_code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(f"{status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.fields = fields or []

    def as_json(self) -> dict[str, Any]:
        return {"statusCode": self.status_code, "message": self.message, "fields": self.fields}


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    label: str
    length: int = 0
    required: bool = False  # not nillable on create (REQUIRED_FIELD_MISSING)
    createable: bool = True
    updateable: bool = True
    external_id: bool = False
    unique: bool = False
    case_sensitive: bool = False
    reference_to: str | None = None
    default: Any = None
    calculated: bool = False

    @property
    def nillable(self) -> bool:
        return not self.required and self.type not in ("boolean", "id") and self.createable

    def describe(self) -> dict[str, Any]:
        """The field as "sObject Describe" lists it (the subset a client reads)."""
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "length": self.length,
            "byteLength": self.length * 3,
            "externalId": self.external_id,
            "unique": self.unique,
            "caseSensitive": self.case_sensitive,
            "idLookup": self.external_id or self.type == "id",
            "nillable": self.nillable,
            "createable": self.createable,
            "updateable": self.updateable,
            "calculated": self.calculated,
            "custom": self.name.endswith("__c"),
            "defaultedOnCreate": self.default is not None or not self.createable,
            "filterable": self.type != "textarea",
            "sortable": self.type != "textarea",
            "referenceTo": [self.reference_to] if self.reference_to else [],
            "relationshipName": self.name[:-2] if self.reference_to else None,
            "soapType": _SOAP_TYPES.get(self.type, "xsd:string"),
        }


_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "int": "xsd:int",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
}


@dataclass
class SObjectType:
    name: str
    label: str
    key_prefix: str
    fields: dict[str, Field] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_lower = {name.lower(): f for name, f in self.fields.items()}

    def field(self, name: str) -> Field | None:
        """Field names are case-insensitive in SOQL and in JSON bodies."""
        return self._by_lower.get(name.lower())

    def fields_by_any_case(self, name: str) -> str:
        """The canonical name of a field known to exist under some spelling of `name`."""
        return self._by_lower[name.lower()].name

    def describe(self, api_version: str) -> dict[str, Any]:
        base = f"/services/data/{api_version}/sobjects/{self.name}"
        return {
            "name": self.name,
            "label": self.label,
            "labelPlural": self.label + "s",
            "keyPrefix": self.key_prefix,
            "custom": False,
            "createable": True,
            "updateable": True,
            "deletable": True,
            "queryable": True,
            "searchable": True,
            "undeletable": True,
            "fields": [f.describe() for f in self.fields.values()],
            "urls": {"sobject": base, "describe": f"{base}/describe", "rowTemplate": f"{base}/{{ID}}"},
        }


def _system(reference_name: str) -> list[Field]:
    return [
        Field("Id", "id", f"{reference_name} ID", 18, createable=False, updateable=False),
        Field("IsDeleted", "boolean", "Deleted", createable=False, updateable=False),
        Field("CreatedDate", "datetime", "Created Date", createable=False, updateable=False),
        Field("LastModifiedDate", "datetime", "Last Modified Date", createable=False, updateable=False),
        Field("SystemModstamp", "datetime", "System Modstamp", createable=False, updateable=False),
    ]


def _erp_id() -> Field:
    return Field("ERP_Id__c", "string", "ERP Id", 255, external_id=True, unique=True, case_sensitive=True)


def _sobject(name: str, label: str, prefix: str, fields: list[Field]) -> SObjectType:
    return SObjectType(name, label, prefix, {f.name: f for f in [*_system(label), *fields, _erp_id()]})


SOBJECTS: dict[str, SObjectType] = {
    t.name: t
    for t in [
        _sobject(
            "Account",
            "Account",
            "001",
            [
                Field("Name", "string", "Account Name", 255, required=True),
                Field("AccountNumber", "string", "Account Number", 40),
                Field("Type", "picklist", "Account Type", 255),
                Field("Industry", "picklist", "Industry", 255),
                Field("Website", "url", "Website", 255),
                Field("Phone", "phone", "Account Phone", 40),
                Field("Fax", "phone", "Account Fax", 40),
                Field("BillingStreet", "textarea", "Billing Street", 255),
                Field("BillingCity", "string", "Billing City", 40),
                Field("BillingState", "string", "Billing State/Province", 80),
                Field("BillingPostalCode", "string", "Billing Zip/Postal Code", 20),
                Field("BillingCountry", "string", "Billing Country", 80),
                Field("NumberOfEmployees", "int", "Employees"),
                Field("AnnualRevenue", "currency", "Annual Revenue"),
                Field("Description", "textarea", "Account Description", 32000),
            ],
        ),
        _sobject(
            "Contact",
            "Contact",
            "003",
            [
                Field("AccountId", "reference", "Account ID", 18, reference_to="Account"),
                Field("FirstName", "string", "First Name", 40),
                Field("LastName", "string", "Last Name", 80, required=True),
                Field("Name", "string", "Full Name", 121, createable=False, updateable=False, calculated=True),
                Field("Email", "email", "Email", 80),
                Field("Phone", "phone", "Business Phone", 40),
                Field("MobilePhone", "phone", "Mobile Phone", 40),
                Field("Title", "string", "Title", 128),
                Field("Department", "string", "Department", 80),
                Field("MailingStreet", "textarea", "Mailing Street", 255),
                Field("MailingCity", "string", "Mailing City", 40),
                Field("MailingPostalCode", "string", "Mailing Zip/Postal Code", 20),
                Field("MailingCountry", "string", "Mailing Country", 80),
                Field("Description", "textarea", "Contact Description", 32000),
            ],
        ),
        _sobject(
            "Product2",
            "Product",
            "01t",
            [
                Field("Name", "string", "Product Name", 255, required=True),
                Field("ProductCode", "string", "Product Code", 255),
                Field("Description", "textarea", "Product Description", 4000),
                Field("IsActive", "boolean", "Active", default=False),
                Field("Family", "picklist", "Product Family", 255),
                Field("QuantityUnitOfMeasure", "picklist", "Quantity Unit Of Measure", 255),
                Field("StockKeepingUnit", "string", "Product SKU", 180),
            ],
        ),
        _sobject(
            "Opportunity",
            "Opportunity",
            "006",
            [
                Field("AccountId", "reference", "Account ID", 18, reference_to="Account"),
                Field("Name", "string", "Name", 120, required=True),
                Field("StageName", "picklist", "Stage", 255, required=True),
                Field("CloseDate", "date", "Close Date", required=True),
                Field("Amount", "currency", "Amount"),
                Field("Probability", "percent", "Probability (%)"),
                Field("Type", "picklist", "Opportunity Type", 255),
                Field("LeadSource", "picklist", "Lead Source", 255),
                Field("NextStep", "string", "Next Step", 255),
                Field("Description", "textarea", "Description", 32000),
            ],
        ),
    ]
}
PREFIXES = {t.key_prefix: t.name for t in SOBJECTS.values()}


# ---------------------------------------------------------------- ids


def checksum(id15: str) -> str:
    """The 3-char suffix that makes a 15-char id case-insensitively unique."""
    out = ""
    for chunk in range(3):
        bits = 0
        for i, ch in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            if "A" <= ch <= "Z":
                bits |= 1 << i
        out += _CHECKSUM[bits]
    return out


def make_id(prefix: str, serial: int) -> str:
    """An 18-char id: key prefix, a fixed pod/instance part, a base-62 serial, checksum."""
    digits = ""
    n = serial
    for _ in range(7):
        n, r = divmod(n, 62)
        digits = _BASE62[r] + digits
    id15 = prefix + "5g000" + digits
    return id15 + checksum(id15)


def normalize_id(value: str) -> str | None:
    """The 18-char form of a 15- or 18-char id; None when `value` is not shaped like an id."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        return None
    if len(value) == 15:
        return value + checksum(value)
    return value if checksum(value[:15]) == value[15:] else None


# ---------------------------------------------------------------- time


def format_datetime(value: datetime) -> str:
    """Salesforce's dateTime answer format: ``2026-12-05T14:20:35.000+0000`` (UTC)."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}+0000"


def parse_datetime(text: str) -> datetime | None:
    """An aware datetime from ISO 8601 (``Z``, ``+hh:mm`` or ``+hhmm``); naive input counts as UTC."""
    if not _DATETIME_IN.fullmatch(text):
        return None
    if len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit():
        text = text[:-2] + ":" + text[-2:]
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# ---------------------------------------------------------------- values


def coerce(sobject: SObjectType, f: Field, value: Any) -> Any:
    """`value` (as a JSON body or a CSV cell carries it) in the stored form of field `f`.

    Raises RecordError with the StatusCode Salesforce uses for a bad value."""
    if value is None or (value == "" and f.type != "boolean"):
        return None
    bad_type = RecordError(
        "INVALID_TYPE_ON_FIELD_IN_RECORD", f"{f.label}: value not of required type: {value}", [f.name]
    )
    if f.type in TEXT_TYPES:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise bad_type
        text = value if isinstance(value, str) else str(value)
        if f.length and len(text) > f.length:
            shown = text if len(text) <= 40 else text[:37] + "..."
            raise RecordError(
                "STRING_TOO_LONG", f"{f.label}: data value too large: {shown} (max length={f.length})", [f.name]
            )
        if f.type == "email" and not _EMAIL.fullmatch(text):
            raise RecordError("INVALID_EMAIL_ADDRESS", f"{f.label}: invalid email address: {text}", [f.name])
        return text
    if f.type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", ""):
            return value.lower() in ("true", "1")
        raise bad_type
    if f.type in NUMBER_TYPES:
        if isinstance(value, bool):
            raise bad_type
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            raise bad_type from None
        if not isinstance(number, int | float) or number != number:
            raise bad_type
        if f.type == "int":
            if float(number) != int(number):
                raise bad_type
            return int(number)
        return float(number)
    if f.type == "date":
        if not isinstance(value, str):
            raise bad_type
        try:
            parsed = date.fromisoformat(value) if len(value) == 10 else None
        except ValueError:
            parsed = None
        if parsed is None:
            raise bad_type
        return parsed.isoformat()
    if f.type == "datetime":
        parsed = parse_datetime(value) if isinstance(value, str) else None
        if parsed is None:
            raise bad_type
        return format_datetime(parsed)
    if f.type == "reference":
        ref = normalize_id(value) if isinstance(value, str) else None
        if ref is None:
            raise RecordError("MALFORMED_ID", f"{f.label}: id value of incorrect type: {value}", [f.name])
        if f.reference_to is not None and PREFIXES.get(ref[:3]) != f.reference_to:
            raise RecordError("FIELD_INTEGRITY_EXCEPTION", f"{f.label}: id value of incorrect type: {value}", [f.name])
        return ref
    raise bad_type
