"""BottleCRM (django-crm) sink. See ``sink.py`` for identity rules and accepted fields."""

from replicator.sinks.base import CrmError
from replicator.sinks.bottlecrm.client import SPECS
from replicator.sinks.bottlecrm.sink import BottleCrmSink

OBJECTS = tuple(SPECS)

__all__ = ["OBJECTS", "BottleCrmSink", "CrmError"]
