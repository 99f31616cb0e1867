"""Live transcription (``/v1/realtime``, :mod:`mooer.serving.realtime`) against a real uvicorn server.

Clients are the ``websockets`` library (sync API), the official ``openai`` SDK and ``mooer stream``. The
multi-sentence recording is synthetic speech (``test_vad`` helpers) with pauses; the tiny fixture model
(random weights) decodes it, and every final text is compared with offline decoding of the same samples
(the segment bounds the server reports), computed after the streams ended so that only the server's worker
thread ever runs the model at a time. Readable text (interim results) uses the bundled demo model.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import soundfile as sf
import soxr
from fixtures_path import OFFICIAL_TINY
from server_thread import ServerThread
from test_vad import SR, noise, tts
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from mooer.api import MooER
from mooer.serving import ServeSettings, create_app
from mooer.serving.settings import RealtimeSettings

KEY = "rt-key-456"
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"
FAST = RealtimeSettings(max_speed=1000.0, burst_s=1000.0, interim_interval_ms=0, max_buffer_s=120.0)


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model() -> MooER:
    return MooER.from_pretrained(OFFICIAL_TINY)


@pytest.fixture(scope="module")
def recording() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Three sentences with 1.5 s pauses, white noise at -40 dBFS, as int16 PCM at 16 kHz."""
    rng = np.random.default_rng(11)
    parts, bounds, pos = [np.zeros(int(0.8 * SR), np.float32)], [], int(0.8 * SR)
    for i in range(3):
        clip = tts(i)
        bounds.append((pos / SR, (pos + clip.size) / SR))
        parts += [clip, np.zeros(int(1.5 * SR), np.float32)]
        pos += clip.size + int(1.5 * SR)
    audio = np.concatenate(parts)
    audio += noise(rng, audio.size)
    return pcm16(audio), bounds


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """One second of speech as int16 PCM (for quick checks that a session or the server still works)."""
    return pcm16(tts(3)[: SR] + noise(np.random.default_rng(2), SR))


@pytest.fixture(scope="module")
def clip_text(model, clip) -> str:
    return model.transcribe(clip.astype(np.float32) / 32768.0, task="asr")[0].text


@pytest.fixture(scope="module")
def server(model, clip_text):
    app = create_app(model, ServeSettings(realtime=FAST))
    with ServerThread(app) as srv:
        srv.app = app
        srv.ws = srv.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
        yield srv


@pytest.fixture(scope="module")
def strict(model, clip_text, server):
    limits = RealtimeSettings(idle_timeout_s=1.5, max_session_s=4.0, max_speed=1.0, burst_s=1.5, max_buffer_s=2.0,
                              interim_interval_ms=0)
    app = create_app(model, ServeSettings(api_key=KEY, realtime=limits))
    with ServerThread(app) as srv:
        srv.app = app
        srv.ws = srv.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
        yield srv


# -------------------------------------------------------------------------------------------- helpers
def pcm16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)


def append(ws, pcm: np.ndarray) -> None:
    ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm.tobytes()).decode()}))


def update(ws, **session) -> None:
    ws.send(json.dumps({"type": "transcription_session.update", "session": session}))


