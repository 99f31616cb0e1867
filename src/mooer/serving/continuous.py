"""Continuous batching for ``mooer serve --engine vllm``: requests go to vLLM's async engine one by one.

:class:`ContinuousBatcher` has the public surface of :class:`~mooer.serving.batcher.MicroBatcher`
(``start``/``stop``/``running``/``submit``/``stats``/``seconds_per_audio_second``/``on_batch``), so the server's
request code is the same for both engines. What differs is inside:

* **Encoding** (PyTorch: encoder, adapter, splice) runs on one worker thread, in batches of whatever waits
  for it (up to ``max_batch_size`` jobs with the same task and decoding options, longest first; no window:
  the LLM does not wait for a batch to form, so neither does the encoder).
* **Decoding**: each row's spliced embeddings are submitted at once to vLLM's ``AsyncLLM``
  (:meth:`mooer.inference.vllm_engine.VLLMEngine.submit`), whose scheduler adds it to the running batch at the
  next step (continuous batching, at most the engine's ``max_num_seqs`` sequences at a time) and streams its
  tokens. A streaming job is an ordinary row here: it shares the encoder batch and the decoding batch.
* **Limits**: a job counts against ``max_queue`` and ``max_queued_audio_s`` from :meth:`submit` until its
  result, whether it waits for the encoder or decodes (vLLM holds the requests past ``max_num_seqs`` in its
  own queue, which mooer cannot see); past either bound :meth:`submit` raises
  :class:`~mooer.serving.batcher.ServerBusy` with ``retry_after`` from the measured speed, as on hf.
* **Cancelling** a job's future (client gone, request timeout) removes it from the encoder queue or aborts
  its vLLM request, whichever it is in.

``stats()`` has the micro-batcher's fields: ``queued``/``queued_audio_seconds`` are the jobs waiting for the
encoder (what "waiting for the model" means with continuous batching: e.g. live transcription's interim
results yield to them), ``decoding`` the jobs in vLLM, ``batches`` and the histogram count encoder batches,
and ``model_seconds`` is the wall time during which the engine had work (encoding or decoding): its ratio to
``audio_seconds`` is the server's measured decoding speed, which sizes ``Retry-After``.

The engine's async backend starts with :meth:`start` (vLLM's start-up: seconds to a minute) and is closed by
:meth:`stop`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import CancelledError, Future, InvalidStateError
from dataclasses import dataclass
from typing import Any

import torch

from mooer.decoding import DecodingOptions
from mooer.serving import batcher
from mooer.serving.batcher import ServerBusy, StreamCancelled, refusal, retry_after

log = logging.getLogger("mooer.serving")

__all__ = ["ContinuousBatcher"]


@dataclass
class _Job(batcher._Job):
    inner: Future | None = None  # the vLLM request, once submitted
    settled: bool = False  # counted as finished (each job is settled exactly once)

    @property
    def key(self) -> tuple:
        """Jobs with the same key share an encoder batch (one prompt, one set of logits processors); a
        streaming job is an ordinary row here."""
        return self.task, self.options


@dataclass
class _Stats(batcher._Stats):
    max_decoding: int = 0  # most requests in vLLM at once
    # model_seconds: wall time with work in the engine (see the module docstring)


class _RowOf:
    """One row's view of a batch's logits processor: the engine describes a submitted row's processors by
    their ``spec(item)`` (:mod:`mooer.inference.request_processors`) with item 0, which here must be the
    row's place ``item`` in the batch the processor was made for."""

    def __init__(self, processor: Any, item: int) -> None:
        self.processor = processor
        self.item = item

    def spec(self, _item: int) -> dict | None:
        return self.processor.spec(self.item)


def _row_of(processor: Any, item: int) -> Any:
    # a processor without a spec is passed as it is, so that the engine's error names it
    return _RowOf(processor, item) if hasattr(processor, "spec") else processor


