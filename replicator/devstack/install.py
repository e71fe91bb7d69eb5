"""`python -m replicator.devstack.install`: fetch every component the tests and the quickstart
start, so that no test spends its time limit on a download. Idempotent (all of it is cached)."""

from __future__ import annotations

import time

from replicator.devstack.bottlecrm import ensure_installed
from replicator.devstack.connect import install_connect
from replicator.devstack.tansu import tansu_binary


def main() -> int:
    for what, install in (
        ("BottleCRM (django-crm, Python 3.12)", ensure_installed),
        ("tansu broker", tansu_binary),
        ("Kafka Connect 3.9 + Debezium 3.6.3", install_connect),
    ):
        started = time.monotonic()
        install()
        print(f"==> {what}: ready ({time.monotonic() - started:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