def recv(ws, timeout: float = 60.0) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def expect(ws, kind: str, timeout: float = 60.0) -> dict:
    """The next event of type ``kind`` (others before it are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        event = recv(ws, max(deadline - time.monotonic(), 0.01))
        if event["type"] == kind:
            return event


def expect_error(ws, code: str) -> dict:
    event = expect(ws, "error", timeout=30)
    assert event["error"]["code"] == code, event
    assert event["error"]["message"] and event["error"]["type"] == "invalid_request_error"
    return event


def still_answers(ws) -> None:
    """The session is alive: an empty update is answered."""
    update(ws)
    assert expect(ws, "transcription_session.updated")["session"]["object"] == "realtime.transcription_session"


def finish(ws) -> list[dict]:
    """Commit the open segment, then collect events until every committed item has its result.

    An empty update after the commit marks the end: the server handles events in order."""
    ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
    update(ws)
    events, committed, done, flushed = [], 0, 0, False
    while not (flushed and done >= committed):
        event = recv(ws)
        events.append(event)
        kind = event["type"]
        flushed |= kind == "transcription_session.updated"
        committed += kind == "input_audio_buffer.committed"
        done += kind in (COMPLETED, "conversation.item.input_audio_transcription.failed")
    return events


def stream(url: str, pcm: np.ndarray, *, rate: int = 16000, chunk_ms: int = 100, session: dict | None = None,
           pace: float | None = None, headers: dict | None = None) -> list[dict]:
    """One session: configure, append ``pcm`` in chunks (every ``pace`` seconds, or at once), finish."""
    with connect(url, additional_headers=headers, subprotocols=["realtime"], max_size=None) as ws:
        created = recv(ws)
        assert created["type"] == "transcription_session.created"
        update(ws, input_audio_format={"type": "audio/pcm", "rate": rate}, **(session or {}))
        events = [created, expect(ws, "transcription_session.updated")]
        step = rate * chunk_ms // 1000
        for i in range(0, pcm.size, step):
            append(ws, pcm[i : i + step])
            if pace:
                time.sleep(pace)
        return events + finish(ws)


def completed(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == COMPLETED]


def offline(model: MooER, wave16: np.ndarray, finals: list[dict], task: str, field: str = "text") -> list[str]:
    """Offline decoding (``mooer transcribe``'s defaults) of the samples each final result covers."""
    pieces = [wave16[e["audio_start_ms"] * 16 : e["audio_end_ms"] * 16] for e in finals]
    return [getattr(r, field) for r in model.transcribe(pieces, task=task)]


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def assert_server_healthy(srv, clip: np.ndarray, clip_text: str, headers: dict | None = None) -> None:
    """A fresh session transcribes, /health answers, and no session is left behind."""
    events = stream(srv.ws, clip, session={"turn_detection": None}, headers=headers)
    assert [e["transcript"] for e in completed(events)] == [clip_text]
    assert httpx.get(f"{srv.url}/health").json()["status"] == "ok"
    wait_for(lambda: srv.app.state.realtime.active == 0)


# ------------------------------------------------------------------------------------------- results
def test_one_completed_per_sentence_equal_to_offline_decoding(server, model, recording):
    pcm, bounds = recording
    wave = pcm.astype(np.float32) / 32768.0
    events = stream(server.ws, pcm)
    finals = completed(events)
    assert len(finals) == len(bounds) == 3
    kinds = [e["type"] for e in events]
    assert kinds.count("input_audio_buffer.speech_started") == kinds.count("input_audio_buffer.speech_stopped") == 3
    for final, (b0, b1) in zip(finals, bounds):
        assert final["audio_start_ms"] / 1000 <= b0 < b1 <= final["audio_end_ms"] / 1000 + 0.1
        assert final["task"] == "asr" and final["usage"]["seconds"] > 0 and final["content_index"] == 0
    # every item: speech_started < speech_stopped < committed < completed, in the order of the audio
    for final in finals:
        order = [e["type"] for e in events if e.get("item_id") == final["item_id"]]
        assert order == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                         "input_audio_buffer.committed", COMPLETED]
    committed = [e for e in events if e["type"] == "input_audio_buffer.committed"]
    assert [c["previous_item_id"] for c in committed] == [None] + [c["item_id"] for c in committed[:-1]]
    assert [f["transcript"] for f in finals] == offline(model, wave, finals, "asr")


def test_all_tasks_in_concurrent_sessions_while_http_is_served(server, model, recording, clip, clip_text):
    pcm, _ = recording
    wave = pcm.astype(np.float32) / 32768.0
    buf = io.BytesIO()
    sf.write(buf, clip, SR, format="WAV", subtype="PCM_16")
    with ThreadPoolExecutor(4) as pool:
        runs = {task: pool.submit(stream, server.ws, pcm, session={"input_audio_transcription": {"task": task}},
                                  pace=0.005) for task in ("asr", "ast", "asr_ast")}
        http = pool.submit(httpx.post, f"{server.url}/v1/audio/transcriptions",
                           files={"file": ("clip.wav", buf.getvalue())}, timeout=120)
        results = {task: completed(run.result()) for task, run in runs.items()}
        assert http.result().json()["text"] == clip_text
    for task, finals in results.items():
        assert len(finals) == 3
        assert [f["transcript"] for f in finals] == offline(model, wave, finals, task), task
        if task == "asr_ast":
            assert [f["asr"] for f in finals] == offline(model, wave, finals, task, "asr")
            assert [f["ast"] for f in finals] == offline(model, wave, finals, task, "ast")


