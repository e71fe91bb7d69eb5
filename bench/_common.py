"""Shared helpers for the benchmarks: machine facts, statistics, tables, JSON results.

Not a benchmark itself; each bench/*.py script imports it (the script's directory is
on sys.path when run as `uv run python bench/NAME.py`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from replicator.devstack.sample_erp import CONFIG

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        m = re.search(r"Model name:\s*(.+)", out)
        model = m.group(1).strip() if m else ""
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    pg_version = ""
    try:
        from replicator.devstack.postgres import pg_bin

        pg_version = subprocess.run(
            [str(pg_bin() / "postgres"), "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except Exception:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "postgres": pg_version,
        "platform": platform.platform(),
    }


def peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), q in [0, 100]."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        lines.append("| " + " | ".join(c.rjust(w) if n else c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{name}-{stamp}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


def workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"replicator-bench-{prefix}-", dir=os.environ.get("REPLICATOR_TMP")))


def example_config_text(**overrides: Any) -> str:
    """The sample configuration with top-level sections replaced (e.g. crm, source)."""
    raw = yaml.safe_load(CONFIG.read_text())
    for key, value in overrides.items():
        raw[key] = value
    return str(yaml.safe_dump(raw, sort_keys=False))


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_until_backfilled(config: Path, env: dict[str, str], erp_dsn: str, log_path: Path, metrics_port: int) -> Any:
    """`replicator setup`, then `replicator run` as a process, returned once its initial backfill
    is done and the pipeline is idle."""
    import contextlib

    import psycopg

    from replicator.devstack.replicator_process import cli, spawn, wait_healthy_and_idle

    setup = cli(["setup", "--config", str(config)], env, capture_output=True)
    if setup.returncode != 0:
        raise RuntimeError(f"replicator setup failed:\n{setup.stdout}\n{setup.stderr}")
    with log_path.open("w") as log:
        proc = spawn(["run"], config, env, log)
    deadline = time.monotonic() + 300
    with psycopg.connect(erp_dsn, autocommit=True) as conn:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"replicator exited ({proc.returncode}); log {log_path}")
            with contextlib.suppress(psycopg.Error):
                done = conn.execute(
                    "SELECT count(*) FROM replicator.checkpoints WHERE stream LIKE 'backfill:%%' AND position = 'done'"
                ).fetchone()
                if done and done[0] == 4:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"backfill not done after 300 s; log {log_path}")
            time.sleep(0.2)
    wait_healthy_and_idle(metrics_port, proc, 120)
    return proc


def stop_stack(proc: Any, crm: Any, cluster: Any) -> None:
    """Stop what a bench started, whichever of it got started: the replicator, BottleCRM, PostgreSQL."""
    from replicator.devstack.replicator_process import stop

    if proc is not None:
        stop(proc)
    if crm is not None:
        crm.stop()
    if cluster is not None:
        cluster.destroy()
