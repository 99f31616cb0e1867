"""``mooer serve``: the OpenAI-compatible API, the MooER endpoint, streaming, batching, limits and errors.

A real uvicorn server runs on a free 127.0.0.1 port in a thread, serving the tiny official-layout fixture
model; the official ``openai`` client and httpx talk to it. Expected texts come from
``MooER.transcribe`` on the same files (computed before the server starts, so only the server's worker
thread ever runs the model concurrently with nothing).
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
import torch
from fixtures_path import AUDIO, OFFICIAL_TINY
from server_thread import ServerThread
from openai import OpenAI

from mooer.api import MooER
from mooer.decoding import PRESETS
from mooer.serving import ServeSettings, create_app
from mooer.serving.batcher import MicroBatcher, ServerBusy
from mooer.output.subtitles import to_srt, to_vtt

KEY = "test-key-123"
pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # openai: translations
CLIPS = ("zh1", "zh2", "en1", "short")  # all under the test server's 5 s limit; demo.wav (6.6 s) is not
TASKS = ("asr", "ast", "asr_ast")


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model() -> MooER:
    return MooER.from_pretrained(OFFICIAL_TINY)


#: (task, preset) → the clips whose library result the tests compare with
NEEDED = {
    ("asr", "official"): CLIPS,
    ("ast", "official"): ("zh1", "zh2", "en1", "short"),
    ("asr_ast", "official"): ("zh1", "en1"),
    ("asr", "greedy"): ("zh1", "zh2"),
    ("ast", "greedy"): ("zh2",),
    ("asr_ast", "greedy"): ("zh2",),
}


@pytest.fixture(scope="module")
def expected(model):
    """(clip, task, preset) → Result from the library for what the tests use (before the server starts)."""
    out = {}
    for (task, preset), clips in NEEDED.items():
        results = model.transcribe([wav(c) for c in clips], task=task, decoding=preset)
        for clip, res in zip(clips, results):
            assert res.ok, res.error
            out[clip, task, preset] = res
    return out


@pytest.fixture(scope="module")
def server(model, expected):
    settings = ServeSettings(api_key=KEY, max_audio_seconds=5.0, max_upload_mb=1.0)
    app = create_app(model, settings)
    with ServerThread(app) as srv:
        srv.app = app
        yield srv


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture()
def http(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as c:
        yield c


def wav(clip: str) -> Path:
    return AUDIO / f"{clip}.wav"


def sse_events(response: httpx.Response) -> list[dict]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data:"):
            events.append(json.loads(line[5:].strip()))
    return events


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def assert_still_serving(client: OpenAI, expected) -> None:
    with open(wav("short"), "rb") as f:
        out = client.audio.transcriptions.create(model="mooer", file=f)
    assert out.text == expected["short", "asr", "official"].text


# ---------------------------------------------------------------------------------- info endpoints
def test_health_is_open_and_reports_model_and_batcher(server):
    r = httpx.get(f"{server.url}/health")
    assert r.status_code == 200
    h = r.json()
    assert h["status"] == "ok" and h["model"] == "mooer"
    assert h["tasks"] == ["asr", "asr_ast", "ast"] and h["default_task"] == "asr_ast"
    assert h["limits"]["api_key"] is True and KEY not in r.text
    assert {"batches", "max_batch_size_seen", "batch_size_histogram", "submitted"} <= set(h["batcher"])


def test_models_listed_through_the_openai_client(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["mooer"]
    assert client.models.retrieve("mooer").id == "mooer"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("whisper-1")


def test_web_page_and_static_files_are_served(server):
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text)  # nothing from elsewhere
    for name in ("app.js", "style.css"):
        assert httpx.get(f"{server.url}/static/{name}").status_code == 200


# ----------------------------------------------------------------------------------- OpenAI audio API
def test_transcription_json_and_text_match_the_library(client, expected):
    for clip in CLIPS:
        with open(wav(clip), "rb") as f:
            out = client.audio.transcriptions.create(model="mooer", file=f)
        assert out.text == expected[clip, "asr", "official"].text
    with open(wav("zh1"), "rb") as f:
        text = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="text",
                                                  language="zh", prompt="ignored", temperature=0.0)
    assert text == expected["zh1", "asr", "official"].text


def test_transcription_verbose_json(client, expected):
    ref = expected["zh2", "asr", "official"]
    with open(wav("zh2"), "rb") as f:
        out = client.audio.transcriptions.create(model="mooer", file=f, response_format="verbose_json",
                                                 timestamp_granularities=["segment"])
    assert out.text == ref.text
    assert out.task == "transcribe" and out.language == "chinese"
    assert out.duration == pytest.approx(ref.duration)
    assert len(out.segments) == 1
    seg = out.segments[0]
    assert (seg.id, seg.start, seg.text) == (0, 0.0, ref.text)
    assert seg.end == pytest.approx(ref.duration)
    assert seg.tokens == ref.token_ids


def test_transcription_srt_and_vtt(client, expected):
    ref = expected["en1", "asr", "official"]
    whole = [{"start": 0.0, "end": ref.duration, "text": ref.text}]
    with open(wav("en1"), "rb") as f:
        srt = client.audio.transcriptions.create(model="mooer", file=f, response_format="srt")
    with open(wav("en1"), "rb") as f:
        vtt = client.audio.transcriptions.create(model="mooer", file=f, response_format="vtt")
    assert srt == to_srt(whole)
    assert srt.startswith("1\n00:00:00,000 --> 00:00:03,115\n")
    assert vtt == to_vtt(whole)
    assert vtt.startswith("WEBVTT\n")


def test_translation_matches_the_library(client, expected):
    for clip in ("zh1", "short"):
        with open(wav(clip), "rb") as f:
            out = client.audio.translations.create(model="mooer", file=f)
        assert out.text == expected[clip, "ast", "official"].text
    with open(wav("zh2"), "rb") as f:
        verbose = client.audio.translations.create(model="mooer", file=f, response_format="verbose_json")
    assert verbose.text == expected["zh2", "ast", "official"].text
    assert verbose.task == "translate" and verbose.language == "english"


def test_file_likes_and_bytes_upload(client, expected):
    data = wav("short").read_bytes()
    out = client.audio.transcriptions.create(model="mooer", file=("clip.wav", io.BytesIO(data)))
    assert out.text == expected["short", "asr", "official"].text
    out = client.audio.transcriptions.create(model="mooer", file=("clip.wav", data, "audio/wav"))
    assert out.text == expected["short", "asr", "official"].text


def test_openai_streaming_concatenates_to_the_greedy_result(client, expected):
    ref = expected["zh1", "asr", "greedy"]
    with open(wav("zh1"), "rb") as f:
        stream = client.audio.transcriptions.create(model="mooer", file=f, stream=True)
        events = list(stream)
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    done = [e for e in events if e.type == "transcript.text.done"]
    assert len(deltas) > 1 and len(done) == 1
    assert "".join(deltas) == ref.text == done[0].text


# ------------------------------------------------------------------------------------- MooER endpoint
def test_mooer_endpoint_returns_asr_and_ast(http, expected):
    for clip in ("zh1", "en1"):
        ref = expected[clip, "asr_ast", "official"]
        r = http.post("/v1/mooer/transcribe", files={"file": (f"{clip}.wav", wav(clip).read_bytes())})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body == {"text": ref.text, "asr": ref.asr, "ast": ref.ast, "task": "asr_ast", "preset": "official",
                        "hotwords": 0, "duration": ref.duration}
    for task in ("asr", "ast"):
        ref = expected["zh2", task, "greedy"]
        r = http.post("/v1/mooer/transcribe", files={"file": ("zh2.wav", wav("zh2").read_bytes())},
                      data={"task": task, "preset": "greedy"})
        body = r.json()
        assert body["text"] == ref.text and body["preset"] == "greedy"
        assert body[task] == ref.text and body["ast" if task == "asr" else "asr"] is None


@pytest.mark.parametrize("task", ["asr_ast", "asr"])
def test_mooer_streaming_concatenates_to_the_greedy_result(http, expected, task):
    ref = expected["zh2", task, "greedy"]
    with http.stream("POST", "/v1/mooer/transcribe", files={"file": ("zh2.wav", wav("zh2").read_bytes())},
                     data={"task": task, "stream": "true"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    deltas = [e["delta"] for e in events if "delta" in e]
    assert len(deltas) > 1
    assert "".join(deltas) == ref.text
    final = events[-1]
    assert final["done"] is True and final["text"] == ref.text and final["preset"] == "greedy"
    if task == "asr_ast":
        assert (final["asr"], final["ast"]) == (ref.asr, ref.ast)
    else:
        assert final["asr"] == ref.text


def test_streaming_refuses_beam_search(http):
    r = http.post("/v1/mooer/transcribe", files={"file": ("zh1.wav", wav("zh1").read_bytes())},
                  data={"stream": "true", "preset": "official"})
    assert_error(r, 400, "invalid_value")


def test_client_leaving_a_stream_does_not_hurt_the_server(server, http, client, expected):
    with http.stream("POST", "/v1/mooer/transcribe", files={"file": ("zh1.wav", wav("zh1").read_bytes())},
                     data={"task": "asr", "stream": "true"}) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                break  # leave after the first token
    assert_still_serving(client, expected)
    stats = server.app.state.batcher.stats()
    deadline = time.monotonic() + 30
    while stats["submitted"] != stats["completed"] + stats["failed"] + stats["cancelled"]:
        assert time.monotonic() < deadline, stats
        time.sleep(0.1)
        stats = server.app.state.batcher.stats()


# -------------------------------------------------------------------------------------------- batching
def test_concurrent_requests_are_batched_and_each_gets_its_answer(server, client, expected):
    before = server.app.state.batcher.stats()
    jobs = [(CLIPS[i % len(CLIPS)], "asr" if i % 3 else "ast") for i in range(8)]
    barrier = threading.Barrier(len(jobs))

    def one(job):
        clip, task = job
        data = wav(clip).read_bytes()
        barrier.wait()
        if task == "asr":
            return client.audio.transcriptions.create(model="mooer", file=(f"{clip}.wav", data)).text
        return client.audio.translations.create(model="mooer", file=(f"{clip}.wav", data)).text

    with ThreadPoolExecutor(len(jobs)) as pool:
        texts = list(pool.map(one, jobs))
    for (clip, task), text in zip(jobs, texts):
        assert text == expected[clip, task, "official"].text, (clip, task)
    after = server.app.state.batcher.stats()
    assert after["max_batch_size_seen"] > 1
    new_batches = after["batches"] - before["batches"]
    assert new_batches < len(jobs), (before, after)
    assert after["completed"] - before["completed"] == len(jobs)
    health = httpx.get(f"{server.url}/health").json()["batcher"]
    assert any(int(size) > 1 for size in health["batch_size_histogram"])


# ---------------------------------------------------------------------------------------------- errors
def test_api_key_is_required(server, client, expected):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
        r = httpx.post(f"{server.url}/v1/audio/transcriptions", headers=headers,
                       files={"file": ("zh1.wav", wav("zh1").read_bytes())})
        assert_error(r, 401, "invalid_api_key")
        assert r.json()["error"]["type"] == "invalid_request_error"
    assert_error(httpx.get(f"{server.url}/v1/models"), 401, "invalid_api_key")
    bad = OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with open(wav("zh1"), "rb") as f, pytest.raises(openai.AuthenticationError) as info:
        bad.audio.transcriptions.create(model="mooer", file=f)
    assert info.value.status_code == 401
    assert_still_serving(client, expected)


def test_bad_audio_gets_400_and_the_server_keeps_serving(http, client, expected):
    rng = np.random.default_rng(0)
    cases = {
        "empty.wav": (b"", "empty_file"),
        "corrupt.wav": (b"RIFF" + rng.integers(0, 256, 6000, dtype=np.uint8).tobytes(), "invalid_audio"),
        "truncated.wav": (wav("zh1").read_bytes()[:60], "invalid_audio"),
        "notes.txt": ("这不是音频 not audio at all\n".encode() * 50, "invalid_audio"),
        "demo.wav": (wav("demo").read_bytes(), "audio_too_long"),  # 6.6 s > the 5 s limit
    }
    for name, (data, code) in cases.items():
        for endpoint in ("/v1/audio/transcriptions", "/v1/mooer/transcribe"):
            error = assert_error(http.post(endpoint, files={"file": (name, data)}), 400, code)
            assert error["param"] == "file" and name in error["message"]
            assert "0x" not in error["message"]  # no object reprs / internals
    r = http.post("/v1/mooer/transcribe", files={"file": ("demo.wav", wav("demo").read_bytes())},
                  data={"stream": "true"})
    assert_error(r, 400, "audio_too_long")
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(model="mooer", file=("notes.txt", b"hello " * 100))
    assert info.value.status_code == 400
    assert_still_serving(client, expected)


def test_bad_fields_get_400(http, client, expected):
    audio = {"file": ("zh1.wav", wav("zh1").read_bytes())}
    assert_error(http.post("/v1/audio/transcriptions", data={"model": "mooer"}), 400, "missing_file")
    assert_error(http.post("/v1/audio/transcriptions", files=audio, data={"response_format": "xml"}), 400,
                 "invalid_value")
    assert_error(http.post("/v1/audio/transcriptions", files=audio, data={"language": "fr"}), 400,
                 "unsupported_language")
    assert_error(http.post("/v1/audio/transcriptions", files=audio, data={"temperature": "5"}), 400,
                 "invalid_value")
    assert_error(http.post("/v1/audio/transcriptions", files=audio, data={"temperature": "hot"}), 400,
                 "invalid_value")
    assert_error(http.post("/v1/mooer/transcribe", files=audio, data={"task": "s2s"}), 400, "unsupported_task")
    assert_error(http.post("/v1/mooer/transcribe", files=audio, data={"preset": "fast"}), 400, "invalid_value")
    assert_error(http.get("/v1/nothing-here"), 404)
    for path in (str(wav("zh1")), f"file://{wav('zh1')}"):  # server-side paths are never opened
        assert_error(http.post("/v1/audio/transcriptions", data={"file": path}), 400)
        assert_error(http.post("/v1/mooer/transcribe", data={"file": path}), 400)
    for endpoint in ("/v1/audio/transcriptions", "/v1/audio/translations", "/v1/mooer/transcribe"):
        for data in (wav("zh1").read_bytes(), b"some text"):  # no file name: a text field to the server
            error = assert_error(http.post(endpoint, files={"file": ("", data)}), 400, "missing_file")
            assert error["param"] == "file" and "file name" in error["message"], error
            assert "UploadFile" not in error["message"] and "<class" not in error["message"]
    for language in ("zh", "zh-CN", "en", "English", ""):
        r = http.post("/v1/audio/transcriptions", files=audio, data={"language": language})
        assert r.status_code == 200, (language, r.text)
    assert_still_serving(client, expected)


class _Recorder:
    """Stands in for the batcher's model: records the options of every batch and decodes as before."""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.options = []

    def generate(self, features, task, options, **kwargs):
        self.options.append(options)
        return self.pipeline.generate(features, task, options, **kwargs)


