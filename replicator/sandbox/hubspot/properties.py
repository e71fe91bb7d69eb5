"""The Properties API v3 endpoints: list, read and create property definitions ("Properties" guide)."""

from __future__ import annotations

from replicator.sandbox.core import Request, Response

from . import schema
from .errors import HubSpotError
from .records import RecordStore
from .schema import OBJECT_TYPES, iso_ms


class PropertiesAPI(RecordStore):
    """GET/POST /crm/v3/properties/{objectType} and GET /crm/v3/properties/{objectType}/{propertyName}."""

    def list_properties(self, req: Request, object_type: str) -> Response:
        """GET /crm/v3/properties/{objectType} ("Properties" guide, "Retrieve properties")."""
        obj = self._object(object_type)
        with self.lock:
            return Response(200, {"results": [dict(d) for d in self._properties[obj].values()]})

    def get_property(self, req: Request, object_type: str, name: str) -> Response:
        """GET /crm/v3/properties/{objectType}/{propertyName}."""
        obj = self._object(object_type)
        with self.lock:
            definition = self._properties[obj].get(name)
            if definition is None:
                raise HubSpotError(
                    f"Unable to find property {name} for object type {OBJECT_TYPES[obj][0]}", 404, "OBJECT_NOT_FOUND"
                )
            return Response(200, dict(definition))

    def create_property(self, req: Request, object_type: str) -> Response:
        """POST /crm/v3/properties/{objectType} ("Properties" guide, "Create a property"): 201, 409 if it exists."""
        obj = self._object(object_type)
        body = req.json()
        if not isinstance(body, dict):
            raise HubSpotError("Invalid input JSON: expected a property definition object")
        missing = [key for key in ("name", "label", "type", "fieldType", "groupName") if not body.get(key)]
        if missing:
            raise HubSpotError(
                f"Property definition is missing required fields: {', '.join(missing)}",
                errors=[{"message": f"{key} is required", "code": "REQUIRED_FIELD"} for key in missing],
            )
        name, type_, field_type = str(body["name"]), str(body["type"]), str(body["fieldType"])
        if not name[:1].isalpha() or not all(c.islower() or c.isdigit() or c == "_" for c in name):
            raise HubSpotError(f"Property name {name!r} must start with a letter and hold only a-z, 0-9 and _")
        if type_ not in schema.PROPERTY_TYPES:
            raise HubSpotError(f"Invalid property type {type_!r}; use one of {sorted(schema.PROPERTY_TYPES)}")
        if field_type not in schema.PROPERTY_TYPES[type_]:
            raise HubSpotError(
                f"fieldType {field_type!r} is not valid for type {type_!r}; use one of "
                f"{sorted(schema.PROPERTY_TYPES[type_])}"
            )
        with self.lock:
            if name in self._properties[obj]:
                raise HubSpotError(f"Property named '{name}' already exists.", 409, "OBJECT_ALREADY_EXISTS")
            definition = schema.property_definition(
                name,
                type_,
                str(body["groupName"]),
                label=str(body["label"]),
                field_type=field_type,
                options=list(body.get("options") or []),
                has_unique_value=bool(body.get("hasUniqueValue", False)),
                hubspot_defined=False,
                description=str(body.get("description") or ""),
                now_iso=iso_ms(self.now_ms()),
            )
            self._properties[obj][name] = definition
            return Response(201, dict(definition))
