"""Exponential backoff with full jitter."""

from __future__ import annotations

import random

from replicator.config.model import RetryConfig


def backoff(
    attempt: int, cfg: RetryConfig, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """Seconds to wait before retry number `attempt` (1-based).

    Full jitter spreads retries of many workers; a server's Retry-After is a floor.
    """
    ceiling = min(cfg.max_backoff_s, cfg.initial_backoff_s * (2 ** (attempt - 1)))
    delay = (rng or random).uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
