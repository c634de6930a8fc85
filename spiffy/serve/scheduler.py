"""The request queue and the one decoding thread.

Requests wait in a bounded FIFO queue (full: the caller answers 429). The decoding thread takes the
oldest request and, when batching is on and the engine can batch, every other waiting request with
the same settings (``Plan.key``) up to ``max_batch``; they decode as one batch, block step by block
step, each row exactly as it would alone. Tokens are handed to the request's asyncio queue as soon
as they are final (a dLLM block, an AR round). A request whose client went away is dropped from the
queue at once; if it is decoding alone, its decode stops at the next block or round.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Optional


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__("the request queue is full")
        self.retry_after = retry_after


class Cancelled(Exception):
    """Raised inside a decode whose every row's client has gone."""


@dataclass
class Job:
    plan: object
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)   # ("tokens", list) / ("done", Outcome) / ("error", exc)
    cancelled: bool = False
    t_queued: float = field(default_factory=time.perf_counter)
    t_started: Optional[float] = None

    def put(self, kind: str, value):
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


class Scheduler:
    def __init__(self, engine, max_queue: int = 64, max_batch: int = 8, batching: bool = True, metrics=None):
        self.engine, self.max_queue, self.max_batch = engine, max_queue, max_batch
        self.batching = batching and engine.batchable
        self.metrics = metrics
        self._queue: deque = deque()
        self._cv = threading.Condition()
        self._running = 0
        self._stopping = False
        self._job_s = 1.0   # running mean of a batch's wall time, for Retry-After
        self._thread = threading.Thread(target=self._work, name="spiffy-decoder", daemon=True)

    def start(self):
        self._thread.start()

    def stop(self, timeout: Optional[float] = None):
        """Finish what is queued and running, then end the decoding thread."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join(timeout)

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        return self._running

    def submit(self, plan, loop) -> Job:
        job = Job(plan, loop)
        with self._cv:
            if self._stopping:
                raise QueueFull(5)
            if len(self._queue) >= self.max_queue:
                per = self._job_s / (self.max_batch if self.batching else 1)
                raise QueueFull(max(1, int(per * len(self._queue) + 0.999)))
            self._queue.append(job)
            self._gauge()
            self._cv.notify()
        return job

    def cancel(self, job: Job):
        with self._cv:
            job.cancelled = True
            try:
                self._queue.remove(job)
            except ValueError:
                pass
            self._gauge()

    def _gauge(self):
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._queue))
            self.metrics.running.set(self._running)

    def _take(self) -> Optional[list]:
        with self._cv:
            while not self._queue:
                if self._stopping:
                    return None
                self._cv.wait()
            first = self._queue.popleft()
            batch = [first]
            if self.batching:
                for j in list(self._queue):
                    if len(batch) >= self.max_batch:
                        break
                    if j.plan.key == first.plan.key:
                        self._queue.remove(j)
                        batch.append(j)
            self._running = len(batch)
            self._gauge()
            return batch

    def _work(self):
        while True:
            batch = self._take()
            if batch is None:
                return
            t0 = time.perf_counter()
            for j in batch:
                j.t_started = t0

            def on_tokens(i, new):
                if all(j.cancelled for j in batch):
                    raise Cancelled()
                if not batch[i].cancelled:
                    batch[i].put("tokens", list(new))

            try:
                outcomes = self.engine.run([j.plan for j in batch], on_tokens)
                for j, o in zip(batch, outcomes):
                    j.put("done", o)
                if self.metrics is not None:
                    self.metrics.batch_size.observe(len(batch))
            except Cancelled:
                for j in batch:
                    j.put("error", Cancelled())
            except Exception as e:   # reported to each waiting request as a 500 without a traceback
                for j in batch:
                    j.put("error", e)
            dt = time.perf_counter() - t0
            self._job_s = 0.8 * self._job_s + 0.2 * dt
            with self._cv:
                self._running = 0
                self._gauge()