def _changing_phrase(model, clip: str, options) -> str:
    """A two-character phrase that, listed at the default weight, changes the model's output for ``clip``."""
    base = model.transcribe([wav(clip)], task="asr", decoding=options)[0].text
    chars = [t for t in model.pipeline.token_texts if len(t) == 1 and "\u4e00" <= t <= "\u9fff"]
    for a, b in zip(chars[::2], chars[1::2]):
        if len(model.tokenizer(a + b, add_special_tokens=False)["input_ids"]) != 2:
            continue
        if model.transcribe([wav(clip)], task="asr", decoding=options.replace(hotwords=(a + b,)))[0].text != base:
            return a + b
    raise AssertionError("no phrase changes the output")


def test_prompt_and_hotwords_reach_the_decoder(server, model, client, http):
    """The OpenAI client's ``prompt=`` and the ``hotwords`` field decode as the library does with those
    phrases (which change the text), on all three endpoints, streamed too."""
    official, greedy = PRESETS["official"], PRESETS["greedy"]
    phrase = _changing_phrase(model, "zh1", official)
    listed = (phrase, "别的词")
    lib = {(task, name): model.transcribe([wav("zh1")], task=task, decoding=preset.replace(hotwords=listed))[0]
           for task in ("asr", "ast") for name, preset in (("official", official), ("greedy", greedy))}
    plain = model.transcribe([wav("zh1")], task="asr", decoding=official)[0]
    assert lib["asr", "official"].text != plain.text
    batcher = server.app.state.batcher
    recorder = _Recorder(batcher.model)
    batcher.model = recorder
    try:
        with open(wav("zh1"), "rb") as f:
            out = client.audio.transcriptions.create(model="whisper-1", file=f, prompt=f"{phrase}，别的词")
        assert recorder.options[-1].hotwords == listed
        assert out.text == lib["asr", "official"].text
        with open(wav("zh1"), "rb") as f:
            out = client.audio.translations.create(model="whisper-1", file=f, prompt=f"{phrase}\n别的词")
        assert recorder.options[-1].hotwords == listed and out.text == lib["ast", "official"].text
        audio = {"file": ("zh1.wav", wav("zh1").read_bytes())}
        r = http.post("/v1/mooer/transcribe", files=audio, data={"task": "asr", "hotwords": ",".join(listed)})
        assert r.status_code == 200 and r.json()["asr"] == lib["asr", "official"].text and r.json()["hotwords"] == 2
        r = http.post("/v1/audio/transcriptions", files=audio, data={"hotwords": phrase, "prompt": "别的词",
                                                                     "hotword_weight": "5"})
        assert recorder.options[-1].hotwords == listed and recorder.options[-1].hotword_weight == 5.0
        with http.stream("POST", "/v1/mooer/transcribe", files=audio,
                         data={"task": "asr", "stream": "true", "hotwords": ",".join(listed)}) as r:
            events = sse_events(r)
        assert recorder.options[-1] == greedy.replace(hotwords=listed)
        assert "".join(e.get("delta", "") for e in events) == lib["asr", "greedy"].text == events[-1]["text"]
    finally:
        batcher.model = recorder.pipeline


