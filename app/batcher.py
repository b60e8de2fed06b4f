"""Micro-batching of the model forward across concurrent requests (on by default on CUDA).

A ``ModelBatcher`` takes what a ``Corrector`` takes: ``estimate(photo)`` analyses the photo on the
calling worker thread, then hands the analysis to the batcher and waits. The batcher's one thread
runs ``Corrector.estimate_batch`` on up to ``max_size`` waiting analyses at once. Before a forward it
waits, at most ``max_wait_s``, for more only while other corrections are still decoding (inside
``expect``, on their own threads): a lone request never waits.
A photo's correction does not depend on its batch (``Corrector``'s per-sample linear layers), and
an error in a forward (CUDA out of memory) is raised in every request of that batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager, nullcontext

import numpy as np

from app.metrics import Metrics
from model.corrector import Analysis, Correction, Corrector


def batching_wanted(mode: str, device) -> bool:
    """``WBVAE_BATCH``: on, off, or auto (on for CUDA only: on the CPU a forward is ~3 ms of ~0.4 s and
    batching measured no gain; docs/benchmark.md)."""
    return mode == "on" or (mode == "auto" and device.type == "cuda")


class BatcherClosed(RuntimeError):
    """The service is shutting down."""


class ModelBatcher:
    """Collects analyses from worker threads; one thread runs them through the model in batches."""

    def __init__(self, corrector: Corrector, max_size: int, max_wait_s: float, metrics: Metrics | None = None):
        if max_size < 1 or max_wait_s < 0:
            raise ValueError(f"need max_size >= 1 and max_wait_s >= 0, got {max_size}, {max_wait_s}")
        self.corrector, self.max_size, self.max_wait_s, self.metrics = corrector, max_size, max_wait_s, metrics
        self._cond = threading.Condition()
        self._waiting: list[tuple[Analysis, Future]] = []
        self._expected = 0  # corrections between expect() and their estimate()
        self._closed = False
        self._announced = threading.local()  # this thread's correction inside expect(), not handed in yet
        self._thread = threading.Thread(target=self._run, name="model-batcher", daemon=True)
        self._thread.start()

    @contextmanager
    def expect(self) -> Iterator[None]:
        """Around a correction's work before the model, on its worker thread: the batcher may wait for it until
        this thread's ``estimate`` hands it in (or the block ends without one)."""
        with self._cond:
            self._expected += 1
        self._announced.pending = True
        try:
            yield
        finally:
            if self._announced.pending:
                self._announced.pending = False
                with self._cond:
                    self._expected -= 1
                    self._cond.notify_all()

    def estimate(self, img: np.ndarray) -> Correction:
        """The correction for one uint8 (H, W, 3) photo (as ``Corrector.estimate``), computed in a batch; blocks
        until it is done."""
        analysis = self.corrector.analyse(img)
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise BatcherClosed("the service is shutting down")
            if getattr(self._announced, "pending", False):
                self._announced.pending = False
                self._expected -= 1
            self._waiting.append((analysis, future))
            self._cond.notify_all()
        return future.result()

    def _next_batch(self) -> list[tuple[Analysis, Future]] | None:
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if not self._waiting:
                return None
            deadline = time.monotonic() + self.max_wait_s
            while len(self._waiting) < self.max_size and self._expected > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, self._waiting = self._waiting[: self.max_size], self._waiting[self.max_size :]
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                results = self.corrector.estimate_batch([analysis for analysis, _ in batch])
            except BaseException as exc:  # OOM and the like: every request of the batch gets it
                for _, future in batch:
                    future.set_exception(exc)
            else:
                for (_, future), result in zip(batch, results):
                    future.set_result(result)
            if self.metrics is not None:
                self.metrics.batch_size.observe(len(batch))

    def close(self) -> None:
        """Finish the waiting batches, then stop the thread; later ``estimate`` calls raise ``BatcherClosed``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)


def expecting(model: Corrector | ModelBatcher) -> AbstractContextManager:
    """``model.expect()`` for a batcher (it may wait for this correction); nothing to announce to a Corrector."""
    return model.expect() if isinstance(model, ModelBatcher) else nullcontext()
