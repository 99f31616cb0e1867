"""Live transcription over a WebSocket: ``/v1/realtime?intent=transcription``, OpenAI's Realtime
transcription sessions (the subset below), so that existing realtime clients work.

Audio streams in as base64 PCM16; a streaming VAD (:class:`mooer.inference.live.LiveSegmenter`) closes a
segment at each pause and the segment is decoded at once, through the server's batcher (the micro-batcher's
model thread, or vLLM's continuous batching with ``--engine vllm``), with the server's default preset
(``official`` on hf, ``greedy`` on vllm, unless ``mooer serve --preset``): the final
text of a segment equals ``mooer transcribe`` of the same audio. While speech goes on, the growing segment
is decoded again with ``greedy`` at most once per interim interval (skipped while other decodings wait:
final results come first) and sent as a ``delta``. Each segment
is decoded on its own: no text of one segment is ever part of the next one's prompt.

Connecting
----------
``ws://HOST/v1/realtime?intent=transcription`` (``model`` is accepted and ignored; another ``intent`` is
refused). With an API key: the header ``Authorization: Bearer KEY``, or, from a browser (which cannot set
headers), the subprotocols ``["realtime", "openai-insecure-api-key.KEY"]`` as OpenAI's browser clients do;
the server answers with the subprotocol ``realtime``. A wrong or missing key gets an ``error`` event
(``invalid_api_key``) and close code 1008.

Client events
-------------
``transcription_session.update`` (answered by ``transcription_session.updated``) and, in the GA shape,
``session.update`` with ``session.type = "transcription"`` (answered by ``session.updated``). Fields read:

- ``input_audio_format``: ``"pcm16"`` (24 kHz, OpenAI's rate) or ``{"type": "audio/pcm", "rate": 16000 |
  24000}``; GA: ``audio.input.format``. Mono little-endian 16-bit PCM; 24 kHz is resampled with soxr.
  G.711 is not supported.
- ``input_audio_transcription`` (GA: ``audio.input.transcription``): ``model`` and ``language`` (echoed, not
  used: MooER has no language switch), ``prompt`` (echoed, ignored: MooER's prompts are fixed), and
  mooer's own ``task`` (``asr`` | ``ast`` | ``asr_ast``; default ``asr``), ``hotwords`` (list of strings;
  passed to decoding as ``DecodingOptions.hotwords``) and ``interim_interval_ms`` (0 = no interim results).
- ``turn_detection`` (GA: ``audio.input.turn_detection``): ``{"type": "server_vad", "threshold",
  "prefix_padding_ms", "silence_duration_ms"}`` (defaults 0.5, 300, 500), or ``null`` for manual mode (the
  client commits; no speech events, no interim results). ``semantic_vad`` is not supported.
- anything else (noise reduction, ``include``, ``create_response``) is accepted and ignored.

Changing the format or the turn detection clears the audio buffer. An invalid update changes nothing.

``input_audio_buffer.append`` (``audio``: base64 PCM16), ``input_audio_buffer.commit`` (close the open
segment now; the end of a stream) and ``input_audio_buffer.clear`` (drop it).

Server events
-------------
``transcription_session.created`` (on connect), ``…updated`` / ``session.updated``,
``input_audio_buffer.speech_started`` (``audio_start_ms``, ``item_id``), ``input_audio_buffer.speech_stopped``
(``audio_end_ms``), ``input_audio_buffer.committed`` (``item_id``, ``previous_item_id``),
``input_audio_buffer.cleared``, ``conversation.item.input_audio_transcription.delta``,
``conversation.item.input_audio_transcription.completed`` (``transcript``; and ``usage`` in seconds),
``conversation.item.input_audio_transcription.failed`` and ``error``. Times are milliseconds of the audio
received so far (at 16 kHz). Not sent: ``conversation.item.created``, log-probabilities, responses.

mooer's additions (ignored by OpenAI clients): ``completed`` carries ``audio_start_ms``, ``audio_end_ms``,
``task`` and, for ``asr_ast``, ``asr`` and ``ast`` (``transcript`` is then ``asr + "\\n" + ast``). Interim
results are re-decodings of the whole growing segment, so a later one may revise earlier words. ``delta``
keeps OpenAI's meaning, text appended to what the item's earlier deltas sent: it sends what two
consecutive hypotheses agree on (local agreement, whole words in spaced text), so it lags one interval and
is rarely revised; it is empty when nothing new is agreed. mooer's ``transcript`` field of a delta holds the
whole current hypothesis (what the web page shows). ``completed`` replaces all of them.

Limits and errors
-----------------
Per :class:`~mooer.serving.settings.RealtimeSettings`: session length (``session_expired``), idle time
(``idle_timeout``: no event received and no result pending; both end with close code 1000), audio held
per session (``buffer_full``) and speed (``audio_too_fast``: on average more than ``max_speed`` x real
time, beyond a ``burst_s`` head start). Refused audio is dropped and does not count in the timeline. A
malformed event gets an ``error`` event and the session goes on:
``invalid_json``, ``invalid_event``, ``unknown_event``, ``invalid_value``, ``unsupported_format``,
``invalid_audio`` (bad base64, odd byte count, or a container file such as WAV/WebM sent as PCM),
``binary_not_supported`` (audio goes in JSON events), ``input_audio_buffer_commit_empty``. A segment that
cannot be decoded (queue full, timeout) gets a ``failed`` event. A client that goes away has its queued
decodings cancelled; the other sessions and requests are served throughout.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import os
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from fastapi import FastAPI, WebSocket
from starlette.concurrency import run_in_threadpool

from mooer.decoding import PRESETS, DecodingOptions
from mooer.errors import AudioError, MooerError
from mooer.inference.guards import max_new_tokens_for
from mooer.inference.live import LiveSegmenter, SegmentClosed, SpeechStarted
from mooer.inference.vad import SAMPLE_RATE
from mooer.serving.batcher import ServerBusy

log = logging.getLogger("mooer.serving")

__all__ = ["add_realtime", "RealtimeHub"]

RATES = (16000, 24000)
KEY_PROTOCOL = "openai-insecure-api-key."
#: leading bytes of container formats a client may send by mistake instead of raw PCM
_CONTAINERS = {b"RIFF": "WAV", b"OggS": "Ogg", b"fLaC": "FLAC", b"ID3": "MP3", b"\x1aE\xdf\xa3": "WebM/Matroska"}
_DELTA = "conversation.item.input_audio_transcription.delta"
_COMPLETED = "conversation.item.input_audio_transcription.completed"
_FAILED = "conversation.item.input_audio_transcription.failed"
#: the shortest committed audio decoded (one audio token needs 0.085 s)
_MIN_COMMIT_S = 0.1
#: interim budgets are rounded up to this many seconds of audio so that the interim decodings of
#: concurrent sessions share decoding options and can be batched together
_INTERIM_BUCKET_S = 5.0


def _container(data: bytes) -> str | None:
    """The container format ``data`` starts with, if any (a client sending a file instead of PCM)."""
    if data[4:8] == b"ftyp":
        return "MP4"
    return next((name for magic, name in _CONTAINERS.items() if data.startswith(magic)), None)


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def _ms(samples: int) -> int:
    return int(round(samples * 1000 / SAMPLE_RATE))


def _agreed(previous: str, current: str) -> str:
    """What two consecutive interim hypotheses agree on (their common prefix, cut back to a word boundary
    in spaced text): the part of an interim result that ``delta`` events send (local agreement)."""
    n = len(os.path.commonprefix([previous, current]))
    stable = current[:n]
    if n < len(current) and stable[-1:].isascii() and stable[-1:].isalnum() and current[n].isalnum():
        stable = stable[: stable.rfind(" ") + 1]  # mid-word: back to the last space
    return stable


class _EventError(Exception):
    """A client event that cannot be honoured: answered by an ``error`` event; the session goes on."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