def test_24khz_input_is_resampled(server, model, recording):
    pcm, _ = recording
    pcm24 = pcm16(soxr.resample(pcm.astype(np.float32) / 32768.0, SR, 24000, quality="HQ"))
    finals = completed(stream(server.ws, pcm24, rate=24000))
    assert len(finals) == 3
    wave = soxr.resample(pcm24.astype(np.float32) / 32768.0, 24000, SR, quality="HQ")  # what the server decodes
    assert [f["transcript"] for f in finals] == offline(model, wave, finals, "asr")


def test_manual_commits_without_turn_detection(server, model, recording):
    pcm, bounds = recording
    wave = pcm.astype(np.float32) / 32768.0
    with connect(server.ws, subprotocols=["realtime"]) as ws:
        recv(ws)
        update(ws, input_audio_format={"type": "audio/pcm", "rate": 16000}, turn_detection=None)
        assert expect(ws, "transcription_session.updated")["session"]["turn_detection"] is None
        cut = int(bounds[1][0] * SR) - 2000
        append(ws, pcm[:cut])
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        first = expect(ws, COMPLETED)
        append(ws, pcm[cut:])
        events = finish(ws)
    assert not [e for e in events if e["type"].startswith("input_audio_buffer.speech")]
    finals = [first] + completed(events)
    assert [(f["audio_start_ms"], f["audio_end_ms"]) for f in finals] == [(0, cut // 16), (cut // 16, pcm.size // 16)]
    assert [f["transcript"] for f in finals] == offline(model, wave, finals, "asr")


def test_clear_drops_the_open_segment(server, model, recording):
    pcm, bounds = recording
    with connect(server.ws, subprotocols=["realtime"]) as ws:
        recv(ws)
        update(ws, input_audio_format={"type": "audio/pcm", "rate": 16000})
        append(ws, pcm[: int((bounds[0][0] + 1.0) * SR)])
        expect(ws, "input_audio_buffer.speech_started")
        ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        expect(ws, "input_audio_buffer.cleared")
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        expect_error(ws, "input_audio_buffer_commit_empty")


def test_interim_deltas_with_the_demo_model():
    demo = MooER.from_pretrained(None)
    from mooer.assets import sample_path

    zh, _ = sf.read(sample_path("sample_zh.wav"), dtype="int16")
    pcm = np.concatenate([np.zeros(SR // 2, np.int16), zh, np.zeros(SR, np.int16)])
    app = create_app(demo, ServeSettings(realtime=RealtimeSettings(max_speed=10.0)))
    with ServerThread(app) as srv:
        url = srv.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
        events = stream(url, pcm, session={"input_audio_transcription": {"interim_interval_ms": 300}}, pace=0.04)
    finals = completed(events)
    assert [f["transcript"] for f in finals] == ["索引表达式中不允许分组操作"]
    item = finals[0]["item_id"]
    mine = [e for e in events if e.get("item_id") == item]
    deltas = [e for e in mine if e["type"] == DELTA]
    assert len(deltas) >= 3 and mine[-1]["type"] == COMPLETED
    stopped = [e["type"] for e in mine].index("input_audio_buffer.speech_stopped")
    assert all(mine.index(d) < stopped for d in deltas)  # interim results only while the speaker goes on
    sent = ""
    for d in deltas:  # delta appends (OpenAI's meaning); transcript is the whole current hypothesis
        sent += d["delta"]
        assert d["transcript"] and d["transcript"].startswith(sent)
    assert sent and "索引表达式中不允许分组操作".startswith(sent)
    assert app.state.realtime.stats()["interims"] == len(deltas)


# -------------------------------------------------------------------------------------------- clients
def test_mooer_stream_cli_file_and_stdin(server, model, recording, tmp_path, capsys, monkeypatch):
    from mooer.cli import main

    pcm, _ = recording
    wave = pcm.astype(np.float32) / 32768.0
    path = tmp_path / "speech.wav"
    sf.write(path, pcm, SR, subtype="PCM_16")
    assert main(["stream", str(path), "--url", server.url, "--speed", "50", "--format", "jsonl"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    finals = completed(events)
    assert len(finals) == 3 and [f["transcript"] for f in finals] == offline(model, wave, finals, "asr")

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pcm.tobytes())))
    assert main(["stream", "-", "--url", server.url.replace("http://", "ws://"), "--speed", "50"]) == 0
    assert capsys.readouterr().out.splitlines() == [f["transcript"] for f in finals]


def test_openai_sdk_connects_with_the_ga_session_update(server, model, recording):
    from openai import OpenAI

    pcm, _ = recording
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with client.realtime.connect(extra_query={"intent": "transcription"}, max_retries=0) as conn:
        conn.session.update(session={"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 16000},
            "transcription": {"model": "mooer", "language": "zh"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 400}}}})
        kinds = []
        for event in conn:
            kinds.append(event.type)
            if event.type == "session.updated":
                assert event.session.audio.input.format.rate == 16000
                break
        first = pcm[: int(0.8 * SR) + tts(0).size + SR]
        for i in range(0, first.size, 4800):
            conn.input_audio_buffer.append(audio=base64.b64encode(first[i : i + 4800].tobytes()).decode())
        for event in conn:
            kinds.append(event.type)
            if event.type == COMPLETED:
                final = event.to_dict()
                break
    assert kinds[:2] == ["transcription_session.created", "session.updated"]
    assert "input_audio_buffer.speech_started" in kinds and "input_audio_buffer.committed" in kinds
    assert final["item_id"] and final["transcript"] == offline(model, first.astype(np.float32) / 32768.0, [final],
                                                               "asr")[0]


# --------------------------------------------------------------------------------------------- errors
BAD_EVENTS = [
    ("not json {", "invalid_json"),
    ("[1, 2]", "invalid_event"),
    (json.dumps({"audio": "AAAA"}), "invalid_event"),
    (json.dumps({"type": "response.create"}), "unknown_event"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": "@@not base64@@"}), "invalid_audio"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x01\x02\x03").decode()}),
     "invalid_audio"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": 12}), "invalid_value"),
    (json.dumps({"type": "transcription_session.update", "session": {"input_audio_format": "g711_ulaw"}}),
     "unsupported_format"),
    (json.dumps({"type": "transcription_session.update",
                 "session": {"input_audio_format": {"type": "audio/pcm", "rate": 44100}}}), "unsupported_format"),
    (json.dumps({"type": "transcription_session.update", "session": {"turn_detection": {"type": "semantic_vad"}}}),
     "unsupported_format"),
    (json.dumps({"type": "transcription_session.update",
                 "session": {"turn_detection": {"type": "server_vad", "threshold": 2}}}), "invalid_value"),
    (json.dumps({"type": "transcription_session.update",
                 "session": {"input_audio_transcription": {"task": "summarise"}}}), "invalid_value"),
    (json.dumps({"type": "session.update", "session": {"type": "realtime"}}), "invalid_value"),
    (json.dumps({"type": "transcription_session.update",
                 "session": {"input_audio_transcription": {"hotwords": [1, 2]}}}), "invalid_value"),
    (json.dumps({"type": "transcription_session.update",
                 "session": {"input_audio_transcription": {"interim_interval_ms": 50}}}), "invalid_value"),
    (json.dumps({"type": "input_audio_buffer.commit"}), "input_audio_buffer_commit_empty"),
]


