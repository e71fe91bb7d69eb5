"""HTTP access to BottleCRM's REST API: one request helper with metrics, the per-object
endpoint shapes, and error classification into sink Results."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from replicator.sinks.base import Outcome, Result
from replicator.sinks.http import expect_json, pooled_client, retry_after, send_json, short_body

CRM = "bottlecrm"
PAGE = 100


@dataclass(frozen=True)
class ObjectSpec:
    """How one CRM object is reached: BottleCRM's list and detail shapes differ per resource."""

    name: str
    path: str  # collection path under the server URL
    cf_target: str | None  # custom-field target_model; None: the object has no custom fields
    natural_key: str  # the field BottleCRM keeps unique per org
    natural_key_query: str  # list filter that narrows by the natural key (substring match)
    list_keys: tuple[tuple[str, ...], ...]  # where list responses put records
    detail_key: str | None  # where the detail response puts the record (None: top level)
    update_method: str


SPECS: dict[str, ObjectSpec] = {
    "account": ObjectSpec(
        "account",
        "/api/accounts/",
        "Account",
        "name",
        "name",
        # Active and inactive accounts come back as two separately paginated lists.
        (("active_accounts", "open_accounts"), ("closed_accounts", "close_accounts")),
        "account_obj",
        "PATCH",
    ),
    "contact": ObjectSpec(
        "contact", "/api/contacts/", "Contact", "email", "search", (("results",),), "contact_obj", "PATCH"
    ),
    "opportunity": ObjectSpec(
        "opportunity",
        "/api/opportunities/",
        "Opportunity",
        "name",
        "name",
        (("opportunities",),),
        "opportunity_obj",
        "PATCH",
    ),
    # Products carry no custom fields in BottleCRM: the SKU is their external id.
    # Their PUT is partial; there is no PATCH.
    "product": ObjectSpec("product", "/api/invoices/products/", None, "sku", "search", (("results",),), None, "PUT"),
}


def body_text(resp: httpx.Response, limit: int = 1000) -> str:
    """The error body, shortened; Django's HTML 500 page is reduced to its title."""
    return short_body(resp, limit)


def classify(resp: httpx.Response, what: str) -> Result:
    """Map a non-2xx answer to a Result (for answers the caller did not handle itself)."""
    code = resp.status_code
    detail = f"{what}: HTTP {code}: {body_text(resp)}"
    if code in (401, 403):
        return Result(
            Outcome.PERMANENT,
            error=f"token rejected: {detail} (check the BottleCRM personal access token, and that its "
            "user is an org ADMIN: products and custom fields need admin rights)",
            status_code=code,
        )
    if code == 429 or code >= 500:
        return Result(Outcome.TRANSIENT, error=detail, status_code=code, retry_after=retry_after(resp))
    return Result(Outcome.PERMANENT, error=detail, status_code=code)


def unique_violation(resp: httpx.Response, spec: ObjectSpec) -> bool:
    """Whether a failed create may be a clash on the object's natural key.

    A 400 names the field; duplicate SKUs and concurrent same-name creates surface
    as an HTML 500 (IntegrityError), which can only be settled by re-querying.
    """
    if resp.status_code >= 500:
        return True
    if resp.status_code != 400:
        return False
    try:
        errors = resp.json().get("errors")
    except (ValueError, AttributeError):
        return False
    return isinstance(errors, dict) and spec.natural_key in errors


class BottleCrmClient:
    """Thin, thread-safe wrapper over one httpx.Client (it pools connections)."""

    def __init__(self, url: str, token: str, *, timeout: float, max_connections: int) -> None:
        self.url = url.rstrip("/")
        self.http = pooled_client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout,
            max_connections=max_connections,
        )

    def request(
        self,
        method: str,
        resource: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """Send one request; transport failures raise CrmError(TRANSIENT)."""
        return send_json(self.http, CRM, "BottleCRM", method, resource, path, params=params, body=body)

    def expect_json(self, resp: httpx.Response, what: str) -> Any:
        return expect_json(resp, what, classify)

    def list_page(
        self, spec: ObjectSpec, params: dict[str, Any], offset: int, limit: int = PAGE
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of records; True when any of the response's lists may have more."""
        resp = self.request("GET", spec.name, spec.path, params={**params, "limit": limit, "offset": offset})
        data = self.expect_json(resp, f"list {spec.name}")
        records: list[dict[str, Any]] = []
        more = False
        for keys in spec.list_keys:
            node: Any = data
            for key in keys:
                node = node.get(key, {}) if isinstance(node, dict) else {}
            rows = node if isinstance(node, list) else []
            records.extend(rows)
            more = more or len(rows) >= limit
        return records, more

    def iter_list(self, spec: ObjectSpec, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            records, more = self.list_page(spec, params, offset)
            yield from records
            if not more:
                return
            offset += PAGE

    def close(self) -> None:
        self.http.close()
