"""`replicator sandbox VENDOR`: serve a vendor sandbox (HubSpot, Salesforce) for trying the
connectors without an account, and for the quickstart and benchmarks."""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Any

import typer

from replicator.cli.app import app, console

_VENDORS = ("hubspot", "salesforce")


def _sandbox(vendor: str, options: dict[str, Any]) -> Any:
    from replicator.sandbox.core import Faults, Limits

    faults = Faults.model_validate(options.pop("faults"))
    limits = Limits.model_validate(options.pop("limits"))
    if vendor == "hubspot":
        from replicator.sandbox.hubspot import HubSpotSandbox

        return HubSpotSandbox(faults=faults, limits=limits, **options)
    from replicator.sandbox.salesforce import SalesforceSandbox

    return SalesforceSandbox(faults=faults, limits=limits, **options)


def _options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise typer.BadParameter(f"{pair!r}: expected KEY=VALUE, e.g. token=pat-sandbox", param_hint="--set")
        options[key.replace("-", "_")] = _typed(value)
    return options


def _typed(value: str) -> Any:
    """Numbers as numbers (token_ttl_s=5), everything else as text."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


@app.command()
def sandbox(
    vendor: Annotated[str, typer.Argument(help="hubspot or salesforce")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port; 0 picks a free one")] = 0,
    burst: Annotated[int | None, typer.Option(help="requests allowed per rolling window")] = None,
    window_s: Annotated[float, typer.Option(help="the rolling window, seconds")] = 10.0,
    daily: Annotated[int | None, typer.Option(help="requests allowed per rolling 24 h")] = None,
    latency_ms: Annotated[float, typer.Option(help="added to every API request")] = 0.0,
    rate_429: Annotated[float, typer.Option(help="share of requests answered 429 + Retry-After")] = 0.0,
    retry_after_s: Annotated[float, typer.Option(help="Retry-After of injected 429s")] = 1.0,
    rate_5xx: Annotated[float, typer.Option(help="share of requests answered with a 5xx")] = 0.0,
    rate_timeout: Annotated[float, typer.Option(help="share of requests never answered")] = 0.0,
    rate_reset: Annotated[float, typer.Option(help="share of connections reset")] = 0.0,
    rate_partial: Annotated[float, typer.Option(help="share of batch records failed one by one")] = 0.0,
    seed: Annotated[int | None, typer.Option(help="seed of the fault dice, for repeatable runs")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="a constructor option of the vendor's sandbox, KEY=VALUE (e.g. token=...)"),
    ] = None,
) -> None:
    """Serve a sandbox that follows the vendor's API contract, until Ctrl-C.

    It holds its records in memory; GET /__sandbox/objects/OBJECT shows them, GET /__sandbox/stats
    counts requests, limits and injected faults, POST /__sandbox/faults and /__sandbox/limits change
    them while it runs.
    """
    from replicator.sandbox.core import serve

    if vendor not in _VENDORS:
        console.print(f"[red]error:[/red] unknown vendor {vendor!r}; use one of {', '.join(_VENDORS)}")
        raise typer.Exit(2)
    options = _options(set_ or [])
    options["faults"] = {
        "latency_ms": latency_ms,
        "rate_429": rate_429,
        "retry_after_s": retry_after_s,
        "rate_5xx": rate_5xx,
        "rate_timeout": rate_timeout,
        "rate_reset": rate_reset,
        "rate_partial": rate_partial,
        "seed": seed,
    }
    options["limits"] = {"burst": burst, "window_s": window_s, "daily": daily}
    try:
        running = serve(_sandbox(vendor, options), host, port)
    except (TypeError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    print(running.url, flush=True)  # first line of stdout: scripts read the address from it
    console.print(f"{vendor} sandbox on {running.url} (inspect: {running.url}/__sandbox/stats); Ctrl-C stops it")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()
