"""OAuth 2.0 access tokens for the Salesforce REST API.

One token endpoint, ``POST {login_url}/services/oauth2/token`` with a form-encoded body
(Salesforce Help, "OAuth Endpoints"), and three flows, picked by what is configured:

- refresh token (``grant_type=refresh_token``, "OAuth 2.0 Refresh Token Flow"), when
  ``refresh_token`` is set;
- username-password (``grant_type=password``, "OAuth 2.0 Username-Password Flow"), when
  ``username`` and ``password`` are set (the password followed by the user's security
  token, unless the caller's IP is trusted);
- client credentials (``grant_type=client_credentials``, "OAuth 2.0 Client Credentials
  Flow for Server-to-Server Integration"), otherwise: the connected app's "Run As" user.

The answer carries ``access_token`` and ``instance_url``; every API call goes to
``instance_url`` (REST API Developer Guide, "Step Three: Connect ... Using OAuth").
A failed grant answers HTTP 400 with ``{"error": "invalid_client" | "invalid_grant" |
"unsupported_grant_type", "error_description": ...}`` (Salesforce Help, "OAuth 2.0 Token
Endpoint Errors"): those are configuration mistakes, so they become PERMANENT with the
setting to fix.

Thread safety: ``renew(stale)`` fetches a new token only if `stale` is still the current
one, under a lock, so N threads that all saw ``INVALID_SESSION_ID`` on the same token
cause one token request, not N.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from replicator.sinks.base import CrmError, Outcome, Result
from replicator.sinks.http import retry_after


@dataclass(frozen=True, slots=True)
class Token:
    access_token: str
    instance_url: str


@dataclass(frozen=True, slots=True)
class Credentials:
    client_id: str
    client_secret: str
    refresh_token: str | None = None
    username: str | None = None
    password: str | None = None

    @property
    def flow(self) -> str:
        if self.refresh_token:
            return "refresh_token"
        if self.username and self.password:
            return "password"
        return "client_credentials"

    def form(self) -> dict[str, str]:
        form = {"grant_type": self.flow, "client_id": self.client_id, "client_secret": self.client_secret}
        if self.flow == "refresh_token":
            form["refresh_token"] = self.refresh_token or ""
        elif self.flow == "password":
            form["username"] = self.username or ""
            form["password"] = self.password or ""
        return form


# What to fix for each documented token-endpoint error, per flow.
_FIXES: dict[tuple[str, str], str] = {
    ("invalid_client", "*"): "check crm.client_id and crm.client_secret: they must be the connected app's "
    "Consumer Key and Consumer Secret (Setup → App Manager → the app → View → Manage Consumer Details)",
    ("invalid_client_id", "*"): "check crm.client_id: it must be the connected app's Consumer Key",
    ("invalid_grant", "refresh_token"): "crm.refresh_token was revoked or expired: authorise the connected "
    "app again and configure the new refresh token",
    ("invalid_grant", "password"): "check crm.username and crm.password (the password followed by the "
    "user's security token, unless the replicator's IP is in the org's trusted ranges), and that the user "
    "is not locked out",
    ("invalid_grant", "client_credentials"): "enable the client credentials flow on the connected app and "
    "set its Run As user (Setup → App Manager → the app → Edit Policies → Client Credentials Flow)",
    ("unsupported_grant_type", "*"): "the connected app does not allow this flow: enable it in the app's "
    "OAuth policies, or configure crm.refresh_token / crm.username and crm.password for another flow",
    ("invalid_request", "*"): "the token request was rejected as malformed; check crm.login_url "
    "(https://login.salesforce.com, https://test.salesforce.com or the org's My Domain URL)",
}


def _fix(error: str, flow: str) -> str:
    return (
        _FIXES.get((error, flow))
        or _FIXES.get((error, "*"))
        or ("check crm.login_url, crm.client_id, crm.client_secret and the connected app's OAuth policies")
    )


Sender = Callable[[str, dict[str, str]], httpx.Response]


class TokenSource:
    """Holds the current token; fetches one lazily, and a new one when told the old one is stale."""

    def __init__(self, login_url: str, credentials: Credentials, send: Sender) -> None:
        self.login_url = str(login_url).rstrip("/")  # a configured URL may be a pydantic HttpUrl
        self.credentials = credentials
        self._send = send  # posts the form to a URL (through the budget and metrics)
        self._lock = threading.Lock()
        self._token: Token | None = None
        self.fetched = 0  # token requests made, for tests and logs

    def current(self) -> Token:
        with self._lock:
            if self._token is None:
                self._token = self._fetch()
            return self._token

    def renew(self, stale: Token) -> Token:
        """A token other than `stale`: the current one if another thread already renewed it."""
        with self._lock:
            if self._token is None or self._token == stale:
                self._token = self._fetch()
            return self._token

    def _fetch(self) -> Token:
        url = f"{self.login_url}/services/oauth2/token"
        flow = self.credentials.flow
        resp = self._send(url, self.credentials.form())
        self.fetched += 1
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.is_success and isinstance(data, dict) and data.get("access_token") and data.get("instance_url"):
            return Token(str(data["access_token"]), str(data["instance_url"]).rstrip("/"))
        if resp.status_code >= 500 or resp.status_code == 429:
            raise CrmError(
                Result(
                    Outcome.TRANSIENT,
                    error=f"Salesforce token endpoint {url} answered HTTP {resp.status_code}",
                    status_code=resp.status_code,
                    retry_after=retry_after(resp),
                )
            )
        error = str(data.get("error", "")) if isinstance(data, dict) else ""
        described = str(data.get("error_description", "")) if isinstance(data, dict) else resp.text[:200]
        raise CrmError(
            Result(
                Outcome.PERMANENT,
                error=f"Salesforce refused a token ({flow} flow) at {url}: HTTP {resp.status_code} "
                f"{error or 'no error code'}: {described}; fix: {_fix(error, flow)}",
                status_code=resp.status_code,
            )
        )