def test_malformed_events_get_error_events_and_the_session_goes_on(server, model, clip, clip_text):
    with connect(server.ws, subprotocols=["realtime"]) as ws:
        recv(ws)
        update(ws, input_audio_format={"type": "audio/pcm", "rate": 16000}, turn_detection=None)
        expect(ws, "transcription_session.updated")
        for text, code in BAD_EVENTS:
            ws.send(text)
            error = expect_error(ws, code)
            still_answers(ws)
            assert error["error"]["message"], text
        ws.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": "evt_mine"}))
        assert expect_error(ws, "input_audio_buffer_commit_empty")["error"]["event_id"] == "evt_mine"
        ws.send(clip.tobytes())  # audio in a binary frame instead of an append event
        expect_error(ws, "binary_not_supported")
        # the rejected updates changed nothing: still manual, 16 kHz, asr
        update(ws)
        session = expect(ws, "transcription_session.updated")["session"]
        assert session["turn_detection"] is None and session["input_audio_format"]["rate"] == 16000
        assert session["input_audio_transcription"]["task"] == "asr"
        update(ws, input_audio_transcription={"hotwords": ["MooER", " 索引 ", ""], "model": "whisper-1"})
        echoed = expect(ws, "transcription_session.updated")["session"]["input_audio_transcription"]
        assert echoed["hotwords"] == ["MooER", "索引"] and echoed["model"] == "whisper-1"
        update(ws, input_audio_transcription={"hotwords": []})
        expect(ws, "transcription_session.updated")
        append(ws, clip)
        finals = completed(finish(ws))
    assert [f["transcript"] for f in finals] == [clip_text]
    assert_server_healthy(server, clip, clip_text)


