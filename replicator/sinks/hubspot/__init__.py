"""HubSpot sink (CRM API v3 objects, v4 associations). See ``sink.py`` for identity and field rules."""

from replicator.sinks.hubspot.associations import LOOKUPS
from replicator.sinks.hubspot.client import OBJECT_TYPES
from replicator.sinks.hubspot.sink import HubSpotSink

OBJECTS = tuple(OBJECT_TYPES)

__all__ = ["LOOKUPS", "OBJECTS", "OBJECT_TYPES", "HubSpotSink"]