class ContinuousBatcher:
    """Encodes waiting jobs in batches and decodes each row on vLLM's async engine (module docstring).

    ``pipeline``: a :class:`~mooer.inference.pipeline.Pipeline` whose engine is a
    :class:`~mooer.inference.vllm_engine.VLLMEngine`; ``max_batch_size``: most jobs per encoder call;
    ``max_queue``/``max_queued_audio_s``: the bounds of jobs and seconds of audio accepted and not finished.
    """

    def __init__(self, pipeline: Any, *, max_batch_size: int = 8, max_queue: int = 256,
                 max_queued_audio_s: float | None = None, on_batch: Any = None) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.pipeline = pipeline
        self.engine = pipeline.engine
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.max_queued_audio_s = max_queued_audio_s
        self.on_batch = on_batch  # called (size, seconds) after each encoder batch
        self._pending: dict[tuple, deque[_Job]] = {}
        self._waiting = 0  # jobs in _pending
        self._waiting_audio = 0.0
        self._jobs = 0  # jobs accepted and not finished: waiting, encoding or decoding
        self._audio = 0.0
        self._decoding: set[int] = set()  # id(job) of jobs submitted to vLLM and not finished
        self._live: dict[int, _Job] = {}  # id(job) → job, for every job taken from _pending and not finished
        self._stats = _Stats()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._busy_since: float | None = None
        self._start_lock = threading.Lock()

    # --------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start vLLM's async engine and the encoder thread (idempotent; the first call takes vLLM's start-up)."""
        with self._start_lock:
            if self.running:
                return
            self.engine.start_async()
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="mooer-encoder", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop the encoder thread, fail the waiting jobs, abort the decoding ones, close the engine."""
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
            live = list(self._live.values())
        for job in waiting:
            self._settle(job, error=RuntimeError("the server is shutting down"))
        for job in live:
            if job.inner is not None:
                job.inner.cancel()  # aborts the vLLM request; _finished settles the job
        self.engine.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------------------------------ submit
    def seconds_per_audio_second(self) -> float:
        """Measured engine seconds (wall time with work) per second of audio decoded (0 until some was)."""
        s = self._stats
        return s.model_seconds / s.audio_seconds if s.audio_seconds else 0.0

    def _retry_after(self) -> float:
        return retry_after(self._audio, self.seconds_per_audio_second())

    def submit(self, features: torch.Tensor, task: str, options: DecodingOptions,
               streamer: Any = None) -> Future:
        """Queue one featurised input; the future resolves to its ``Generation``.

        With ``streamer`` its tokens are fed to it as vLLM writes them. Cancelling the future drops the job
        or aborts its decoding. Raises :class:`ServerBusy` past ``max_queue`` jobs or ``max_queued_audio_s``
        seconds of audio accepted and not finished.
        """
        if not self.running:
            self.start()
        job = _Job(features, task, options, Future(), streamer)
        with self._wake:
            full = refusal(self._jobs, self._audio, job.audio_seconds, self.max_queue, self.max_queued_audio_s)
            if full:
                self._stats.rejected_busy += 1
                raise ServerBusy(f"{full} already waiting or decoding; try again later", self._retry_after())
            self._pending.setdefault(job.key, deque()).append(job)
            self._waiting += 1
            self._waiting_audio += job.audio_seconds
            self._jobs += 1
            self._audio += job.audio_seconds
            if self._jobs == 1:
                self._busy_since = time.monotonic()
            self._stats.submitted += 1
            if streamer is not None:
                self._stats.streams += 1
            self._wake.notify()
        job.future.add_done_callback(lambda f, job=job: self._on_done(job))
        return job.future

    def stats(self) -> dict[str, Any]:
        """Counters since start (the fields of :meth:`MicroBatcher.stats`, see the module docstring)."""
        with self._lock:
            s = self._stats
            busy = s.model_seconds + (time.monotonic() - self._busy_since if self._busy_since else 0.0)
            return {
                "running": self.running,
                "engine": getattr(self.engine, "name", "vllm"),
                "queued": self._waiting,
                "queued_audio_seconds": round(max(0.0, self._waiting_audio), 3),
                "decoding": len(self._decoding),
                "max_decoding_seen": s.max_decoding,
                "in_flight": self._jobs,
                "in_flight_audio_seconds": round(max(0.0, self._audio), 3),
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
                "window_ms": 0.0,
                "max_batch_size": self.max_batch_size,
                "max_num_seqs": getattr(self.engine, "max_num_seqs", None),
                "max_queued_audio_s": self.max_queued_audio_s,
            }

    # -------------------------------------------------------------------------------------------- work
    def _take(self) -> list[_Job] | None:
        """Wait for work; the next encoder batch (None when stopping): up to ``max_batch_size`` jobs of the
        key whose oldest job has waited longest. Cancelled jobs are settled and left out."""
        with self._wake:
            while True:
                if self._stopping.is_set():
                    return None
                if not self._pending:
                    self._wake.wait(0.5)
                    continue
                key, jobs = min(self._pending.items(), key=lambda kv: kv[1][0].enqueued)
                batch: list[_Job] = []
                dropped: list[_Job] = []
                while jobs and len(batch) < self.max_batch_size:
                    job = jobs.popleft()
                    self._waiting -= 1
                    self._waiting_audio -= job.audio_seconds
                    (dropped if job.future.done() else batch).append(job)
                    self._live[id(job)] = job
                if not jobs:
                    del self._pending[key]
                if not self._pending:
                    self._waiting_audio = 0.0  # no float drift once empty
                if dropped or batch:
                    break
        for job in dropped:
            self._settle(job)
        return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                break
            if batch:
                self._encode(batch)

    def _encode(self, batch: list[_Job]) -> None:
        """Splice the batch (longest first, as the hf engine batches) and submit each row to vLLM."""
        batch.sort(key=lambda j: -j.features.shape[0])
        first = batch[0]
        t0 = time.monotonic()
        try:
            embeds, mask, processors = self.pipeline.splice([j.features for j in batch], first.task, first.options)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to its request
            log.exception("encoding a batch of %d failed", len(batch))
            for job in batch:
                self._settle(job, error=exc)
            return
        with self._lock:
            s = self._stats
            s.batches += 1
            s.batch_sizes[len(batch)] += 1
            s.max_batch_size = max(s.max_batch_size, len(batch))
        rows = mask.bool()
        for i, job in enumerate(batch):
            try:
                inner = self.engine.submit(embeds[i][rows[i]], job.options,
                                           processors=[_row_of(p, i) for p in processors], streamer=job.streamer)
            except BaseException as exc:  # noqa: BLE001 - e.g. a prompt past the engine's max_model_len
                log.warning("submitting a request to vLLM failed: %r", exc)
                self._settle(job, error=exc)
                continue
            with self._lock:
                job.inner = inner
                self._decoding.add(id(job))
                self._stats.max_decoding = max(self._stats.max_decoding, len(self._decoding))
            if job.future.done():  # cancelled while it was encoded
                inner.cancel()
            inner.add_done_callback(lambda f, job=job: self._finished(job, f))
        if self.on_batch is not None:
            self.on_batch(len(batch), time.monotonic() - t0)

    # ------------------------------------------------------------------------------------------ results
    def _on_done(self, job: _Job) -> None:
        """The caller's future is done: when it was cancelled, stop the vLLM request too."""
        if job.future.cancelled():
            with self._lock:
                inner = job.inner
            if inner is not None:
                inner.cancel()

    def _finished(self, job: _Job, inner: Future) -> None:
        """vLLM's request ended (on the engine's event-loop thread): hand the outcome to the caller."""
        if inner.cancelled():
            self._settle(job)
            return
        exc = inner.exception()
        if exc is not None:
            if not isinstance(exc, (StreamCancelled, CancelledError)):
                log.error("decoding a request failed: %r", exc)
            self._settle(job, error=exc)
        else:
            self._settle(job, result=inner.result())

    def _settle(self, job: _Job, result: Any = None, error: BaseException | None = None) -> None:
        """Finish a job, once: the counters, a waiting stream reader, its future (no result and no error:
        cancelled)."""
        with self._lock:
            if job.settled:
                return
            job.settled = True
            self._live.pop(id(job), None)
            self._decoding.discard(id(job))
            self._jobs -= 1
            self._audio -= job.audio_seconds
            if self._jobs == 0:
                self._audio = 0.0  # no float drift once empty
                if self._busy_since is not None:
                    self._stats.model_seconds += time.monotonic() - self._busy_since
                    self._busy_since = None
            s = self._stats
            if error is None and result is None or isinstance(error, (StreamCancelled, CancelledError)):
                s.cancelled += 1
            elif error is not None:
                s.failed += 1
            else:
                s.completed += 1
                s.audio_seconds += job.audio_seconds
        if job.streamer is not None and (job.inner is None or job.inner.cancelled()):
            # vLLM's request ends the stream when it ran; here it never did: wake the reader
            job.streamer.end()
        try:
            if error is not None:
                job.future.set_exception(error)
            elif result is not None:
                job.future.set_result(result)
            else:
                job.future.cancel()
        except InvalidStateError:  # the caller cancelled it meanwhile
            pass
