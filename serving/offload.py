"""Heavy request work off the event loop, with a bound on how much of it a worker takes in.

A worker's event loop answers every request, health checks included, so no scoring runs on it:
light requests (a forecast of a few plans, a review) are scored on the :data:`LIGHT` pool, and
heavy ones (a large body, a suggest search, a compare, a segment request) are parsed, scored and
serialised on the :data:`HEAVY` pool. The loop keeps only HTTP and small parses, and ``/livez``
and ``/readyz`` answer within milliseconds under load.

Admission: :class:`Offload` counts the heavy requests a worker holds (running or waiting for a
thread). Past ``threads + queue`` the next heavy request is refused at once with 429 and a
``Retry-After`` estimated from recent heavy durations, instead of piling up until clients time
out. Light requests (single-plan forecasts, reviews, health) are never refused.

Which request is heavy is decided once, by the ASGI guard, from its route and body size, and
carried to the parsing and endpoint code in a context variable (:func:`is_heavy`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

HEAVY_ROUTES = frozenset({"/v1/compare", "/v1/suggest", "/v1/segment", "/v1/model-health"})
"""Routes whose work is always heavy (many plans or events per request)."""
INLINE_BODY_BYTES = 16 * 1024
"""A request body above this many bytes is heavy whatever its route (a forecast of more than a
few plans, or of plans listing many products)."""
HEAVY_THREADS = 2
"""Threads per worker for heavy work (each request's LightGBM predict uses one thread)."""
HEAVY_QUEUE = 8
"""Heavy requests a worker keeps waiting for a thread before it answers 429."""

_heavy: contextvars.ContextVar[bool] = contextvars.ContextVar("livecast_heavy", default=False)


def is_heavy() -> bool:
    """Whether the request being handled was admitted as heavy work."""
    return _heavy.get()


class Offload:
    """A bounded thread pool with admission control (one per worker process)."""

    def __init__(self, threads: int = HEAVY_THREADS, queue: int = HEAVY_QUEUE) -> None:
        if threads < 1 or queue < 0:
            raise ValueError("threads must be >= 1 and queue >= 0")
        self.threads = threads
        self.capacity = threads + queue
        self.in_flight = 0
        self._mean_seconds = 0.5  # running mean of a heavy request's duration
        self._pool: ThreadPoolExecutor | None = None
        self._pid = os.getpid()

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None or self._pid != os.getpid():  # not a pool inherited by fork
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="livecast-heavy")
            self._pid = os.getpid()
        return self._pool

    def admit(self) -> bool:
        """Take a place for one heavy request; False when the worker is full."""
        if self.in_flight >= self.capacity:
            return False
        self.in_flight += 1
        return True

    def release(self, seconds: float) -> None:
        """Give the place back; ``seconds`` is how long the request held it."""
        self.in_flight -= 1
        self._mean_seconds += 0.2 * (seconds - self._mean_seconds)

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the queue ahead drained by the threads."""
        waves = max(1.0, (self.in_flight - self.threads + 1) / self.threads)
        return int(min(60, max(1, math.ceil(waves * self._mean_seconds))))

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the pool, awaited from the event loop."""
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, fn, *args, **kwargs)
        return await loop.run_in_executor(self._executor(), call)

    async def guarded(self, call: Callable[[], Any]) -> bool:
        """Run the coroutine function ``call`` as admitted heavy work; False if refused."""
        if not self.admit():
            return False
        t0 = time.perf_counter()
        token = _heavy.set(True)
        try:
            await call()
        finally:
            _heavy.reset(token)
            self.release(time.perf_counter() - t0)
        return True


HEAVY = Offload()
"""This worker's pool for heavy work."""
LIGHT = Offload(threads=HEAVY_THREADS, queue=0)
"""This worker's pool for light scoring (never refused; only :meth:`Offload.run` is used): a
single-plan forecast spends most of its time in LightGBM, which releases the GIL, so scored here
it leaves the event loop free, and heavy work on the other pool never delays it."""