def test_bad_hotwords_get_400(http, client, expected):
    audio = {"file": ("zh1.wav", wav("zh1").read_bytes())}
    cases = [
        ("/v1/audio/transcriptions", {"hotwords": "a,,b"}, "hotwords", "entry 2 is an empty phrase"),
        ("/v1/audio/translations", {"prompt": "x" * 65}, "prompt", "at most 64"),
        ("/v1/mooer/transcribe", {"hotwords": ",".join(f"t{i}" for i in range(1001))}, "hotwords", "more than 1000"),
        ("/v1/mooer/transcribe", {"hotwords": "a", "hotword_weight": "0"}, "hotword_weight", "must be > 0"),
        ("/v1/mooer/transcribe", {"hotwords": "a\tlots"}, "hotwords", "must be a number, got 'lots'"),
    ]
    for path, data, param, message in cases:
        error = assert_error(http.post(path, files=audio, data=data), 400, "invalid_hotwords")
        assert error["param"] == param and message in error["message"], error
    error = assert_error(http.post("/v1/audio/transcriptions", files=audio, data={"hotword_weight": "heavy"}), 400,
                         "invalid_value")
    assert error["param"] == "hotword_weight"
    with open(wav("zh1"), "rb") as f, pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(model="mooer", file=f, prompt="a,,b")
    assert "empty phrase" in str(info.value)
    assert_still_serving(client, expected)