# -------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TurnDetection:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500

    def public(self) -> dict[str, Any]:
        return {"type": "server_vad", "threshold": self.threshold, "prefix_padding_ms": self.prefix_padding_ms,
                "silence_duration_ms": self.silence_duration_ms}


@dataclass(frozen=True)
class SessionConfig:
    task: str
    interim_interval_ms: int
    rate: int = 24000
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    hotwords: tuple[str, ...] = ()
    model: str | None = None
    language: str | None = None
    prompt: str | None = None

    def transcription(self) -> dict[str, Any]:
        return {"model": self.model, "language": self.language, "prompt": self.prompt, "task": self.task,
                "hotwords": list(self.hotwords), "interim_interval_ms": self.interim_interval_ms}

    def render(self, session_id: str, ga: bool) -> dict[str, Any]:
        """The session object in the beta (``transcription_session.*``) or GA (``session.*``) shape."""
        vad = self.turn_detection.public() if self.turn_detection else None
        if ga:
            return {"type": "transcription", "id": session_id, "object": "realtime.transcription_session",
                    "audio": {"input": {"format": {"type": "audio/pcm", "rate": self.rate},
                                        "transcription": self.transcription(), "turn_detection": vad,
                                        "noise_reduction": None}}, "include": []}
        fmt = "pcm16" if self.rate == 24000 else {"type": "audio/pcm", "rate": self.rate}
        return {"id": session_id, "object": "realtime.transcription_session", "modalities": ["text"],
                "input_audio_format": fmt, "input_audio_transcription": self.transcription(),
                "turn_detection": vad, "input_audio_noise_reduction": None, "include": []}


