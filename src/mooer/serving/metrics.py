"""``GET /metrics``: the server's queue, batches, latency, rejections and memory in Prometheus text format.

One :class:`prometheus_client.CollectorRegistry` per app (several apps may live in one process, e.g. in
tests), holding:

* ``mooer_queue_jobs`` / ``mooer_queue_audio_seconds`` — what waits for the model now (gauges, read from
  the batcher at scrape time);
* ``mooer_batch_size`` — requests per model call (histogram); ``mooer_model_seconds_total`` and
  ``mooer_decoded_audio_seconds_total`` — their ratio is the decoding speed used to size the queue;
* ``mooer_request_seconds`` — latency of answered (non-streamed) requests, from upload read to result,
  by task (histogram);
* ``mooer_requests_rejected_total`` — by reason (``busy``, ``timeout``);
* ``process_resident_memory_bytes`` and friends — prometheus_client's process collector (Linux).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

__all__ = ["ServerMetrics", "CONTENT_TYPE_LATEST"]

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, float("inf"))


class ServerMetrics:
    def __init__(self, batcher: Any, max_batch_size: int):
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        queue_jobs = Gauge("mooer_queue_jobs", "Decoding jobs waiting for the model", registry=self.registry)
        queue_jobs.set_function(lambda: batcher.stats()["queued"])
        queue_audio = Gauge("mooer_queue_audio_seconds", "Seconds of audio waiting for the model",
                            registry=self.registry)
        queue_audio.set_function(lambda: batcher.stats()["queued_audio_seconds"])
        model_s = Gauge("mooer_model_seconds_total", "Seconds the model spent decoding", registry=self.registry)
        model_s.set_function(lambda: batcher.stats()["model_seconds"])
        audio_s = Gauge("mooer_decoded_audio_seconds_total", "Seconds of audio decoded", registry=self.registry)
        audio_s.set_function(lambda: batcher.stats()["audio_seconds"])
        self.batch_size = Histogram("mooer_batch_size", "Requests per model call", registry=self.registry,
                                    buckets=tuple(range(1, max_batch_size + 1)) + (float("inf"),))
        self.latency = Histogram("mooer_request_seconds", "Latency of answered requests", ["task"],
                                 registry=self.registry, buckets=LATENCY_BUCKETS)
        self.rejected = Counter("mooer_requests_rejected", "Requests turned away", ["reason"],
                                registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
