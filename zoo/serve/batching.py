"""Micro-batching for `zoo serve`: the photos of requests that arrive within a few milliseconds of
each other go through the model in one `predict_proba` call, and each request gets its own row.

One asyncio task collects the photos; the forward pass runs on one dedicated worker thread, so
the model has a single caller and needs no lock, and the event loop keeps serving meanwhile.
Photos that queue up while a batch runs join the next one, so under load batches fill even
with no wait; `max_batch=1` turns batching off.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np
from PIL import Image

Job = tuple[Image.Image, asyncio.Future]


class MicroBatcher:
    """Runs `predict` (photos -> one row of probabilities each) on batches of at most `max_batch`
    photos, waiting at most `wait_ms` after a batch's first photo for others to join it."""

    def __init__(self, predict: Callable[[list[Image.Image]], np.ndarray],
                 max_batch: int = 32, wait_ms: float = 5.0) -> None:
        if max_batch < 1 or wait_ms < 0:
            raise ValueError(f"need max_batch >= 1 and wait_ms >= 0, not {max_batch} and {wait_ms}")
        self.predict_batch = predict
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000.0
        self.queue: asyncio.Queue[Job] | None = None

    async def predict(self, image: Image.Image) -> np.ndarray:
        """The probabilities of one photo, computed in a batch with whatever else is waiting."""
        if self.queue is None:
            raise RuntimeError("The batcher is not running: enter `running()` (the app's lifespan).")
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((image, future))
        return await future

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Collect and run batches until exit; photos still waiting then get an error."""
        self.queue = asyncio.Queue()
        with ThreadPoolExecutor(1, thread_name_prefix="zoo-batcher") as worker:
            task = asyncio.create_task(self._serve(worker))
            try:
                yield
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                self.queue = None

    async def _serve(self, worker: ThreadPoolExecutor) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        jobs: list[Job] = []
        try:
            while True:
                jobs = []
                await self._collect(jobs)
                try:
                    rows = await loop.run_in_executor(worker, self._rows, [i for i, _ in jobs])
                except Exception as exc:  # noqa: BLE001  (the model failed: the whole batch hears why)
                    _settle(jobs, error=exc)
                else:
                    _settle(jobs, rows=rows)
        except asyncio.CancelledError:
            while not self.queue.empty():
                jobs.append(self.queue.get_nowait())
            _settle(jobs, error=RuntimeError("The server is shutting down."))
            raise

    def _rows(self, images: list[Image.Image]) -> np.ndarray:
        """One row of probabilities per photo (on the worker thread)."""
        rows = np.asarray(self.predict_batch(images), dtype=float)
        if rows.ndim != 2 or len(rows) != len(images):
            raise RuntimeError(f"The model returned {rows.shape} probabilities for {len(images)} photos.")
        return rows

    async def _collect(self, jobs: list[Job]) -> None:
        """Fill `jobs` with the next batch: the first queued photo, then others until the batch
        is full or `wait_s` has passed since the first arrived."""
        assert self.queue is not None
        jobs.append(await self.queue.get())
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while len(jobs) < self.max_batch:
            if not self.queue.empty():
                jobs.append(self.queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            try:
                jobs.append(await asyncio.wait_for(self.queue.get(), remaining))
            except TimeoutError:
                return


def _settle(jobs: list[Job], rows: np.ndarray | None = None, error: Exception | None = None) -> None:
    """Hand each job its row (or the error); requests given up meanwhile are skipped."""
    for index, (_, future) in enumerate(jobs):
        if future.done():
            continue
        if rows is None:
            future.set_exception(error)
        else:
            future.set_result(rows[index])