def _number(value: Any, param: str, low: float, high: float, integer: bool = False) -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
    if not ok or (integer and value != int(value)):
        kind = "an integer" if integer else "a number"
        raise _EventError("invalid_value", f"{param} must be {kind} from {low:g} to {high:g}, got {value!r}.", param)
    return int(value) if integer else float(value)


def _object(value: Any, param: str) -> dict:
    if not isinstance(value, dict):
        raise _EventError("invalid_value", f"{param} must be an object.", param)
    return value


def _rate(fmt: Any, param: str) -> int:
    if fmt == "pcm16":
        return 24000
    if isinstance(fmt, str):
        raise _EventError("unsupported_format", f"{param} {fmt!r} is not supported: send 'pcm16' (24 kHz) or "
                                                f"{{'type': 'audio/pcm', 'rate': 16000}}.", param)
    fmt = _object(fmt, param)
    if fmt.get("type", "audio/pcm") != "audio/pcm":
        raise _EventError("unsupported_format", f"{param}.type {fmt.get('type')!r} is not supported; only "
                                                f"'audio/pcm' (16-bit PCM, mono) is.", param)
    rate = fmt.get("rate", 24000)
    if rate not in RATES:
        raise _EventError("unsupported_format", f"{param}.rate must be 16000 or 24000, got {rate!r}.", param)
    return int(rate)


def _turn_detection(value: Any, param: str, current: TurnDetection | None) -> TurnDetection | None:
    if value is None:
        return None
    value = _object(value, param)
    kind = value.get("type", "server_vad")
    if kind != "server_vad":
        raise _EventError("unsupported_format" if kind == "semantic_vad" else "invalid_value",
                          f"{param}.type {kind!r} is not supported; use 'server_vad' or null (manual commits).",
                          f"{param}.type")
    base = current or TurnDetection()
    changes: dict[str, Any] = {}
    if value.get("threshold") is not None:
        changes["threshold"] = _number(value["threshold"], f"{param}.threshold", 0.01, 0.99)
    if value.get("prefix_padding_ms") is not None:
        changes["prefix_padding_ms"] = _number(value["prefix_padding_ms"], f"{param}.prefix_padding_ms", 0, 5000,
                                               integer=True)
    if value.get("silence_duration_ms") is not None:
        changes["silence_duration_ms"] = _number(value["silence_duration_ms"], f"{param}.silence_duration_ms",
                                                 100, 10000, integer=True)
    return replace(base, **changes)


