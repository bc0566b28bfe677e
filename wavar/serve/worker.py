"""The one worker thread that runs every model computation, in order, from a bounded queue.

Why one thread: a model is a mutable torch module and the sampler keeps per-call state in it
(caches, compiled steps), so two requests must never use one at the same time; and on a CPU
two generations side by side run no faster than one after the other. Why a queue and not a
lock: waiting generations that ask for the same thing (same model and settings, no seed, no
conditioning image) can be merged into one batch, which costs about as much as the largest
of them alone (a sampling step is per-step overhead on a CPU, whatever the rows).

A :class:`Job` reports through ``emit(kind, data)``; the web side turns those into
server-sent events. A job whose client left, or that ran out of time, is skipped, and a
generation in the CPU loop stops at its next step when all its jobs are given up
(:func:`watching`; on a GPU, at its next stage).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from wavar.errors import SamplingMemoryError, WavarError
from wavar.serve.errors import ApiError

log = logging.getLogger("wavar.serve")


class Cancelled(Exception):
    """Every job of a running generation was given up (client gone or timed out)."""


@dataclass(eq=False)
class Job:
    """One request's work for the worker.

    ``work(model, jobs)`` runs it, together with any jobs merged into it (``jobs[0]`` is this
    one), and reports through each job's ``emit``. Jobs with equal, non-None ``batch_key``
    may be merged while their ``rows`` add up to at most the worker's ``max_rows``.
    """

    model: str
    work: Callable[[Any, list[Job]], None]
    emit: Callable[[str, dict], None]
    timeout_s: float
    batch_key: Hashable | None = None
    rows: int = 0
    payload: Any = None
    created: float = field(default_factory=time.monotonic)
    given_up: threading.Event = field(default_factory=threading.Event)

    @property
    def deadline(self) -> float:
        return self.created + self.timeout_s

    @property
    def live(self) -> bool:
        """Someone still waits for this job's answer."""
        return not self.given_up.is_set() and time.monotonic() < self.deadline

    def give_up(self) -> None:
        self.given_up.set()


class Worker:
    """The thread and its queue. ``submit`` refuses with 429 when ``queue_size`` jobs wait."""

    def __init__(self, registry, queue_size: int, max_rows: int) -> None:
        self.registry = registry
        self.queue_size = queue_size
        self.max_rows = max_rows
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.running: list[Job] = []  # the jobs being worked on now (for /api/health)
        self.stopped = 0  # generations stopped because nobody waited for them any more

    # -- the web side

    def submit(self, job: Job) -> int:
        """Queue ``job``; return how many jobs are ahead of it (waiting or running)."""
        with self._cond:
            self._queue = deque(j for j in self._queue if j.live)  # forget the abandoned
            if len(self._queue) >= self.queue_size:
                raise ApiError(429, f"the server is busy: {len(self._queue)} requests are "
                                    "already waiting (the queue's limit); try again shortly")
            self._queue.append(job)
            ahead = len(self._queue) - 1 + len(self.running)
            self._cond.notify()
        self._ensure_started()
        return ahead

    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)

    def _ensure_started(self) -> None:
        with self._cond:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._loop, name="wavar-serve-worker",
                                                daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            for job in self._queue:
                job.give_up()
            self._queue.clear()
            for job in self.running:
                job.give_up()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # -- the worker thread

    def _take(self) -> list[Job] | None:
        """The next live job and the waiting jobs merged with it; None when stopping."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                while self._queue and not self._queue[0].live:
                    self._queue.popleft()
                if self._queue:
                    break
                self._cond.wait()
            first = self._queue.popleft()
            jobs = [first]
            if first.batch_key is not None:
                rows = first.rows
                for job in list(self._queue):
                    if (job.live and job.batch_key == first.batch_key
                            and rows + job.rows <= self.max_rows):
                        self._queue.remove(job)
                        jobs.append(job)
                        rows += job.rows
            self.running = jobs
            return jobs

    def _loop(self) -> None:
        while (jobs := self._take()) is not None:
            try:
                self._run(jobs)
            finally:
                with self._cond:
                    self.running = []

    def _run(self, jobs: list[Job]) -> None:
        if len(jobs) > 1:
            log.info("batching %d waiting requests (%d rows) for %s into one generation",
                     len(jobs), sum(j.rows for j in jobs), jobs[0].model)
        for job in jobs:
            job.emit("started", {"batched_with": len(jobs) - 1,
                                 "waited_s": round(time.monotonic() - job.created, 3)})
        try:
            model = self.registry.load(jobs[0].model)
            jobs[0].work(model, jobs)
        except Cancelled:
            self.stopped += 1
            log.info("stopped a generation for %s: no client waits for it", jobs[0].model)
        except ApiError as e:
            _emit_all(jobs, "error", e.payload())
        except SamplingMemoryError as e:  # the server's memory, not the request, falls short
            _emit_all(jobs, "error", ApiError(503, str(e)).payload())
        except (WavarError, ValueError) as e:  # bad input found by the codec or the sampler
            _emit_all(jobs, "error", ApiError(400, str(e)).payload())
        except Exception as e:  # the server's own fault: say so, keep serving
            log.exception("request for %s failed", jobs[0].model)
            _emit_all(jobs, "error", ApiError(500, f"internal error: {type(e).__name__}: {e}")
                      .payload())


def _emit_all(jobs: list[Job], kind: str, data: dict) -> None:
    for job in jobs:
        job.emit(kind, data)


@contextmanager
def watching(model, jobs: list[Job], extra: dict | None = None,
             every_s: float = 0.25) -> Iterator[None]:
    """While the block runs, report each model step as progress (at most every ``every_s``;
    with ``extra``'s items as they are then) and raise :class:`Cancelled` at a step once no
    job is live.

    The sampler has no callback, so this listens where every step passes: a forward hook on
    the model's output head (called once per step by the CPU loop). Only on the CPU: on a GPU
    the generation is captured into a CUDA graph, which a hook must not disturb (and where it
    would not fire), so there it runs to the end of its current sampler call (a staged
    generation, :mod:`wavar.serve.stages`, stops between calls).
    """
    head = getattr(model, "head", None)
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    if head is None or not hasattr(head, "register_forward_hook") or not on_cpu:
        yield
        return
    start = time.monotonic()
    state = {"steps": 0, "last": start}

    def hook(module, args, output) -> None:
        state["steps"] += 1
        now = time.monotonic()
        if now - state["last"] >= every_s:
            state["last"] = now
            if not any(j.live for j in jobs):
                raise Cancelled()
            _emit_all(jobs, "progress", {"step": state["steps"],
                                         "seconds": round(now - start, 2), **(extra or {})})

    handle = head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
