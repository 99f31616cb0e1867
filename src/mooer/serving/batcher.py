"""Micro-batching: concurrent requests gathered into one model call, by one worker thread.

The server featurises each upload in its own request (so bad input fails early with a 4xx) and hands the
features to :class:`MicroBatcher`. A single worker thread owns the model. Jobs wait in one queue per
``(task, decoding options)`` (one prompt and one generation config per model call); the worker takes the
queue whose oldest job has waited longest, waits up to ``window_ms`` for it to fill to ``max_batch_size``,
sorts the batch by length (longest first, as :meth:`mooer.api.MooER.transcribe` does, so little padding is
decoded) and runs :meth:`mooer.inference.pipeline.Pipeline.generate` on it. Grouping *before* the cut
keeps batches full under mixed traffic (cutting first, then splitting by task, made many batches of one).

Batched and single decoding give the same tokens (the batch layout is padding-invariant; the golden
fixtures check it), so a request's answer does not depend on its neighbours.

A streaming job (token-by-token output through a ``transformers`` streamer) always runs alone, because
the streamers only support one row.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
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
    """The queue is full; ``retry_after`` is an estimate (seconds) of when it will have room again."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StreamCancelled(Exception):
    """Raised inside generation when a streaming client went away."""


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


#: Seconds of audio per feature frame (LFR: one frame every 6 × 10 ms).
FRAME_SECONDS = 0.06


def refusal(jobs: int, audio: float, job_audio: float, max_jobs: int, max_audio: float | None) -> str | None:
    """Why a queue holding ``jobs`` jobs and ``audio`` seconds cannot take one of ``job_audio`` seconds (e.g.
    ``"12 requests"``), or None when it can. One job is always taken, however long."""
    if jobs >= max_jobs:
        return f"{jobs} requests"
    if max_audio is not None and jobs > 0 and audio + job_audio > max_audio:
        return f"{audio:.0f} s of audio"
    return None


def retry_after(queued_audio: float, seconds_per_audio_second: float) -> float:
    """Seconds until ``queued_audio`` is decoded at the measured speed (at least 1; 1 before any measurement)."""
    speed = seconds_per_audio_second
    return max(1.0, round(queued_audio * speed, 1)) if speed else 1.0


@dataclass
class _Job:
    features: torch.Tensor
    task: str
    options: DecodingOptions
    future: Future
    streamer: Any = None
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple:
        """Jobs with the same key can share a model call (one prompt, one generation config); a streaming
        job has a key of its own (streamers take one row)."""
        return (self.task, self.options) if self.streamer is None else ("stream", id(self))

    @property
    def audio_seconds(self) -> float:
        return self.features.shape[0] * FRAME_SECONDS


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
    audio_seconds: float = 0.0  # audio decoded (completed jobs)
    batch_sizes: Counter = field(default_factory=Counter)


