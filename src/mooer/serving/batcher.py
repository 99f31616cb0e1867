"""Micro-batching: concurrent requests gathered into one model call, by one worker thread.

The server featurises each upload in its own request (so bad input fails early with a 4xx) and hands the
features to :class:`MicroBatcher`. A single worker thread owns the model. It takes the first waiting job,
keeps collecting for ``window_ms`` (or until ``max_batch_size`` jobs are waiting), groups the jobs by
``(task, decoding options)`` (one prompt and one generation config per model call), sorts each group by
length (longest first, as :meth:`mooer.api.MooER.transcribe` does, so little padding is decoded) and runs
:meth:`mooer.api.MooER.decode_batch` once per chunk of at most ``max_batch_size``.

Batched and single decoding give the same tokens (the batch layout is padding-invariant; the golden
fixtures check it), so a request's answer does not depend on its neighbours.

A streaming job (token-by-token output through a ``transformers`` streamer) always runs alone, because
the streamers only support one row.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import torch
from transformers import TextIteratorStreamer

from mooer.decoding import DecodingOptions

log = logging.getLogger("mooer.serving")

__all__ = ["MicroBatcher", "ServerBusy", "TokenStreamer", "StreamCancelled"]


class DecodingModel(Protocol):
    """What the batcher needs: one batch of features → one output per row
    (:meth:`mooer.inference.pipeline.Pipeline.generate` provides it; its rows are ``Generation`` objects)."""

    def generate(self, features: Sequence[torch.Tensor], task: str, options: DecodingOptions, *,
                 streamer: Any = None) -> list[Any]: ...


class ServerBusy(Exception):
    """The queue of waiting requests is full."""


class StreamCancelled(Exception):
    """Raised inside generation when the client of a streamed request went away."""


class TokenStreamer(TextIteratorStreamer):
    """A ``transformers.TextIteratorStreamer`` that can be cancelled from another thread.

    Generation runs in the batcher's worker thread and calls :meth:`put` with each new token; the request
    iterates over the streamer to get text deltas. :meth:`close` (client gone) makes the next ``put``
    raise :class:`StreamCancelled`, which stops generation, and unblocks a reader waiting for text.
    ``skip_prompt`` is not needed: generating from ``inputs_embeds`` yields only new tokens.
    """

    def __init__(self, tokenizer: Any, timeout: float | None = None) -> None:
        super().__init__(tokenizer, skip_prompt=False, skip_special_tokens=True, timeout=timeout)
        self.cancelled = threading.Event()

    def put(self, value: Any) -> None:
        if self.cancelled.is_set():
            raise StreamCancelled()
        super().put(value)

    def wake(self) -> None:
        """Unblock a reader waiting for text (iteration then stops)."""
        self.text_queue.put(self.stop_signal)

    def close(self) -> None:
        """Stop generation at the next token and wake up a waiting reader."""
        if not self.cancelled.is_set():
            self.cancelled.set()
            self.wake()


@dataclass
class _Job:
    features: torch.Tensor
    task: str
    options: DecodingOptions
    future: Future
    streamer: Any = None
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple[str, DecodingOptions]:
        return self.task, self.options


@dataclass
class _Stats:
    submitted: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    rejected_busy: int = 0
    batches: int = 0
    streams: int = 0
    max_batch_size: int = 0
    model_seconds: float = 0.0
    batch_sizes: Counter = field(default_factory=Counter)


class MicroBatcher:
    """Gathers concurrent decoding requests into batched model calls on one worker thread.

    >>> batcher = MicroBatcher(model, window_ms=20, max_batch_size=8)   # doctest: +SKIP
    >>> ids = batcher.submit(features, "asr", PRESETS["official"]).result()   # doctest: +SKIP
    """

    def __init__(self, model: DecodingModel, *, window_ms: float = 20.0, max_batch_size: int = 8,
                 max_queue: int = 256) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.model = model
        self.window = max(0.0, window_ms) / 1000.0
        self.max_batch_size = max_batch_size
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self._stats = _Stats()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._busy_since: float | None = None

    # --------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="mooer-inference", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Finish the current batch, fail the waiting jobs, and stop the worker thread."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        thread.join(timeout)
        self._thread = None
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(RuntimeError("the server is shutting down"))

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------------------------------ submit
    def submit(self, features: torch.Tensor, task: str, options: DecodingOptions,
               streamer: Any = None) -> Future:
        """Queue one featurised input; the future resolves to its generated ids (EOS included).

        Cancelling the future before the job runs removes it from its batch. With ``streamer`` the job
        runs alone and feeds the streamer as tokens are generated. Raises :class:`ServerBusy` when
        ``max_queue`` jobs are already waiting.
        """
        if not self.running:
            self.start()
        job = _Job(features, task, options, Future(), streamer)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._lock:
                self._stats.rejected_busy += 1
            raise ServerBusy(f"{self._queue.maxsize} requests are already waiting; try again later") from None
        with self._lock:
            self._stats.submitted += 1
        return job.future

    def stats(self) -> dict[str, Any]:
        """Counters since start: requests, batches, the batch-size histogram, time spent in the model."""
        with self._lock:
            s = self._stats
            busy = s.model_seconds + (time.monotonic() - self._busy_since if self._busy_since else 0.0)
            return {
                "running": self.running,
                "queued": self._queue.qsize(),
                "submitted": s.submitted,
                "completed": s.completed,
                "failed": s.failed,
                "cancelled": s.cancelled,
                "rejected_busy": s.rejected_busy,
                "batches": s.batches,
                "streams": s.streams,
                "max_batch_size_seen": s.max_batch_size,
                "batch_size_histogram": {str(k): v for k, v in sorted(s.batch_sizes.items())},
                "model_seconds": round(busy, 3),
                "window_ms": self.window * 1000.0,
                "max_batch_size": self.max_batch_size,
            }

    # -------------------------------------------------------------------------------------------- work
    def _gather(self, first: _Job) -> list[_Job]:
        """The first job plus whatever arrives within the window, up to ``max_batch_size`` batchable jobs."""
        jobs = [first]
        if first.streamer is not None:
            return jobs
        deadline = time.monotonic() + self.window
        batchable = 1
        while batchable < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:  # stop sentinel: finish what was gathered first
                self._queue.put(None)
                break
            jobs.append(job)
            if job.streamer is None:
                batchable += 1
        return jobs

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if first is None:
                break
            jobs = self._gather(first)
            groups: dict[tuple[str, DecodingOptions], list[_Job]] = {}
            streams: list[_Job] = []
            for job in jobs:
                if job.streamer is not None:
                    streams.append(job)
                else:
                    groups.setdefault(job.key, []).append(job)
            for group in groups.values():  # dicts keep insertion order: the oldest group first
                group.sort(key=lambda j: -j.features.shape[0])
                for start in range(0, len(group), self.max_batch_size):
                    self._decode(group[start : start + self.max_batch_size])
            for job in streams:
                self._decode([job])

    def _decode(self, jobs: list[_Job]) -> None:
        live = [j for j in jobs if j.future.set_running_or_notify_cancel()]
        with self._lock:
            self._stats.cancelled += len(jobs) - len(live)
        if not live:
            return
        streamer = live[0].streamer if len(live) == 1 else None
        t0 = time.monotonic()
        with self._lock:
            self._busy_since = t0
        try:
            rows = self.model.generate([j.features for j in live], live[0].task, live[0].options,
                                       streamer=streamer)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to its request
            if not isinstance(exc, StreamCancelled):
                log.exception("decoding a batch of %d failed", len(live))
            if streamer is not None:  # the reader learns the outcome from the future
                streamer.text_queue.put(streamer.stop_signal)
            for j in live:
                j.future.set_exception(exc)
            with self._lock:
                self._record(len(live), t0, streamer, ok=False, cancelled=isinstance(exc, StreamCancelled))
            return
        for j, ids in zip(live, rows):
            j.future.set_result(ids)
        with self._lock:
            self._record(len(live), t0, streamer, ok=True)

    def _record(self, size: int, t0: float, streamer: Any, ok: bool, cancelled: bool = False) -> None:
        s = self._stats
        s.model_seconds += time.monotonic() - t0
        self._busy_since = None
        if ok:
            s.completed += size
        elif cancelled:
            s.cancelled += size
        else:
            s.failed += size
        if streamer is not None:
            s.streams += 1
        else:
            s.batches += 1
            s.batch_sizes[size] += 1
            s.max_batch_size = max(s.max_batch_size, size)
