"""replicator: change-data-capture between an ERP database and a CRM."""

__version__ = "0.1.0"
