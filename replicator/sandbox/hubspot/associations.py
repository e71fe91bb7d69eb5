"""The associations v4 batch endpoints: associate default, read and archive ("Associations v4")."""

from __future__ import annotations

import time
from typing import Any

from replicator.sandbox.core import Request, Response

from . import schema
from .errors import HubSpotError, batch_error
from .payloads import batch_answer, batch_inputs
from .records import RecordStore
from .schema import OBJECT_TYPES

MAX_ASSOCIATION_BATCH = 1000


class AssociationsAPI(RecordStore):
    """POST /crm/v4/associations/{fromObjectType}/{toObjectType}/batch/{associate/default,read,archive}."""

    def _pair(self, from_type: str, to_type: str) -> tuple[str, str, int]:
        from_obj, to_obj = self._object(from_type), self._object(to_type)
        type_id = schema.DEFAULT_ASSOCIATION_TYPES.get((from_obj, to_obj))
        if type_id is None:
            raise HubSpotError(
                f"No default association type between {from_obj} and {to_obj} in this sandbox; supported pairs: "
                f"{sorted(schema.DEFAULT_ASSOCIATION_TYPES)}"
            )
        return from_obj, to_obj, type_id

    def associate_default(self, req: Request, from_type: str, to_type: str) -> Response:
        """POST /crm/v4/associations/{from}/{to}/batch/associate/default ("Associations v4", "Associate records
        without a label"): creates the unlabeled type both ways; results list both directions. An input
        naming a record that does not exist gets its own error (207)."""
        from_obj, to_obj, type_id = self._pair(from_type, to_type)
        _, inputs = batch_inputs(req, MAX_ASSOCIATION_BATCH)
        reverse_id = schema.DEFAULT_ASSOCIATION_TYPES[(to_obj, from_obj)]
        started = int(time.time() * 1000)
        with self.lock:
            results: list[dict[str, Any]] = []
            errors: list[dict[str, Any]] = []
            for item in inputs:
                from_id = str((item.get("from") or {}).get("id", ""))
                to_id = str((item.get("to") or {}).get("id", ""))
                absent = [(o, i) for o, i in ((from_obj, from_id), (to_obj, to_id)) if self._find(o, i, None) is None]
                if absent:
                    what = ", ".join(f"{OBJECT_TYPES[o][1]} {i}" for o, i in absent)
                    errors.append(
                        batch_error(
                            "VALIDATION_ERROR",
                            f"One or more object ids do not exist: {what}",
                            {"fromObjectId": [from_id], "toObjectId": [to_id]},
                            "crm.associations.INVALID_OBJECT_IDS",
                        )
                    )
                    continue
                self._link(from_obj, from_id, to_obj, to_id)
                for a, b, tid in ((from_id, to_id, type_id), (to_id, from_id, reverse_id)):
                    results.append(
                        {
                            "from": {"id": a},
                            "to": {"id": b},
                            "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": tid},
                        }
                    )
            return batch_answer(200, results, errors, started)

    def read_associations(self, req: Request, from_type: str, to_type: str) -> Response:
        """POST /crm/v4/associations/{from}/{to}/batch/read ("Associations v4", "Retrieve associated records"):
        ``results[{from:{id}, to:[{toObjectId, associationTypes:[{category, typeId, label}]}]}]``; an id
        with none → a NO_ASSOCIATIONS_FOUND error for it (207)."""
        from_obj, to_obj, type_id = self._pair(from_type, to_type)
        _, inputs = batch_inputs(req, MAX_ASSOCIATION_BATCH)
        started = int(time.time() * 1000)
        with self.lock:
            results: list[dict[str, Any]] = []
            errors: list[dict[str, Any]] = []
            for item in inputs:
                from_id = str(item.get("id", ""))
                linked = sorted(
                    (int(i) for o, i in self._links.get((from_obj, from_id), set()) if o == to_obj),
                )
                if not linked:
                    errors.append(
                        batch_error(
                            "OBJECT_NOT_FOUND",
                            f"No {OBJECT_TYPES[to_obj][1]} is associated with {OBJECT_TYPES[from_obj][1]} {from_id}.",
                            {"fromObjectId": [from_id]},
                            "crm.associations.NO_ASSOCIATIONS_FOUND",
                        )
                    )
                    continue
                types = [{"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": None}]
                results.append(
                    {"from": {"id": from_id}, "to": [{"toObjectId": i, "associationTypes": types} for i in linked]}
                )
            return batch_answer(200, results, errors, started)

    def archive_associations(self, req: Request, from_type: str, to_type: str) -> Response:
        """POST /crm/v4/associations/{from}/{to}/batch/archive ("Associations v4", "Remove associations"):
        ``inputs[{from:{id}, to:[{id}]}]``, 204."""
        from_obj, to_obj, _ = self._pair(from_type, to_type)
        _, inputs = batch_inputs(req, MAX_ASSOCIATION_BATCH)
        with self.lock:
            for item in inputs:
                from_id = str((item.get("from") or {}).get("id", ""))
                for target in item.get("to") or []:
                    to_id = str((target or {}).get("id", ""))
                    self._links.get((from_obj, from_id), set()).discard((to_obj, to_id))
                    self._links.get((to_obj, to_id), set()).discard((from_obj, from_id))
        return Response(204)
