"""Sandboxes: HTTP servers that follow a SaaS CRM's documented API contract, for tests,
the quickstart and benchmarks (``replicator sandbox VENDOR``)."""
