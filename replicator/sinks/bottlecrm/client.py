"""HTTP access to BottleCRM's REST API: one request helper with metrics, the per-object
endpoint shapes, and error classification into sink Results."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any
from uuid import UUID

import httpx

from replicator.ops.metrics import CRM_REQUEST_SECONDS, CRM_RESPONSES
from replicator.sinks.base import CrmError, Outcome, Result

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


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"cannot send {type(value).__name__} to BottleCRM: {value!r}")


def _retry_after(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("Retry-After")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(raw).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def body_text(resp: httpx.Response, limit: int = 1000) -> str:
    """The error body, shortened; Django's HTML 500 page is reduced to its title."""
    ctype = resp.headers.get("content-type", "")
    text = resp.text
    if "html" in ctype:
        start, end = text.find("<title>"), text.find("</title>")
        text = text[start + 7 : end].strip() if 0 <= start < end else "HTML error page"
    return text[:limit]


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
        return Result(Outcome.TRANSIENT, error=detail, status_code=code, retry_after=_retry_after(resp))
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
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
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
        content = json.dumps(body, default=_json_default) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        start = time.perf_counter()
        try:
            resp = self.http.request(method, path, params=params, content=content, headers=headers)
        except httpx.TransportError as exc:
            CRM_RESPONSES.labels(CRM, method, resource, "0").inc()
            raise CrmError(
                Result(Outcome.TRANSIENT, error=f"{method} {self.url}{path}: {type(exc).__name__}: {exc}")
            ) from exc
        finally:
            CRM_REQUEST_SECONDS.labels(CRM, method, resource).observe(time.perf_counter() - start)
        CRM_RESPONSES.labels(CRM, method, resource, str(resp.status_code)).inc()
        return resp

    def expect_json(self, resp: httpx.Response, what: str) -> Any:
        if resp.is_success:
            try:
                return resp.json()
            except ValueError:
                raise CrmError(
                    Result(Outcome.TRANSIENT, error=f"{what}: non-JSON answer: {body_text(resp, 300)}")
                ) from None
        raise CrmError(classify(resp, what))

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
