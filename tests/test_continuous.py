"""The continuous batcher of ``mooer serve --engine vllm`` (:mod:`mooer.serving.continuous`) with a stand-in
engine, so that its queueing, bounds, cancelling and counters are checked without vLLM (the real engine:
tests/test_vllm_serve.py)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest
import torch

from mooer.decoding import PRESETS
from mooer.inference.engines import Generation
from mooer.serving.batcher import ServerBusy
from mooer.serving.continuous import ContinuousBatcher

GREEDY = PRESETS["greedy"]


class FakeEngine:
    """Answers each row after ``delay`` seconds with ids [row length, item]; cancelling aborts."""

    name = "vllm"
    max_num_seqs = 4

    def __init__(self, delay: float = 0.2):
        self.delay = delay
        self.started = self.closed = 0
        self.submitted: list[tuple[int, int]] = []  # (row length, item)
        self.aborted = 0

    def start_async(self):
        self.started += 1

    def close(self):
        self.closed += 1

    def submit(self, row, options, *, processors=(), streamer=None):
        future: Future = Future()
        item = processors[0].spec(0)["item"]  # what the batch's processor says about this row
        self.submitted.append((row.shape[0], item))

        def finish():
            time.sleep(self.delay)
            if future.cancelled():
                self.aborted += 1
                return
            if streamer is not None:
                streamer.put(torch.tensor([row.shape[0]]))
                streamer.end()
            future.set_result(Generation([row.shape[0], item], [0.0, 0.0]))

        threading.Thread(target=finish, daemon=True).start()
        return future


class FakePipeline:
    """splice: rows of the features' lengths, left-padded, as Pipeline.splice lays them out."""

    def __init__(self, engine):
        self.engine = engine
        self.batches: list[tuple[str, list[int]]] = []

    def splice(self, features, task, options):
        lengths = [f.shape[0] for f in features]
        self.batches.append((task, lengths))
        width = max(lengths)
        mask = torch.zeros(len(lengths), width, dtype=torch.long)
        for i, n in enumerate(lengths):
            mask[i, width - n:] = 1
        return torch.zeros(len(lengths), width, 4), mask, [RowSpec()]


class RowSpec:
    """A processor whose spec differs per batch item."""

    def spec(self, item: int) -> dict:
        return {"kind": "test", "item": item}


def feats(frames: int) -> torch.Tensor:
    return torch.zeros(frames, 560)


def wait_for(condition, timeout=10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def settle(batcher, timeout=10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        s = batcher.stats()
        if s["in_flight"] == 0 and s["submitted"] == s["completed"] + s["failed"] + s["cancelled"]:
            return s
        assert time.monotonic() < deadline, s
        time.sleep(0.01)


def test_rows_are_encoded_together_and_each_gets_its_own_result():
    engine = FakeEngine()
    pipeline = FakePipeline(engine)
    batcher = ContinuousBatcher(pipeline, max_batch_size=8)
    batcher.start()
    try:
        pipeline_splice = pipeline.splice
        entered, gate = threading.Event(), threading.Event()

        def slow_first(features, task, options):  # hold the first batch so that the others queue up
            entered.set()
            gate.wait(5)
            return pipeline_splice(features, task, options)

        pipeline.splice = slow_first
        futures = [batcher.submit(feats(10), "asr", GREEDY)]
        assert entered.wait(5)
        futures += [batcher.submit(feats(n), task, GREEDY)
                    for n, task in ((30, "asr"), (20, "asr"), (50, "asr"), (40, "ast"))]
        gate.set()
        results = [f.result(5).ids[0] for f in futures]
        assert results == [10, 30, 20, 50, 40]  # each row's own answer: the rows were cut out of the batch
        stats = settle(batcher)
    finally:
        batcher.stop()
    # batches: the first job alone (taken at once: no window), then the waiting asr jobs longest first, then ast
    assert pipeline.batches[0] == ("asr", [10])
    assert ("asr", [50, 30, 20]) in pipeline.batches and ("ast", [40]) in pipeline.batches
    assert (stats["completed"], stats["failed"], stats["cancelled"]) == (5, 0, 0)
    assert stats["max_batch_size_seen"] == 3 and stats["max_decoding_seen"] > 1
    assert stats["audio_seconds"] == pytest.approx(150 * 0.06) and stats["model_seconds"] > 0
    assert (50, 0) in engine.submitted and (20, 2) in engine.submitted  # specs of the row's place in its batch
    assert engine.started == 1 and engine.closed == 1


def test_bounds_count_decoding_requests_and_busy_has_retry_after():
    engine = FakeEngine(delay=1.0)
    batcher = ContinuousBatcher(FakePipeline(engine), max_queue=2, max_queued_audio_s=None)
    try:
        first = [batcher.submit(feats(100), "asr", GREEDY) for _ in range(2)]
        wait_for(lambda: batcher.stats()["decoding"] == 2)  # both decoding now, none waiting
        assert batcher.stats()["queued"] == 0
        with pytest.raises(ServerBusy) as info:
            batcher.submit(feats(100), "asr", GREEDY)
        assert info.value.retry_after >= 1.0
        for f in first:
            f.result(5)
        settle(batcher)
        batcher.max_queue, batcher.max_queued_audio_s = 10, 10.0
        batcher.submit(feats(100), "asr", GREEDY)  # 6 s: fits the empty queue
        with pytest.raises(ServerBusy, match="s of audio"):
            batcher.submit(feats(100), "asr", GREEDY)  # 12 s > 10 s
        assert batcher.stats()["rejected_busy"] == 2
        settle(batcher)
    finally:
        batcher.stop()


def test_cancelling_aborts_decoding_and_drops_waiting_jobs():
    engine = FakeEngine(delay=0.5)
    batcher = ContinuousBatcher(FakePipeline(engine))
    try:
        decoding = batcher.submit(feats(10), "asr", GREEDY)
        wait_for(lambda: batcher.stats()["decoding"] == 1)
        assert decoding.cancel()  # never marked running: cancel works while vLLM decodes
        stats = settle(batcher)
        assert stats["cancelled"] == 1 and stats["completed"] == 0
        wait_for(lambda: engine.aborted == 1)
    finally:
        batcher.stop()


def test_stop_fails_waiting_jobs_ends_their_streams_and_closes_the_engine():
    engine = FakeEngine()
    pipeline = FakePipeline(engine)
    batcher = ContinuousBatcher(pipeline)
    entered, gate = threading.Event(), threading.Event()
    splice = pipeline.splice
    pipeline.splice = lambda *a: (entered.set(), gate.wait(5), splice(*a))[2]

    class Streamer:
        ended = False

        def put(self, value):
            pass

        def end(self):
            self.ended = True

    busy = batcher.submit(feats(10), "asr", GREEDY)
    assert entered.wait(5)  # the worker holds it: the next job waits
    streamer = Streamer()
    waiting = batcher.submit(feats(10), "asr", GREEDY, streamer=streamer)
    stopper = threading.Thread(target=batcher.stop)
    stopper.start()
    wait_for(batcher._stopping.is_set)  # stopping before the worker is free to take the waiting job
    gate.set()
    stopper.join(10)
    with pytest.raises(RuntimeError, match="shutting down"):
        waiting.result(5)
    assert streamer.ended and engine.closed == 1 and not batcher.running
    assert busy.done()
