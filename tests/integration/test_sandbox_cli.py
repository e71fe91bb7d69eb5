"""`replicator sandbox VENDOR` serves the vendor's API contract until it is stopped."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
import pytest

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("vendor", "probe"),
    [
        ("hubspot", lambda url: httpx.get(f"{url}/crm/v3/objects/companies", headers={"Authorization": "Bearer t"})),
        (
            "salesforce",
            lambda url: httpx.post(
                f"{url}/services/oauth2/token",
                data={"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"},
            ),
        ),
    ],
)
def test_sandbox_command_serves_with_its_limits_and_credentials(vendor: str, probe: object) -> None:
    credentials = ["--set", "token=t"] if vendor == "hubspot" else ["--set", "client_id=c", "--set", "client_secret=s"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "replicator.cli", "sandbox", vendor, "--burst", "2", "--window-s", "30", *credentials],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        answers = [probe(url).status_code for _ in range(3)]  # type: ignore[operator]
        assert answers == [200, 200, 429], answers  # the third request is over --burst 2
        stats = httpx.get(f"{url}/__sandbox/stats").json()
        assert stats["limited_burst"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_sandbox_command_refuses_an_unknown_vendor() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "replicator.cli", "sandbox", "pipedrive"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    assert "unknown vendor 'pipedrive'; use one of hubspot, salesforce" in run.stderr
