"""Backpressure: at most N corrections run, at most Q wait; the rest are refused at once."""

from __future__ import annotations

import asyncio
import contextvars
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

T = TypeVar("T", covariant=True)


class Busy(Exception):
    """All slots and queue places are taken (HTTP 503 with Retry-After)."""


class DeadlineExceeded(Exception):
    """The request ran out of time waiting or computing (HTTP 504)."""


class Job(Protocol[T]):
    """Blocking work the gate runs on a worker thread (``app.pipeline.Upload``)."""

    def run(self) -> T: ...

    def abandon(self) -> None:
        """Nobody waits for the result any more: stop at the next chance (may be called from any thread)."""


class CorrectionGate:
    """Runs jobs on ``slots`` worker threads with a bounded queue in front.

    A slot is freed when its job really ends, not when the request gives up, so
    timed-out work still counts against the limit until its thread is done.
    """

    def __init__(self, slots: int, queue: int):
        self.slots, self.queue = slots, queue
        self.waiting = 0
        self._started: dict[int, float] = {}  # id of running work -> when it got its slot (monotonic)
        self._free = asyncio.Semaphore(slots)
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="correct")

    async def run(self, job: Job[T], deadline: float) -> T:
        """``job.run()`` on a worker thread once a slot is free. ``Busy`` when full, ``DeadlineExceeded`` past
        ``deadline``; on either, or when the caller is cancelled (the client left), the job is abandoned."""
        try:
            await self._enter(deadline)
        except (DeadlineExceeded, asyncio.CancelledError):
            job.abandon()
            raise
        context = contextvars.copy_context()  # carries the request id into the worker's log lines
        future = asyncio.get_running_loop().run_in_executor(self._pool, context.run, job.run)
        self._started[id(future)] = time.monotonic()
        future.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=max(deadline - time.monotonic(), 0))
        except (TimeoutError, asyncio.TimeoutError):
            job.abandon()
            raise DeadlineExceeded() from None
        except asyncio.CancelledError:
            job.abandon()
            raise

    async def _enter(self, deadline: float) -> None:
        """Take a slot, waiting in the queue until ``deadline``; ``Busy`` at once when the queue is full."""
        if self.running + self.waiting >= self.slots + self.queue:
            raise Busy()
        self.waiting += 1
        try:
            await asyncio.wait_for(self._free.acquire(), timeout=max(deadline - time.monotonic(), 0))
        except (TimeoutError, asyncio.TimeoutError):
            raise DeadlineExceeded() from None
        finally:
            self.waiting -= 1

    @property
    def running(self) -> int:
        """Corrections holding a slot (their work not ended yet)."""
        return len(self._started)

    def oldest_running_s(self) -> float:
        """How long the longest-running correction has held its slot (0 when none runs)."""
        return time.monotonic() - min(self._started.values()) if self._started else 0.0

    def stuck(self, after_s: float) -> bool:
        """Whether every slot is held by work running longer than ``after_s``: nothing new can start."""
        now = time.monotonic()
        return sum(now - t > after_s for t in self._started.values()) >= self.slots

    def _release(self, future) -> None:
        self._started.pop(id(future), None)
        if not future.cancelled():
            future.exception()  # retrieved here, so work abandoned by a timed-out request logs no warning
        self._free.release()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