def test_a_container_file_sent_as_pcm_is_refused(server, clip, clip_text):
    buf = io.BytesIO()
    sf.write(buf, clip, SR, format="WAV", subtype="PCM_16")
    with connect(server.ws, subprotocols=["realtime"]) as ws:
        recv(ws)
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(buf.getvalue()).decode()}))
        assert "WAV" in expect_error(ws, "invalid_audio")["error"]["message"]
        still_answers(ws)
    assert_server_healthy(server, clip, clip_text)


def test_api_key_from_the_header_or_the_browser_subprotocol(strict, clip, clip_text):
    for headers, protocols in ((None, ["realtime"]), ({"Authorization": "Bearer wrong"}, ["realtime"]),
                               (None, ["realtime", "openai-insecure-api-key.wrong"])):
        with connect(strict.ws, additional_headers=headers, subprotocols=protocols) as ws:
            expect_error(ws, "invalid_api_key")
            with pytest.raises(ConnectionClosed) as closed:
                recv(ws, 5)
        assert closed.value.rcvd.code == 1008
    with connect(strict.ws, subprotocols=["realtime", f"openai-insecure-api-key.{KEY}",
                                          "openai-beta.realtime-v1"]) as ws:
        assert ws.subprotocol == "realtime"
        assert recv(ws)["type"] == "transcription_session.created"
    with connect(strict.ws.replace("intent=transcription", "intent=conversation"),
                 additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        assert expect_error(ws, "invalid_value")["error"]["param"] == "intent"
    assert_server_healthy(strict, clip, clip_text, headers={"Authorization": f"Bearer {KEY}"})


def test_idle_sessions_are_closed(strict, clip, clip_text):
    auth = {"Authorization": f"Bearer {KEY}"}
    with connect(strict.ws, additional_headers=auth) as ws:
        recv(ws)
        t0 = time.monotonic()
        expect_error(ws, "idle_timeout")
        assert 1.4 < time.monotonic() - t0 < 5
        with pytest.raises(ConnectionClosed) as closed:
            recv(ws, 5)
        assert closed.value.rcvd.code == 1000
    assert_server_healthy(strict, clip, clip_text, headers=auth)


def test_sessions_end_at_the_maximum_length(strict, clip, clip_text):
    auth = {"Authorization": f"Bearer {KEY}"}
    silence = np.zeros(1600, np.int16)
    errors = []
    with connect(strict.ws, additional_headers=auth) as ws:
        recv(ws)
        t0 = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            while time.monotonic() - t0 < 10:
                append(ws, silence)  # 0.1 s every 0.1 s: never idle, never too fast
                time.sleep(0.1)
                try:
                    event = recv(ws, 0)
                except TimeoutError:
                    continue
                errors.append(event["error"]["code"])
        elapsed = time.monotonic() - t0
    assert errors == ["session_expired"]
    assert closed.value.rcvd.code == 1000 and 3.5 < elapsed < 8
    assert_server_healthy(strict, clip, clip_text, headers=auth)


def test_too_fast_and_too_much_audio_are_refused(strict, clip, clip_text):
    auth = {"Authorization": f"Bearer {KEY}"}
    with connect(strict.ws, additional_headers=auth) as ws:
        recv(ws)
        update(ws, input_audio_format={"type": "audio/pcm", "rate": 16000}, turn_detection=None)
        expect(ws, "transcription_session.updated")
        append(ws, clip)  # 1 s: within the 1.5 s head start
        append(ws, clip)  # another second at once: faster than real time
        assert "dropped" in expect_error(ws, "audio_too_fast")["error"]["message"]
        time.sleep(1.1)  # the allowance refills at 1x
        append(ws, clip)  # accepted: the session now holds 2 s, its max_buffer_s
        time.sleep(0.6)
        append(ws, clip[: SR // 2])  # 2.5 s: refused
        expect_error(ws, "buffer_full")
        finals = completed(finish(ws))
    assert len(finals) == 1 and finals[0]["audio_end_ms"] == 2000  # the refused chunks are not in the timeline
    assert_server_healthy(strict, clip, clip_text, headers=auth)


# ------------------------------------------------------------------------------------- disconnection
class _Gate:
    """Stands in for the batcher's model: every model call waits until the gate opens."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.open = threading.Event()
        self.entered = threading.Event()
        self.rows: list[int] = []  # batch size of each model call

    def generate(self, features, *args, **kwargs):
        self.rows.append(len(features))
        self.entered.set()
        assert self.open.wait(60)
        return self.inner.generate(features, *args, **kwargs)


def test_a_client_leaving_mid_segment_leaks_nothing(server, recording, clip, clip_text):
    pcm, bounds = recording
    batcher = server.app.state.batcher
    hub = server.app.state.realtime
    gate = _Gate(batcher.model)
    before = batcher.stats()
    batcher.model = gate
    try:
        with connect(server.ws, subprotocols=["realtime"]) as ws:
            recv(ws)
            update(ws, input_audio_format={"type": "audio/pcm", "rate": 16000},
                   input_audio_transcription={"interim_interval_ms": 200})
            expect(ws, "transcription_session.updated")
            # two sentences closed (finals queued behind the blocked model) and the third one open
            open_at = int((bounds[2][0] + 1.5) * SR)
            for i in range(0, open_at, 1600):
                append(ws, pcm[i : i + 1600])
                time.sleep(0.002)
            for _ in range(2):
                expect(ws, "input_audio_buffer.committed")
            expect(ws, "input_audio_buffer.speech_started")
            assert gate.entered.wait(30)
            wait_for(lambda: batcher.stats()["queued"] >= 1)  # decodings wait behind the blocked one
        wait_for(lambda: hub.active == 0)  # the session is gone...
    finally:
        gate.open.set()
        batcher.model = gate.inner
    stats = batcher.stats
    wait_for(lambda: stats()["completed"] + stats()["cancelled"] + stats()["failed"] == stats()["submitted"])
    done = {k: stats()[k] - before[k] for k in ("submitted", "completed", "cancelled", "failed")}
    # ...and every decoding still waiting when it left was cancelled: only the blocked batch ran
    assert gate.rows == [done["completed"]] and done["failed"] == 0
    assert done["cancelled"] >= 1 and done["cancelled"] == done["submitted"] - done["completed"]
    assert_server_healthy(server, clip, clip_text)


def test_settings_are_checked():
    from mooer.errors import ConfigError

    for bad in ({"burst_s": 0.5}, {"max_speed": 0}, {"idle_timeout_s": -1}, {"interim_interval_ms": -5}):
        with pytest.raises(ConfigError):
            RealtimeSettings(**bad)
    assert ServeSettings().public()["realtime"]["max_speed"] == 1.5
