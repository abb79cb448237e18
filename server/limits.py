"""Bounded concurrency: a full server answers at once (503 with Retry-After) instead of queueing."""

from __future__ import annotations

from collections.abc import Callable

from server.errors import APIError


class Slot:
    """A held place; ``release`` is idempotent, so every path that ends a request may call it."""

    def __init__(self, limiter: "ConcurrencyLimiter") -> None:
        self._limiter: ConcurrencyLimiter | None = limiter
        self._also: list[Callable[[], None]] = []

    def also_release(self, release: Callable[[], None]) -> None:
        """Release something else held for the request (its code container) with this place."""
        self._also.append(release)

    def release(self) -> None:
        if self._limiter is not None:
            self._limiter.in_use -= 1
            self._limiter = None
            for release in self._also:
                release()


class ConcurrencyLimiter:
    def __init__(self, max_concurrency: int, retry_after_s: int = 1) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self.retry_after_s = retry_after_s
        self.in_use = 0

    def acquire(self) -> Slot:
        # Single-threaded event loop: check and increment cannot interleave.
        if self.in_use >= self.max_concurrency:
            raise APIError(
                503,
                f"the server is at capacity ({self.max_concurrency} requests in flight); retry shortly",
                type="server_overloaded",
                code="server_busy",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        self.in_use += 1
        return Slot(self)