def _noise_wav(seconds: float) -> bytes:
    buf = io.BytesIO()
    samples = (np.random.default_rng(1).standard_normal(int(16000 * seconds)) * 1000).astype(np.int16)
    sf.write(buf, samples, 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_too_large_upload_gets_413(server, http, client, expected):
    big = _noise_wav(70.0)  # ~2.2 MB > the 1 MB limit
    assert len(big) > 2 * 1024 * 1024
    error = assert_error(http.post("/v1/audio/transcriptions", files={"file": ("big.wav", big)}), 413,
                         "upload_too_large")
    assert "1 MB" in error["message"]

    def chunked():  # no Content-Length: rejected while the body streams in
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    boundary = "mooerboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.wav\"\r\n"
            f"Content-Type: audio/wav\r\n\r\n").encode()
    body = iter([head, *chunked(), f"\r\n--{boundary}--\r\n".encode()])
    r = http.post("/v1/audio/transcriptions", content=body,
                  headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert_error(r, 413, "upload_too_large")
    with pytest.raises(openai.APIStatusError) as info:
        client.audio.transcriptions.create(model="mooer", file=("big.wav", big))
    assert info.value.status_code == 413
    assert_still_serving(client, expected)


def test_no_temporary_files_are_left(server, http, client, expected):
    tmp = Path(tempfile.gettempdir())
    before = set(os.listdir(tmp))
    for clip in CLIPS:
        http.post("/v1/mooer/transcribe", files={"file": (f"{clip}.wav", wav(clip).read_bytes())})
    http.post("/v1/audio/transcriptions", files={"file": ("n.txt", b"not audio" * 10)})
    http.post("/v1/audio/transcriptions", files={"file": ("big.wav", _noise_wav(40.0))})
    near_limit = _noise_wav(0.999 * 1024 * 1024 / 32000)  # just under 1 MB
    http.post("/v1/audio/transcriptions", files={"file": ("near.wav", near_limit)})
    after = set(os.listdir(tmp))
    assert after - before == set(), after - before


# --------------------------------------------------------------------------- timeout and busy (stubs)
class SlowModel:
    """The real model whose decoding pipeline waits ``delay`` seconds per batch, to exercise timeouts."""

    def __init__(self, model: MooER, delay: float) -> None:
        self._model = model
        self.delay = delay
        self.calls = 0
        self.pipeline = self

    def __getattr__(self, name):
        return getattr(self._model.pipeline if name in ("result", "text_of", "engine") else self._model, name)

    def generate(self, *args, **kwargs):
        self.calls += 1
        time.sleep(self.delay)
        return self._model.pipeline.generate(*args, **kwargs)


def test_timeout_gets_504(model, server):
    # ``server`` first: this app then decodes while the shared server is idle
    from fastapi.testclient import TestClient

    slow = SlowModel(model, delay=1.5)
    app = create_app(slow, ServeSettings(timeout_s=0.5))
    with TestClient(app) as c:
        r = c.post("/v1/audio/transcriptions", files={"file": ("short.wav", wav("short").read_bytes())})
        assert_error(r, 504, "timeout")
        assert r.json()["error"]["type"] == "server_error"
        slow.delay = 0.0
        deadline = time.monotonic() + 30  # the timed-out job was already running: let it finish
        while app.state.batcher.stats()["completed"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = c.post("/v1/audio/transcriptions", files={"file": ("short.wav", wav("short").read_bytes())})
        assert r.status_code == 200


# ------------------------------------------------------------------------------- batcher, stand-alone
class GatedModel:
    """Records each generate call; the first call blocks until ``release`` is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.release = threading.Event()
        self.entered = threading.Event()

    def generate(self, features, task, options, streamer=None):
        self.entered.set()
        self.release.wait(10)
        self.calls.append((task, [int(f.shape[0]) for f in features]))
        return [[int(f.shape[0]), len(task)] for f in features]


def test_batcher_groups_by_task_sorts_by_length_and_skips_cancelled():
    model = GatedModel()
    batcher = MicroBatcher(model, window_ms=0, max_batch_size=3)
    greedy, official = PRESETS["greedy"], PRESETS["official"]
    try:
        blocker = batcher.submit(torch.zeros(1, 4), "asr", official)
        assert model.entered.wait(10)  # the worker is busy: everything below queues up
        futures = {
            "a5": batcher.submit(torch.zeros(5, 4), "asr", official),
            "b7": batcher.submit(torch.zeros(7, 4), "ast", official),
            "a9": batcher.submit(torch.zeros(9, 4), "asr", official),
            "gone": batcher.submit(torch.zeros(8, 4), "asr", official),
            "a2": batcher.submit(torch.zeros(2, 4), "asr", official),
            "g3": batcher.submit(torch.zeros(3, 4), "asr", greedy),
        }
        assert futures["gone"].cancel()
        model.release.set()
        assert blocker.result(10) == [1, 3]
        for name, fut in futures.items():
            if name != "gone":
                assert fut.result(10)[0] == int(name[1:])
        # the oldest key first (asr/official: a5 a9 a2, sorted longest first; the cancelled job takes no
        # slot), then ast, then asr/greedy
        assert model.calls[1:] == [("asr", [9, 5, 2]), ("ast", [7]), ("asr", [3])]
        stats = batcher.stats()
        assert stats["cancelled"] == 1 and stats["completed"] == 6 and stats["max_batch_size_seen"] == 3
        assert stats["queued"] == 0 and stats["queued_audio_seconds"] == 0
    finally:
        model.release.set()
        batcher.stop()


def test_batcher_groups_mixed_traffic_before_the_cut():
    """Interleaved asr/ast requests still make full batches (cutting first and splitting by task after
    made many batches of one)."""
    model = GatedModel()
    batcher = MicroBatcher(model, window_ms=0, max_batch_size=4)
    try:
        blocker = batcher.submit(torch.zeros(1, 4), "asr", PRESETS["official"])
        assert model.entered.wait(10)
        futures = [batcher.submit(torch.zeros(10 + i, 4), ("asr", "ast")[i % 2], PRESETS["official"])
                   for i in range(16)]
        model.release.set()
        blocker.result(10)
        for f in futures:
            f.result(10)
        assert [len(sizes) for _, sizes in model.calls[1:]] == [4, 4, 4, 4]
        assert [task for task, _ in model.calls[1:]] == ["asr", "ast", "asr", "ast"]
    finally:
        model.release.set()
        batcher.stop()


def test_batcher_bounds_queued_audio_and_estimates_retry_after():
    model = GatedModel()
    batcher = MicroBatcher(model, window_ms=0, max_batch_size=1, max_queued_audio_s=1.0)
    try:
        first = batcher.submit(torch.zeros(10, 4), "asr", PRESETS["official"])
        assert model.entered.wait(10)  # running: no longer queued
        a = batcher.submit(torch.zeros(10, 4), "asr", PRESETS["official"])  # 0.6 s queued
        with pytest.raises(ServerBusy) as busy:
            batcher.submit(torch.zeros(10, 4), "asr", PRESETS["official"])  # 1.2 s > 1.0 s
        assert busy.value.retry_after >= 1.0
        assert batcher.stats()["queued_audio_seconds"] == pytest.approx(0.6)
        b = batcher.submit(torch.zeros(5, 4), "asr", PRESETS["official"])  # 0.9 s fits
        model.release.set()
        assert first.result(10) and a.result(10) and b.result(10)
        assert batcher.stats()["rejected_busy"] == 1
    finally:
        model.release.set()
        batcher.stop()


def test_batcher_queue_limit_raises_server_busy():
    model = GatedModel()
    batcher = MicroBatcher(model, window_ms=0, max_batch_size=1, max_queue=1)
    try:
        first = batcher.submit(torch.zeros(1, 4), "asr", PRESETS["official"])
        assert model.entered.wait(10)
        queued = batcher.submit(torch.zeros(2, 4), "asr", PRESETS["official"])
        with pytest.raises(ServerBusy):
            batcher.submit(torch.zeros(3, 4), "asr", PRESETS["official"])
        model.release.set()
        assert first.result(10) and queued.result(10)
        assert batcher.stats()["rejected_busy"] == 1
    finally:
        model.release.set()
        batcher.stop()


def test_batcher_failure_reaches_every_request():
    class Broken:
        def generate(self, *a, **k):
            raise RuntimeError("boom")

    batcher = MicroBatcher(Broken(), window_ms=50, max_batch_size=4)
    try:
        futures = [batcher.submit(torch.zeros(3, 4), "asr", PRESETS["official"]) for _ in range(3)]
        for fut in futures:
            with pytest.raises(RuntimeError, match="boom"):
                fut.result(10)
        assert batcher.stats()["failed"] == 3
    finally:
        batcher.stop()


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_serve_parser():
    from mooer.cli import build_parser
    from mooer.cli import serve as serve_cli

    args = build_parser().parse_args(["serve", "--model", str(OFFICIAL_TINY), "--port", "9123", "--api-key", "k",
                                      "--max-upload-mb", "2", "--max-audio-seconds", "10", "--batch-window-ms",
                                      "5", "--max-batch-size", "4", "--timeout", "30"])
    assert args.func is serve_cli.run
    assert (args.host, args.port, args.api_key, args.max_upload_mb, args.max_audio_seconds, args.batch_window_ms,
            args.max_batch_size, args.timeout) == ("127.0.0.1", 9123, "k", 2.0, 10.0, 5.0, 4, 30.0)
    assert serve_cli._is_loopback("127.0.0.1") and serve_cli._is_loopback("::1")
    assert not serve_cli._is_loopback("0.0.0.0")


def test_cli_serve_engine_settings(capsys):
    """--engine vllm takes the engine's settings; --preset official with it, or vllm settings without it, stop
    the command before any model is loaded, with a message naming the cause."""
    from mooer.cli import build_parser, main

    args = build_parser().parse_args(["serve", "--engine", "vllm", "--max-model-len", "1024", "--max-num-seqs", "4"])
    assert (args.engine, args.max_model_len, args.max_num_seqs, args.preset) == ("vllm", 1024, 4, None)
    assert build_parser().parse_args(["serve"]).engine == "hf"
    model = ["--model", str(OFFICIAL_TINY)]
    assert main(["serve", *model, "--engine", "vllm", "--preset", "official"]) == 2
    err = capsys.readouterr().err
    assert "--preset official" in err and "--engine hf" in err and "beam search" in err
    assert main(["serve", *model, "--max-num-seqs", "4"]) == 2
    assert "--max-num-seqs is a setting of the vllm engine" in capsys.readouterr().err


def test_default_preset_is_the_engines(model):
    from mooer.errors import ConfigError
    from mooer.serving.app import engine_settings

    assert ServeSettings().default_preset is None
    assert engine_settings(ServeSettings(), model.pipeline.engine).default_preset == "official"
    assert engine_settings(ServeSettings(default_preset="greedy"), model.pipeline.engine).default_preset == "greedy"

    class NoBeams:  # what the vllm engine says about beam search
        name = "vllm"

        def check(self, options):
            if options.num_beams > 1:
                raise ConfigError("beam search needs the hf engine")

    assert engine_settings(ServeSettings(), NoBeams()).default_preset == "greedy"
    with pytest.raises(ConfigError, match="'official' cannot run on the vllm engine: beam search needs the hf"):
        engine_settings(ServeSettings(default_preset="official"), NoBeams())


def test_settings_validation():
    from mooer.errors import ConfigError

    with pytest.raises(ConfigError):
        ServeSettings(max_batch_size=0)
    with pytest.raises(ConfigError):
        ServeSettings(api_key="  ")
    assert ServeSettings(api_key="k").public()["api_key"] is True


# --------------------------------------------------------------------------------------- long uploads


def test_long_upload_is_segmented_and_timed(model):
    """An upload over 30 s is cut by the VAD; each segment is a batcher job; subtitles follow the pieces."""
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
    app = create_app(model, ServeSettings(max_audio_seconds=120.0, timeout_s=300))
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=300) as http_:
        r = http_.post("/v1/audio/transcriptions", files={"file": ("long.flac", buf.getvalue())},
                       data={"response_format": "verbose_json"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["segments"]) == 7
        starts = [s["start"] for s in body["segments"]]
        assert starts == sorted(starts) and body["segments"][-1]["end"] <= body["duration"]
        expected_text = model.transcribe(audio, task="asr", long_form=LongFormOptions(enabled=True))[0].text
        assert body["text"] == expected_text  # the same pieces and decoding as the library
        srt = http_.post("/v1/audio/transcriptions", files={"file": ("long.flac", buf.getvalue())},
                         data={"response_format": "srt"}).text
        assert srt.count(" --> ") == 7
        stream = http_.post("/v1/mooer/transcribe", files={"file": ("long.flac", buf.getvalue())},
                            data={"stream": "true"})
        assert stream.status_code == 400 and "stream" in stream.json()["error"]["message"]


# ----------------------------------------------------------------------------- metrics and backpressure
def test_metrics_are_scraped_in_prometheus_format(server):
    from prometheus_client.parser import text_string_to_metric_families

    r = httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": ("zh1.wav", wav("zh1").read_bytes())},
                   headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    assert r.status_code == 200
    scrape = httpx.get(f"{server.url}/metrics")
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(scrape.text)}
    for name in ("mooer_queue_jobs", "mooer_queue_audio_seconds", "mooer_batch_size", "mooer_request_seconds",
                 "mooer_requests_rejected", "process_resident_memory_bytes", "mooer_model_seconds_total"):
        assert name in families, name
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("mooer_batch_size_count", ())] >= 1
    assert samples[("mooer_request_seconds_count", (("task", "asr"),))] >= 1
    assert samples[("process_resident_memory_bytes", ())] > 10e6


def test_queue_bound_answers_503_with_retry_after_at_once(model):
    """Past max_queued_audio_s a request is refused immediately, the accepted ones still finish, and the
    refusal is counted at /metrics."""
    import concurrent.futures

    slow = SlowModel(model, delay=1.0)
    app = create_app(slow, ServeSettings(max_queued_audio_s=1.0, max_batch_size=1, batch_window_ms=0))
    data = wav("zh1").read_bytes()  # ~3 s of audio: one fits an empty queue, a second does not
    with ServerThread(app) as srv:
        def post():
            t0 = time.monotonic()
            r = httpx.post(f"{srv.url}/v1/audio/transcriptions", files={"file": ("zh1.wav", data)}, timeout=60)
            return r, time.monotonic() - t0

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(lambda _: post(), range(4)))
        codes = sorted(r.status_code for r, _ in outcomes)
        assert 200 in codes and 503 in codes, codes
        for r, seconds in outcomes:
            if r.status_code == 503:
                assert r.json()["error"]["code"] == "server_busy"
                assert int(r.headers["retry-after"]) >= 1
                assert seconds < 0.9  # refused at once, not after waiting for the model
        scrape = httpx.get(f"{srv.url}/metrics").text
        assert 'mooer_requests_rejected_total{reason="busy"}' in scrape
        assert httpx.get(f"{srv.url}/health").json()["status"] == "ok"
