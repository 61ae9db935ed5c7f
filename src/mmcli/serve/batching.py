"""Micro-batching: concurrent requests predicted in one model call.

A request's examples wait in a queue; the batcher takes the first and, while other
requests are on their way (read, parsed, checked: `expecting()`), waits up to `wait_s`
(`--batch-wait-ms`) for them, up to `max_batch` examples, then hands the batch to the
model thread as one call. A lone request does not wait at all. While the model works, new
requests queue up and form the next batch, so a busy server batches more without waiting
longer. The model runs in an
executor thread of its own, never on the event loop: `/health` answers while it predicts.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Callable, Hashable


@dataclass
class Job:
    records: list
    key: Hashable  # requests share a model call only when their keys (the options) are equal
    future: asyncio.Future


class MicroBatcher:
    """`work(list of (records, key))` runs in `executor` and returns one answer (or exception) per job."""

    def __init__(self, work: Callable[[list[tuple[list, Any]]], list[Any]], executor: Executor,
                 wait_s: float, max_batch: int, expecting: Callable[[], int] = lambda: 1) -> None:
        self.work, self.executor, self.expecting = work, executor, expecting
        self.wait_s, self.max_batch = wait_s, max_batch
        self.queue: asyncio.Queue[Job] | None = None
        self.held: Job | None = None  # a job that did not fit the last batch: the next one starts with it
        self.task: asyncio.Task | None = None
        self.calls = 0  # batches so far (GET /info)
        self.largest = 0  # examples in the largest batch so far

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    async def submit(self, records: list, key: Hashable) -> Any:
        """The job's answer; its exception is raised here, in the request that sent it."""
        assert self.queue is not None, "start() the batcher first"
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self.queue.put(Job(records, key, future))
        result = await future
        if isinstance(result, BaseException):
            raise result
        return result

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            try:
                results = await loop.run_in_executor(self.executor, self.work, [(j.records, j.key) for j in batch])
            except Exception as exc:  # noqa: BLE001 (work() returns errors; this is a last resort)
                results = [exc] * len(batch)
            self.calls += 1
            self.largest = max(self.largest, sum(len(j.records) for j in batch))
            for job, result in zip(batch, results):
                if not job.future.done():  # the client may have gone
                    job.future.set_result(result)

    async def _collect(self) -> list[Job]:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        first, self.held = (self.held, None) if self.held is not None else (await self.queue.get(), None)
        batch, size = [first], len(first.records)
        deadline = loop.time() + self.wait_s
        while size < self.max_batch:
            if self.queue.empty():
                left = deadline - loop.time()
                if left <= 0 or not self.expecting():
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), left)
                except asyncio.TimeoutError:
                    break
            else:
                job = self.queue.get_nowait()
            if size + len(job.records) > self.max_batch:
                self.held = job
                break
            batch.append(job)
            size += len(job.records)
        return batch
