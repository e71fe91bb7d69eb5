"""Salesforce CRM sink: REST API sObject Collections, Bulk API 2.0 for backfills, OAuth 2.0."""

from replicator.sinks.salesforce.sink import SOBJECTS, SalesforceSink

__all__ = ["SOBJECTS", "SalesforceSink"]
