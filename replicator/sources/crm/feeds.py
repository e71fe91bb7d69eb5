"""Which CRM change feeds a configured CRM has, and the parts that read them.

Every CRM hands changes to the same inbox and the same change source; they differ in how
changes are noticed:

| CRM        | webhooks                                   | polling                                      |
|------------|--------------------------------------------|----------------------------------------------|
| BottleCRM  | `X-BottleCRM-Signature` (HMAC, timestamp)  | full scans compared by content hash          |
| HubSpot    | signature v3 (`X-HubSpot-Signature-v3`)    | search API cursor on `hs_lastmodifieddate`   |
| Salesforce | none here (its CDC needs the Pub/Sub API)  | SOQL cursor on `SystemModstamp`              |
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from replicator.config.model import BottleCrmConfig, Config, HubSpotConfig, PollConfig, SalesforceConfig
from replicator.ops.http import WsgiApp
from replicator.state.inbox import Inbox

TWO_WAY_CRMS = (BottleCrmConfig, HubSpotConfig, SalesforceConfig)


def poll_config(config: Config) -> PollConfig | None:
    crm = config.crm
    return crm.poll if isinstance(crm, TWO_WAY_CRMS) else None


def offers_webhooks(config: Config) -> bool:
    """Whether the configured CRM can push its changes (Salesforce's change events need its Pub/Sub API)."""
    return isinstance(config.crm, BottleCrmConfig | HubSpotConfig)


def webhook_path(config: Config) -> str | None:
    crm = config.crm
    if isinstance(crm, BottleCrmConfig | HubSpotConfig) and crm.webhooks is not None:
        return crm.webhooks.path
    return None


def records_for(config: Config, sink: Any) -> Any:
    """The adapter that reads whole CRM records (and lists changes) through the sink's client."""
    crm = config.crm
    if isinstance(crm, HubSpotConfig):
        from replicator.sources.crm.hubspot import HubSpotRecords

        return HubSpotRecords(sink)
    if isinstance(crm, SalesforceConfig):
        from replicator.sources.crm.salesforce import SalesforceRecords

        return SalesforceRecords(sink)
    from replicator.sources.crm.bottlecrm import BottleCrmRecords

    return BottleCrmRecords(sink)


def crm_fields(config: Config, sink: Any) -> Mapping[str, frozenset[str]] | None:
    """Each object's field names, for checking reverse expressions at startup (None: not known)."""
    crm = config.crm
    if isinstance(crm, BottleCrmConfig):
        from replicator.sources.crm.bottlecrm import CRM_FIELDS

        return CRM_FIELDS
    if isinstance(crm, HubSpotConfig | SalesforceConfig):
        fields: Mapping[str, frozenset[str]] | None = records_for(config, sink).crm_fields()
        return fields
    return None


def webhook_app(config: Config, inbox: Inbox, dead_letter: Callable[..., None]) -> WsgiApp | None:
    crm = config.crm
    if isinstance(crm, BottleCrmConfig) and crm.webhooks is not None:
        from replicator.sources.crm.webhook import make_webhook_app

        return make_webhook_app(
            crm.kind, crm.webhooks.secret.get_secret_value(), inbox, dead_letter, tolerance_s=crm.webhooks.tolerance_s
        )
    if isinstance(crm, HubSpotConfig) and crm.webhooks is not None:
        from replicator.sources.crm.hubspot_webhook import make_hubspot_webhook_app

        return make_hubspot_webhook_app(
            crm.webhooks.client_secret.get_secret_value(),
            inbox,
            dead_letter,
            public_url=crm.webhooks.public_url,
            tolerance_s=crm.webhooks.tolerance_s,
        )
    return None


def make_poller(config: Config, records: Any, inbox: Inbox, *, objects: list[str]) -> Any:
    """The poller of this CRM (it has `run(stop)` and `close()`), or None when polling is off."""
    crm = config.crm
    poll = poll_config(config)
    if poll is None or poll.interval_s <= 0:
        return None
    from replicator.sources.crm.cursor_poll import CursorPoller
    from replicator.sources.crm.poll import Poller

    # CRMs that list records by modification time get a keyset cursor; BottleCRM a content-hash scan.
    poller = CursorPoller if isinstance(crm, HubSpotConfig | SalesforceConfig) else Poller
    return poller(
        crm.kind,
        inbox,
        records,
        config.state_dsn,
        objects=objects,
        interval_s=poll.interval_s,
        lookback_s=poll.lookback_s,
    )