class MicroBatcher:
    """Gathers concurrent decoding requests into batched model calls on one worker thread.

    Waiting jobs are kept in one FIFO per key (task, options), so mixed traffic still makes full batches:
    the worker serves the key whose oldest job has waited longest, and takes up to ``max_batch_size`` of
    its jobs. The queue is bounded by work, not by count: ``max_queued_audio_s`` seconds of audio (and
    ``max_queue`` jobs); past either bound :meth:`submit` raises :class:`ServerBusy` at once, with a
    ``retry_after`` estimated from the measured decoding speed.

    >>> batcher = MicroBatcher(pipeline, window_ms=20, max_batch_size=8)   # doctest: +SKIP
    >>> generation = batcher.submit(features, "asr", PRESETS["official"]).result()   # doctest: +SKIP
    """

    def __init__(self, model: DecodingModel, *, window_ms: float = 20.0, max_batch_size: int = 8,
                 max_queue: int = 256, max_queued_audio_s: float | None = None,
                 on_batch: Any = None) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.model = model
        self.window = max(0.0, window_ms) / 1000.0
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.max_queued_audio_s = max_queued_audio_s
        self.on_batch = on_batch  # called (size, seconds) after each model call, e.g. to trim memory
        self._pending: dict[tuple, deque[_Job]] = {}
        self._queued_jobs = 0
        self._queued_audio = 0.0
        self._stats = _Stats()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
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
        with self._wake:
            self._stopping.set()
            self._wake.notify_all()
        thread.join(timeout)
        self._thread = None
        with self._lock:
            waiting = [job for jobs in self._pending.values() for job in jobs]
            self._pending.clear()
            self._queued_jobs, self._queued_audio = 0, 0.0
        for job in waiting:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(RuntimeError("the server is shutting down"))

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------------------------------ submit
    def seconds_per_audio_second(self) -> float:
        """Measured model seconds per second of audio decoded (0 until something was decoded)."""
        s = self._stats
        return s.model_seconds / s.audio_seconds if s.audio_seconds else 0.0

    def _retry_after(self) -> float:
        return retry_after(self._queued_audio, self.seconds_per_audio_second())

    def submit(self, features: torch.Tensor, task: str, options: DecodingOptions,
               streamer: Any = None) -> Future:
        """Queue one featurised input; the future resolves to the model's output for it (a ``Generation``).

        Cancelling the future before the job runs removes it from its batch. With ``streamer`` the job
        runs alone and feeds the streamer as tokens are generated. Raises :class:`ServerBusy` when the
        queue is full (``max_queue`` jobs or ``max_queued_audio_s`` seconds of audio waiting).
        """
        if not self.running:
            self.start()
        job = _Job(features, task, options, Future(), streamer)
        with self._wake:
            full = refusal(self._queued_jobs, self._queued_audio, job.audio_seconds, self.max_queue,
                           self.max_queued_audio_s)
            if full:
                self._stats.rejected_busy += 1
                raise ServerBusy(f"{full} already waiting; try again later", self._retry_after())
            self._pending.setdefault(job.key, deque()).append(job)
            self._queued_jobs += 1
            self._queued_audio += job.audio_seconds
            self._stats.submitted += 1
            self._wake.notify()
        return job.future

    def stats(self) -> dict[str, Any]:
        """Counters since start: requests, batches, the batch-size histogram, time spent in the model."""
        with self._lock:
            s = self._stats
            busy = s.model_seconds + (time.monotonic() - self._busy_since if self._busy_since else 0.0)
            return {
                "running": self.running,
                "queued": self._queued_jobs,
                "queued_audio_seconds": round(self._queued_audio, 3),
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
                "audio_seconds": round(s.audio_seconds, 3),
                "window_ms": self.window * 1000.0,
                "max_batch_size": self.max_batch_size,
                "max_queued_audio_s": self.max_queued_audio_s,
            }

    # -------------------------------------------------------------------------------------------- work
    def _take(self) -> list[_Job] | None:
        """Wait for work; return the next batch (None when stopping). Called with no lock held.

        The key whose oldest job has waited longest goes first. Its batch is cut once it holds
        ``max_batch_size`` live jobs or the oldest job has waited ``window_ms``; cancelled jobs are dropped
        without taking a slot.
        """
        with self._wake:
            while True:
                if self._stopping.is_set():
                    return None
                if not self._pending:
                    self._wake.wait(0.5)
                    continue
                key, jobs = min(self._pending.items(), key=lambda kv: kv[1][0].enqueued)
                live = sum(1 for j in jobs if not j.future.cancelled())
                wait = jobs[0].enqueued + self.window - time.monotonic()
                if key[0] != "stream" and live < self.max_batch_size and wait > 0:
                    self._wake.wait(wait)  # a little longer for the batch to fill
                    continue
                batch: list[_Job] = []
                while jobs and len(batch) < self.max_batch_size:
                    job = jobs.popleft()
                    self._queued_jobs -= 1
                    self._queued_audio -= job.audio_seconds
                    if job.future.set_running_or_notify_cancel():
                        batch.append(job)
                    else:
                        self._stats.cancelled += 1
                if not jobs:
                    del self._pending[key]
                if not self._pending:
                    self._queued_audio = 0.0  # no float drift once empty
                if batch:
                    return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                break
            batch.sort(key=lambda j: -j.features.shape[0])  # longest first: the padding layout of transcribe
            self._decode(batch)

    def _decode(self, live: list[_Job]) -> None:
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
                self._record(live, t0, streamer, ok=False, cancelled=isinstance(exc, StreamCancelled))
            return
        for j, row in zip(live, rows):
            j.future.set_result(row)
        with self._lock:
            self._record(live, t0, streamer, ok=True)
        if self.on_batch is not None:
            self.on_batch(len(live), time.monotonic() - t0)

    def _record(self, jobs: list[_Job], t0: float, streamer: Any, ok: bool, cancelled: bool = False) -> None:
        s = self._stats
        size = len(jobs)
        s.model_seconds += time.monotonic() - t0
        self._busy_since = None
        if ok:
            s.completed += size
            s.audio_seconds += sum(j.audio_seconds for j in jobs)
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