def _hotwords(value: Any, param: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value) or len(value) > 1000:
        raise _EventError("invalid_value", f"{param} must be a list of at most 1000 strings.", param)
    return tuple(w.strip() for w in value if w.strip())


# ------------------------------------------------------------------------------------------- session
@dataclass
class _Item:
    id: str
    start: int
    closed: bool = False
    sent: str = ""  # what the item's deltas have sent
    hypothesis: str = ""  # the latest interim hypothesis
    interim_samples: int = 0  # segment length at the last interim decoding
    interim_at: float = 0.0  # wall clock of the last interim decoding


@dataclass
class _Final:
    item: _Item
    future: Any
    start: int
    end: int
    task: str


class RealtimeHub:
    """What the realtime endpoint shares across sessions: the service, the limits, and counters."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.settings = service.settings
        self.limits = service.settings.realtime
        tasks = service.model.tasks
        self.default_task = "asr" if "asr" in tasks else service.model.default_task
        self.active = 0
        self.sessions = 0
        self.completed = 0
        self.interims = 0
        self.errors = 0

    def stats(self) -> dict[str, int]:
        return {"active": self.active, "sessions": self.sessions, "completed": self.completed,
                "interims": self.interims, "errors": self.errors}

    def authorized(self, ws: WebSocket) -> bool:
        key = self.settings.api_key
        if key is None:
            return True
        offered: list[str] = []
        scheme, _, token = ws.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            offered.append(token.strip())
        offered += [p[len(KEY_PROTOCOL):] for p in ws.scope.get("subprotocols", []) if p.startswith(KEY_PROTOCOL)]
        return any(hmac.compare_digest(o.encode(), key.encode()) for o in offered)


class _Session:
    """One WebSocket connection: reads client events in order, decodes through the batcher, sends events."""

    def __init__(self, ws: WebSocket, hub: RealtimeHub) -> None:
        self.ws = ws
        self.hub = hub
        self.limits = hub.limits
        self.pipeline = hub.service.model.pipeline
        self.batcher = hub.service.batcher
        self.id = _id("sess")
        self.config = SessionConfig(task=hub.default_task, interim_interval_ms=hub.limits.interim_interval_ms)
        self.vad_base = hub.service.long_form.vad  # long-form's rules and maximum segment length
        self.loop = asyncio.get_running_loop()
        self.send_lock = asyncio.Lock()
        self.gone = False
        self.current: _Item | None = None
        self.previous_item_id: str | None = None
        self.interim: asyncio.Task | None = None
        self.finals: asyncio.Queue[_Final] = asyncio.Queue()
        self.pending_samples = 0  # audio of segments waiting for their final decoding
        self.credit = hub.limits.burst_s  # seconds of audio the client may send now (a token bucket)
        self.credit_at: float | None = None
        self.seen_audio = False
        self.offset = 0  # 16 kHz samples received before the current segmenter (the timeline goes on)
        self.segmenter: LiveSegmenter | None = None
        self._reset_audio()

    # ------------------------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        offered = self.ws.scope.get("subprotocols", [])
        await self.ws.accept(subprotocol="realtime" if "realtime" in offered else None)
        if not self.hub.authorized(self.ws):
            await self.error("invalid_api_key", "Incorrect or missing API key: send 'Authorization: Bearer <key>' "
                                                "or the subprotocol 'openai-insecure-api-key.<key>'.")
            await self.close(1008, "invalid api key")
            return
        intent = self.ws.query_params.get("intent")
        if intent not in (None, "transcription"):
            await self.error("invalid_value", f"intent={intent!r}: this server only runs transcription sessions "
                                              f"(intent=transcription).", "intent")
            await self.close(1008, "unsupported intent")
            return
        self.hub.active += 1
        self.hub.sessions += 1
        deliver = asyncio.create_task(self._deliver())
        try:
            await self.send({"type": "transcription_session.created", "session": self.config.render(self.id, False)})
            await self._receive()
        except Exception:  # noqa: BLE001 - one broken session must not take the server down
            log.exception("realtime session %s failed", self.id)
            await self.close(1011, "internal error")
        finally:
            self.gone = True
            tasks = [t for t in (deliver, self.interim) if t is not None]
            for task in tasks:
                task.cancel()
            while not self.finals.empty():  # queued decodings nobody will read: off the batcher's queue
                self.finals.get_nowait().future.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.hub.active -= 1

    async def _receive(self) -> None:
        deadline = self.loop.time() + self.limits.max_session_s
        while not self.gone:
            remaining = deadline - self.loop.time()
            try:
                if remaining <= 0:
                    raise asyncio.TimeoutError
                message = await asyncio.wait_for(self.ws.receive(), timeout=min(self.limits.idle_timeout_s, remaining))
            except asyncio.TimeoutError:
                if self.pending_samples > 0 and self.loop.time() < deadline:
                    continue  # silent, but waiting for its results: not idle
                if self.loop.time() >= deadline:
                    await self.error("session_expired", f"The session reached its maximum length of "
                                                        f"{self.limits.max_session_s:g} s.")
                    await self.close(1000, "session expired")
                else:
                    await self.error("idle_timeout", f"No event for {self.limits.idle_timeout_s:g} s; closing.")
                    await self.close(1000, "idle timeout")
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await self.error("binary_not_supported", "Binary messages are not supported: send JSON text events "
                                                         "(audio as base64 in input_audio_buffer.append).")
                continue
            await self._handle(text)

    async def send(self, event: dict[str, Any]) -> None:
        if self.gone:
            return
        payload = json.dumps({"event_id": _id("event"), **event}, ensure_ascii=False)
        async with self.send_lock:
            try:
                await self.ws.send_text(payload)
            except Exception:  # noqa: BLE001 - the client went away; the receive loop sees the disconnect
                self.gone = True

    async def error(self, code: str, message: str, param: str | None = None, event_id: str | None = None) -> None:
        self.hub.errors += 1
        await self.send({"type": "error", "error": {"type": "invalid_request_error", "code": code, "message": message,
                                                    "param": param, "event_id": event_id}})

    async def close(self, code: int, reason: str) -> None:
        if self.gone:
            return
        self.gone = True
        try:
            await self.ws.close(code, reason)
        except Exception:  # noqa: BLE001 - already closed by the client
            pass

    # --------------------------------------------------------------------------------------- events
    async def _handle(self, text: str) -> None:
        try:
            event = json.loads(text)
        except ValueError as e:
            await self.error("invalid_json", f"The event is not valid JSON: {e}.")
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            await self.error("invalid_event", "An event must be a JSON object with a string 'type'.", "type")
            return
        client_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        handler = {
            "transcription_session.update": self._update,
            "session.update": self._update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit,
            "input_audio_buffer.clear": self._clear,
        }.get(event["type"])
        try:
            if handler is None:
                raise _EventError("unknown_event", f"Unknown or unsupported event type {event['type']!r}; this "
                                                   f"server accepts transcription_session.update, session.update, "
                                                   f"input_audio_buffer.append, .commit and .clear.", "type")
            await handler(event)
        except _EventError as e:
            await self.error(e.code, e.message, e.param, client_id)

    async def _update(self, event: dict) -> None:
        ga = event["type"] == "session.update"
        session = _object(event.get("session"), "session")
        if ga:
            if session.get("type", "transcription") != "transcription":
                raise _EventError("invalid_value", "session.type must be 'transcription': this server only "
                                                   "transcribes.", "session.type")
            audio = _object(session.get("audio", {}), "session.audio")
            source = _object(audio.get("input", {}), "session.audio.input")
            names = {"format": "session.audio.input.format", "transcription": "session.audio.input.transcription",
                     "turn_detection": "session.audio.input.turn_detection"}
        else:
            source = session
            names = {"format": "session.input_audio_format",
                     "transcription": "session.input_audio_transcription",
                     "turn_detection": "session.turn_detection"}
        keys = {"format": "format" if ga else "input_audio_format",
                "transcription": "transcription" if ga else "input_audio_transcription",
                "turn_detection": "turn_detection"}
        config = self.config
        changes: dict[str, Any] = {}
        if source.get(keys["format"]) is not None:
            changes["rate"] = _rate(source[keys["format"]], names["format"])
        if keys["turn_detection"] in source:
            changes["turn_detection"] = _turn_detection(source[keys["turn_detection"]], names["turn_detection"],
                                                        config.turn_detection)
        if source.get(keys["transcription"]) is not None:
            changes.update(self._transcription(_object(source[keys["transcription"]], names["transcription"]),
                                               names["transcription"]))
        new = replace(config, **changes)
        self.config = new
        if (new.rate, new.turn_detection) != (config.rate, config.turn_detection):
            await self._drop_open_item()
            self._reset_audio()
        await self.send({"type": "session.updated" if ga else "transcription_session.updated",
                         "session": new.render(self.id, ga)})

    def _transcription(self, value: dict, param: str) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if value.get("task") is not None:
            try:
                self.pipeline.check(value["task"], PRESETS[self.hub.settings.default_preset])
            except (ValueError, MooerError) as e:
                raise _EventError("invalid_value", str(e), f"{param}.task") from None
            changes["task"] = value["task"]
        if "hotwords" in value:
            changes["hotwords"] = _hotwords(value["hotwords"], f"{param}.hotwords")
        if value.get("interim_interval_ms") is not None:
            ms = _number(value["interim_interval_ms"], f"{param}.interim_interval_ms", 0, 60000, integer=True)
            if 0 < ms < 200:
                raise _EventError("invalid_value", f"{param}.interim_interval_ms must be 0 (none) or at least 200.",
                                  f"{param}.interim_interval_ms")
            changes["interim_interval_ms"] = ms
        for name in ("model", "prompt", "language"):
            if isinstance(value.get(name), str):
                changes[name] = value[name]
        return changes

    def _reset_audio(self) -> None:
        """A new segmenter (and resampler) for the current format and turn detection."""
        if self.segmenter is not None:
            self.offset += self.segmenter.num_samples
        td = self.config.turn_detection
        if td is None:
            self.segmenter = LiveSegmenter(self.vad_base, detect=False)
        else:
            vad = replace(self.vad_base, threshold=td.threshold, neg_threshold=None,
                          min_silence_s=td.silence_duration_ms / 1000.0)
            self.segmenter = LiveSegmenter(vad, prefix_pad_s=td.prefix_padding_ms / 1000.0)
        self.resampler = None
        if self.config.rate != SAMPLE_RATE:
            import soxr

            self.resampler = soxr.ResampleStream(self.config.rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")

    async def _append(self, event: dict) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise _EventError("invalid_value", "input_audio_buffer.append needs 'audio': base64 PCM16.", "audio")
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise _EventError("invalid_audio", "'audio' is not valid base64.", "audio") from None
        if len(raw) % 2:
            raise _EventError("invalid_audio", f"{len(raw)} bytes of audio: PCM16 samples are 2 bytes each.", "audio")
        container = None if self.seen_audio else _container(raw)
        if container is not None:
            raise _EventError("invalid_audio", f"This looks like a {container} file: send raw 16-bit PCM samples "
                                               f"(mono, little-endian, {self.config.rate} Hz), not a container.",
                              "audio")
        if not raw:
            return
        seconds = len(raw) / 2 / self.config.rate
        now = self.loop.time()
        if self.credit_at is not None:  # the bucket refills at max_speed, up to burst_s
            self.credit = min(self.limits.burst_s, self.credit + self.limits.max_speed * (now - self.credit_at))
        self.credit_at = now
        if seconds > self.credit + 1e-6:
            raise _EventError("audio_too_fast", f"Audio arrives faster than real time: this {seconds:.2f} s chunk "
                                                f"exceeds the {self.credit:.2f} s allowed now (at most "
                                                f"{self.limits.max_speed:g}x real time after a {self.limits.burst_s:g} s "
                                                f"head start). It was dropped.", "audio")
        held = self.segmenter.buffered_seconds + self.pending_samples / SAMPLE_RATE + seconds
        if held > self.limits.max_buffer_s:
            raise _EventError("buffer_full", f"This session would hold {held:.1f} s of audio, more than "
                                             f"{self.limits.max_buffer_s:g} s; this chunk was dropped.", "audio")
        manual_max = self.vad_base.max_segment_s
        if not self.segmenter.detect and self.segmenter.buffered_seconds + seconds > manual_max:
            raise _EventError("buffer_full", f"Without turn detection the buffer holds at most {manual_max:g} s: "
                                             f"commit before that. This chunk was dropped.", "audio")
        self.seen_audio = True
        self.credit -= seconds
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
        events = await run_in_threadpool(self._push, samples)
        for ev in events:
            if isinstance(ev, SpeechStarted):
                self.current = _Item(_id("item"), self.offset + ev.start)
                await self.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": _ms(self.current.start),
                                 "item_id": self.current.id})
            else:
                await self._finish(ev)
        self._maybe_interim()

    def _push(self, samples: np.ndarray) -> list:
        if self.resampler is not None:
            samples = self.resampler.resample_chunk(samples)
        return self.segmenter.push(samples)

    async def _commit(self, event: dict) -> None:
        closed = self.segmenter.commit()
        if closed is None or closed.seconds < _MIN_COMMIT_S:
            raise _EventError("input_audio_buffer_commit_empty", "Nothing to commit: the buffer holds no speech "
                                                                  f"(or less than {_MIN_COMMIT_S * 1000:g} ms).")
        await self._finish(closed)

    async def _clear(self, event: dict) -> None:
        self.segmenter.clear()
        await self._drop_open_item()
        await self.send({"type": "input_audio_buffer.cleared"})

    async def _drop_open_item(self) -> None:
        if self.current is not None:
            self.current.closed = True
            self.current = None
        if self.interim is not None:
            self.interim.cancel()

    # -------------------------------------------------------------------------------------- decoding
    def _options(self, base: DecodingOptions) -> DecodingOptions:
        if self.config.hotwords:
            return base.replace(hotwords=self.config.hotwords)
        return base

    async def _finish(self, segment: SegmentClosed) -> None:
        """A closed segment: stop/commit events, then its final decoding is queued."""
        start, end = self.offset + segment.start, self.offset + segment.end
        item = self.current if segment.announced and self.current is not None else _Item(_id("item"), start)
        self.current = None
        item.closed = True
        if self.interim is not None:
            self.interim.cancel()
        if segment.announced:
            await self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": _ms(end),
                             "item_id": item.id})
        await self.send({"type": "input_audio_buffer.committed", "previous_item_id": self.previous_item_id,
                         "item_id": item.id})
        self.previous_item_id = item.id
        failure = None
        try:
            features = await run_in_threadpool(self.pipeline.featurize_waveform, segment.audio)
            options = self._options(PRESETS[self.hub.settings.default_preset])
            future = self.batcher.submit(features, self.config.task, options)
        except AudioError as e:
            failure = ("invalid_audio", e.reason)
        except ServerBusy as e:
            failure = ("server_busy", f"Server busy: {e}")
        if failure is not None:
            await self.send({"type": _FAILED, "item_id": item.id, "content_index": 0,
                             "error": {"type": "server_error", "code": failure[0], "message": failure[1], "param": None}})
            return
        self.pending_samples += end - start
        self.finals.put_nowait(_Final(item, future, start, end, self.config.task))

    async def _deliver(self) -> None:
        """Final results, in the order the segments closed."""
        timeout = self.hub.settings.timeout_s
        while True:
            final = await self.finals.get()
            item = final.item
            try:
                generation = await asyncio.wait_for(asyncio.wrap_future(final.future), timeout=timeout)
                seconds = (final.end - final.start) / SAMPLE_RATE
                result = self.pipeline.result(item.id, item.id, final.task, generation, seconds)
                event = {"type": _COMPLETED, "item_id": item.id, "content_index": 0, "transcript": result.text,
                         "task": final.task, "audio_start_ms": _ms(final.start), "audio_end_ms": _ms(final.end),
                         "usage": {"type": "duration", "seconds": round(seconds, 3)}}
                if final.task == "asr_ast":
                    event["asr"], event["ast"] = result.asr, result.ast
                self.hub.completed += 1
                await self.send(event)
            except asyncio.TimeoutError:
                await self.send({"type": _FAILED, "item_id": item.id, "content_index": 0,
                                 "error": {"type": "server_error", "code": "timeout", "param": None,
                                           "message": f"Decoding took longer than {timeout:g} s."}})
            except Exception as e:  # noqa: BLE001 - reported in-band, the session goes on
                log.exception("decoding a live segment failed")
                await self.send({"type": _FAILED, "item_id": item.id, "content_index": 0,
                                 "error": {"type": "server_error", "code": "decoding_failed", "param": None,
                                           "message": f"Decoding failed: {type(e).__name__}"}})
            finally:
                self.pending_samples -= final.end - final.start

    def _maybe_interim(self) -> None:
        """Start an interim decoding of the open segment when an interval of audio and of time has passed
        since the last one, none of this session's is running, and no decoding waits in the batcher's
        queue: interim results yield to final ones (a busy server sends fewer of them, not later finals)."""
        interval = self.config.interim_interval_ms / 1000.0
        item = self.current
        if interval <= 0 or item is None or self.interim is not None:
            return
        now_samples = self.offset + self.segmenter.num_samples - item.start
        now = self.loop.time()
        if now_samples - item.interim_samples < interval * SAMPLE_RATE or now - item.interim_at < interval:
            return
        if self.batcher.stats()["queued"] > 0:
            return
        current = self.segmenter.current()
        if current is None:
            return
        item.interim_samples, item.interim_at = now_samples, now
        self.interim = asyncio.create_task(self._interim(item, current[1]))

    async def _interim(self, item: _Item, audio: np.ndarray) -> None:
        try:
            seconds = audio.size / SAMPLE_RATE
            budget = max_new_tokens_for(-(-seconds // _INTERIM_BUCKET_S) * _INTERIM_BUCKET_S)
            options = self._options(PRESETS["greedy"].replace(max_new_tokens=budget))
            features = await run_in_threadpool(self.pipeline.featurize_waveform, audio)
            future = self.batcher.submit(features, self.config.task, options)
            generation = await asyncio.wait_for(asyncio.wrap_future(future), timeout=self.hub.settings.timeout_s)
            text = self.pipeline.text_of(generation.ids)
            if item.closed or item is not self.current or text == item.hypothesis:
                return
            stable = _agreed(item.hypothesis, text)
            delta = stable[len(item.sent):] if stable.startswith(item.sent) else ""
            item.hypothesis = text
            item.sent += delta
            self.hub.interims += 1
            await self.send({"type": _DELTA, "item_id": item.id, "content_index": 0, "delta": delta,
                             "transcript": text})
        except Exception as e:  # noqa: BLE001 - interim results are best effort: the final one follows anyway
            log.debug("interim decoding skipped: %r", e)
        finally:
            if self.interim is asyncio.current_task():
                self.interim = None


def add_realtime(app: FastAPI, service: Any) -> RealtimeHub:
    """Serve ``/v1/realtime`` on ``app`` with ``service`` (the app's model, settings and batcher);
    ``app.state.realtime`` is the :class:`RealtimeHub` (session counters)."""
    hub = RealtimeHub(service)
    app.state.realtime = hub

    @app.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket) -> None:
        await _Session(websocket, hub).run()

    return hub
