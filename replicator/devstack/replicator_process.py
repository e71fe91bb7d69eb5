"""The replicator as a child process of the quickstart, the benches and the tests: its
environment, its start with a log, waiting until it is idle, and its stop."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx

from replicator.devstack.quickstart_erp import QuickErp


def cli(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``replicator ARGS`` run to its end."""
    return subprocess.run([sys.executable, "-m", "replicator.cli", *args], env=env, text=True, **kwargs)


def spawn(args: list[str], config: Path | str, env: dict[str, str], log: IO[str]) -> subprocess.Popen[str]:
    """``replicator ARGS --config CONFIG`` started in the background, its output into ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "replicator.cli", *args, "--config", str(config)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(proc: subprocess.Popen[str], timeout: float = 20.0) -> None:
    """SIGTERM (the replicator drains and commits), SIGKILL when it has not stopped within ``timeout``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def run_until_interrupted(proc: subprocess.Popen[str]) -> None:
    """Wait while the replicator runs; Ctrl-C ends the wait (the caller's cleanup stops it)."""
    try:
        while proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass


def erp_env(erp: QuickErp, metrics_port: int) -> dict[str, str]:
    """This process's environment plus what the sample configuration reads for the ERP side."""
    return {
        **os.environ,
        **erp.env,
        "ERP_DSN": erp.dsn,
        "STATE_DSN": erp.state_dsn,
        "REPLICATOR_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
    }


def wait_healthy_and_idle(
    metrics_port: int,
    proc: subprocess.Popen[str],
    timeout: float,
    *,
    ready: Callable[[], bool] = lambda: True,
    waiting_for: str = "become idle",
) -> None:
    """Until ``ready()`` and /healthz says healthy with nothing pending; an exited replicator raises RuntimeError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"replicator exited with {proc.returncode}")
        if ready():
            try:
                body = httpx.get(f"http://127.0.0.1:{metrics_port}/healthz", timeout=2).json()
                if body.get("healthy") and body.get("pending") == 0:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    raise TimeoutError(f"the replicator did not {waiting_for} in time")
