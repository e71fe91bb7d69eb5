"""Finite jobs over the same machinery as the service: setup, check, backfill, reconcile."""
