"""The HTTP application of ``mooer serve`` (FastAPI).

Endpoints
---------
``POST /v1/audio/transcriptions``, ``POST /v1/audio/translations``
    OpenAI's audio API: multipart ``file`` plus ``model``, ``response_format`` (``json`` | ``text`` |
    ``verbose_json`` | ``srt`` | ``vtt``), ``prompt``, ``language``, ``temperature``. Transcription is
    task ``asr``, translation task ``ast`` (Chinese speech → English text). The official ``openai`` client
    works unchanged. How the OpenAI fields are treated:

    - ``model``: any value is accepted (one model per process; clients often hard-code ``whisper-1``);
      ``GET /v1/models`` lists the served name.
    - ``language``: validated, not used. MooER has no language switch; ``zh``/``en`` (``zh-CN``,
      ``chinese``, ...) or nothing are accepted, anything else gets 400 ``unsupported_language``.
      ``verbose_json`` echoes it (default ``chinese`` for transcriptions, ``english`` for translations).
    - ``prompt``: read as **hotwords** (phrases split at commas and newlines; see ``hotwords`` below).
      MooER's task prompts are fixed, so the field cannot steer the model as free text; a Whisper-style
      prompt of running text becomes phrases like any list, and a piece longer than 64 characters is a 400.
    - ``temperature``: validated (0–1) and ignored: decoding is deterministic (the ``official`` preset, beam
      search, unless the server was started with another default; ``greedy`` on the vllm engine).
    - ``timestamp_granularities[]``, ``include[]``, ``chunking_strategy``: accepted and ignored. Segments
      are whole-file (one segment from 0 to the duration) until long-form segmentation fills them.
    - ``stream=true`` (transcriptions): server-sent events as OpenAI sends them,
      ``{"type": "transcript.text.delta", "delta"}`` then ``{"type": "transcript.text.done", "text"}``,
      decoded with the ``greedy`` preset (the official streaming demo's settings).

    - ``hotwords`` (all three endpoints; not an OpenAI field): phrases to favour while decoding (names,
      terms; :mod:`mooer.inference.hotwords`), separated by commas or newlines, each optionally followed by
      ``<TAB>weight``; joined with the phrases of ``prompt``. ``hotword_weight``: the bonus per token
      (> 0 and <= 20; default :data:`~mooer.decoding.DEFAULT_HOTWORD_WEIGHT`, or
      :data:`~mooer.decoding.DEFAULT_FILTERED_HOTWORD_WEIGHT` where the CTC pre-filter runs). At most 1,000 phrases of at
      most 64 characters; an empty phrase, a longer one, more phrases or a weight out of range get 400
      ``invalid_hotwords`` (a weight that is not a number: 400 ``invalid_value``). On a model with a CTC
      head (the bundled demo model), transcripts boost per file only the phrases its CTC posteriors support
      (:data:`~mooer.decoding.DEFAULT_HOTWORD_THRESHOLD`); without one (the official checkpoints) and in
      translations every listed phrase is boosted.

``POST /v1/mooer/transcribe``
    MooER's own endpoint: ``file``, ``task`` (``asr`` | ``ast`` | ``asr_ast``; default ``asr_ast`` when the
    model has it), ``preset`` (``official`` | ``greedy``; on the vllm engine ``official``, beam search, is a
    400 ``unsupported_preset``), ``stream``, ``hotwords``, ``hotword_weight``.
    Returns ``{"text", "asr", "ast", "task", "preset", "hotwords" (how many phrases were listed),
    "duration"}``; with ``stream=true``, events ``{"delta"}`` and a final
    ``{"done": true, "text", "asr", "ast", ...}`` (greedy only, as in the official demo).

``WS /v1/realtime?intent=transcription``
    Live transcription: OpenAI's Realtime transcription sessions (the subset in :mod:`mooer.serving.realtime`).

``GET /v1/models``, ``GET /health`` (status, tasks, limits, batcher counters), ``GET /metrics``
(Prometheus text: queue depth and audio seconds, batch sizes, latency, rejections, memory), ``GET /`` (the
web page).

Errors are JSON in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``: 400 bad input
(empty, corrupt, not audio, too short, too long, bad field), 401 missing or wrong API key, 413 upload too
large (rejected while it streams in: nothing beyond the limit is kept), 503 queue full (with ``Retry-After``;
the queue is bounded by seconds of audio waiting, ``ServeSettings.max_queued_audio_s``), 504 timeout.
Uploads are only ever held in memory; no server-side path is accepted.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import queue
import re
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import torch
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from mooer.audio import audio_info, load_audio
from mooer.decoding import DEFAULT_FILTERED_HOTWORD_WEIGHT, DEFAULT_HOTWORD_WEIGHT, PRESETS, DecodingOptions, Result
from mooer.errors import AudioError, ConfigError
from mooer.features import SAMPLE_RATE, audio_tokens
from mooer.inference.engines import Generation
from mooer.inference.guards import compression_ratio
from mooer.inference.hotwords import HotwordError, check_weight, normalize_hotwords, parse_hotwords
from mooer.inference.longform import NO_SPEECH, LongFormOptions, transcribe_long
from mooer.output.subtitles import segments_from_result, to_srt, to_vtt
from mooer.serving.batcher import FRAME_SECONDS, MicroBatcher, ServerBusy, TokenStreamer
from mooer.serving.continuous import ContinuousBatcher
from mooer.serving.memory import Trimmer, limit_arenas
from mooer.serving.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from mooer.serving.realtime import add_realtime
from mooer.serving.settings import ServeSettings

log = logging.getLogger("mooer.serving")

STATIC_DIR = Path(__file__).resolve().parent / "static"
RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
#: Room for the non-file form fields and multipart framing on top of ``max_upload_mb``.
FORM_ALLOWANCE = 64 * 1024
#: Bytes of an over-limit or unauthorised body read (and discarded) so the client sees the error response
#: instead of a reset connection; beyond this the connection is simply closed after the response.
DRAIN_LIMIT = 64 * 1024 * 1024
_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")
_LANGUAGES = {"zh": "chinese", "chinese": "chinese", "en": "english", "english": "english"}
HOTWORDS_HELP = "phrases to favour (names, terms), separated by commas or newlines; 'phrase<TAB>weight' sets one's weight"
PROMPT_HELP = "read as hotwords: phrases separated by commas or newlines"
WEIGHT_HELP = (f"bonus per token of a listed phrase, > 0 and <= 20 (default {DEFAULT_FILTERED_HOTWORD_WEIGHT:g} for "
               f"transcripts of a model with a CTC head, which boost only the phrases it heard, else "
               f"{DEFAULT_HOTWORD_WEIGHT:g})")

__all__ = ["create_app", "ApiError"]


# ---------------------------------------------------------------------------------------------- errors
class ApiError(Exception):
    """An error answered as ``{"error": {...}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 type_: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = dict(headers or {})
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type_ or ("server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = dict(self.headers)
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(self.body(), status_code=self.status, headers=headers or None)

    @classmethod
    def busy(cls, error: ServerBusy) -> "ApiError":
        return cls(503, f"Server busy: {error}", code="server_busy",
                   headers={"Retry-After": str(max(1, math.ceil(error.retry_after)))})


async def _send_error(send: Callable[[dict], Awaitable[None]], error: ApiError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if error.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _drain(receive: Callable[[], Awaitable[dict]], more: bool, limit: int = DRAIN_LIMIT) -> None:
    """Read and discard the rest of a request body (at most ``limit`` bytes)."""
    seen = 0
    while more and seen <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        more = message.get("more_body", False)


class _Guard:
    """ASGI middleware for ``/v1/``: bearer-key check and upload size limit, before the body is parsed.

    A body is read chunk by chunk and rejected with 413 as soon as it passes the limit (or at once when
    ``Content-Length`` announces more); an accepted body is replayed to the application from memory.
    """

    def __init__(self, app: Any, settings: ServeSettings) -> None:
        self.app = app
        self.settings = settings
        self.key = settings.api_key.encode() if settings.api_key else None

    def _authorized(self, scope: dict) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key or b"")
        return False

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        if self.key is not None and not self._authorized(scope):
            await _drain(receive, scope["method"] in ("POST", "PUT", "PATCH"))
            await _send_error(send, ApiError(401, "Incorrect or missing API key. Send 'Authorization: Bearer "
                                                  "<key>' with the key the server was started with.",
                                             code="invalid_api_key"))
            return
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        limit = self.settings.max_upload_bytes + FORM_ALLOWANCE
        too_large = ApiError(413, f"Upload too large: the limit is {self.settings.max_upload_mb:g} MB.",
                             code="upload_too_large", param="file")
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _drain(receive, True)
            await _send_error(send, too_large)
            return
        chunks: list[bytes] = []
        total, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            more = message.get("more_body", False)
            if total > limit:
                chunks.clear()
                await _drain(receive, more)
                await _send_error(send, too_large)
                return
            chunks.append(chunk)
        body = b"".join(chunks)
        chunks.clear()
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)


# ------------------------------------------------------------------------------------------ processing
@dataclass
class _Upload:
    name: str
    features: torch.Tensor | None  # None: a long upload, decoded segment by segment (mooer.inference.longform)
    duration: float
    data: bytes | None = None
    no_speech: bool = False  # the VAD found no speech: answered with an empty text, never decoded


def _clean_reason(reason: str) -> str:
    """An audio error's reason (its decoder details left out) without object reprs."""
    return _REPR.sub("<upload>", reason)


def _sse(payload: dict) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def _check_language(language: str | None) -> str | None:
    """The OpenAI-style language name for a requested code, or None when none was given (400 if unknown)."""
    if language is None or not language.strip():
        return None
    code = language.strip().lower().replace("_", "-")
    name = _LANGUAGES.get(code) or _LANGUAGES.get(code.split("-")[0])
    if name is None:
        raise ApiError(400, f"Unsupported language {language!r}: MooER transcribes Chinese and English "
                            f"speech ('zh', 'en').", code="unsupported_language", param="language")
    return name


def _check_temperature(temperature: float | None) -> None:
    if temperature is not None and not 0.0 <= temperature <= 1.0:
        raise ApiError(400, "temperature must be between 0 and 1 (decoding is deterministic; it is ignored).",
                       code="invalid_value", param="temperature")


def _options(preset: str, hotwords: str | None = None, prompt: str | None = None,
             hotword_weight: float | None = None) -> DecodingOptions:
    """The decoding options of a request: the preset plus its hotwords (``prompt``'s phrases are hotwords
    too); 400 ``invalid_hotwords`` naming the field for a list past the limits or a bad weight."""
    try:
        listed = parse_hotwords(hotwords, "hotwords")
    except HotwordError as e:
        raise ApiError(400, str(e), code="invalid_hotwords", param="hotwords") from None
    try:
        listed += parse_hotwords(prompt, "prompt")
    except HotwordError as e:
        raise ApiError(400, f"{e} (the prompt is read as hotwords: phrases separated by commas or newlines)",
                       code="invalid_hotwords", param="prompt") from None
    try:
        listed = normalize_hotwords(listed, "hotwords and prompt")
    except HotwordError as e:
        raise ApiError(400, str(e), code="invalid_hotwords", param="hotwords") from None
    try:
        weight = None if hotword_weight is None else check_weight(hotword_weight, "hotword_weight")
    except HotwordError as e:
        raise ApiError(400, str(e), code="invalid_hotwords", param="hotword_weight") from None
    return PRESETS[preset].replace(hotwords=listed, hotword_weight=weight)


def _check_format(response_format: str | None) -> str:
    fmt = (response_format or "json").strip().lower()
    if fmt not in RESPONSE_FORMATS:
        raise ApiError(400, f"Unsupported response_format {response_format!r}; use one of "
                            f"{', '.join(RESPONSE_FORMATS)}.", code="invalid_value", param="response_format")
    return fmt


def _openai_segments(result: Result) -> list[dict[str, Any]]:
    """``verbose_json`` segments: the result's timed segments (whole file when it has none)."""
    out = []
    for i, seg in enumerate(segments_from_result(result)):
        text = str(seg["text"])
        ratio = compression_ratio(text)
        out.append({"id": i, "seek": 0, "start": round(seg["start"], 3), "end": round(seg["end"], 3),
                    "text": text, "tokens": list(result.token_ids) if not result.segments else [],
                    "temperature": 0.0, "compression_ratio": round(ratio, 4)})
    return out


class _Service:
    """The request-side pipeline shared by every endpoint: read, featurise, queue, wait, format."""

    def __init__(self, model: Any, settings: ServeSettings, batcher: MicroBatcher | ContinuousBatcher,
                 metrics: ServerMetrics) -> None:
        self.model = model
        self.settings = settings
        self.batcher = batcher
        self.metrics = metrics
        self.long_form = LongFormOptions()  # uploads over 30 s: VAD segments, each a job of the batcher

    # ----------------------------------------------------------------------------------------- input
    def check_task(self, task: str) -> str:
        if task not in self.model.tasks:
            raise ApiError(400, f"This model does not do task {task!r}; it knows {', '.join(self.model.tasks)}.",
                           code="unsupported_task", param="task")
        return task

    def check_options(self, options: DecodingOptions, preset: str) -> DecodingOptions:
        """400 when this server's decoding engine cannot decode with ``options`` (e.g. beam search on vllm)."""
        try:
            self.model.pipeline.engine.check(options)
        except ConfigError as e:
            raise ApiError(400, f"Preset {preset!r} is not available on this server (engine "
                                f"{self.model.pipeline.engine.name}): {e}.", code="unsupported_preset",
                           param="preset") from None
        return options

    async def read(self, upload: UploadFile | None) -> tuple[str, bytes]:
        if upload is None or not hasattr(upload, "read"):
            raise ApiError(400, "No audio: send the recording as the multipart file field 'file'.",
                           code="missing_file", param="file")
        name = Path(upload.filename or "upload").name or "upload"
        data = await upload.read(self.settings.max_upload_bytes + 1)
        if len(data) > self.settings.max_upload_bytes:
            raise ApiError(413, f"Upload too large: the limit is {self.settings.max_upload_mb:g} MB.",
                           code="upload_too_large", param="file")
        if not data:
            raise ApiError(400, f"{name}: the file is empty.", code="empty_file", param="file")
        return name, data

    def _featurize(self, name: str, data: bytes) -> _Upload:
        limit = self.settings.max_audio_seconds
        too_long = "{name}: the audio is {seconds:.1f} s long; this server accepts at most {limit:g} s."
        try:
            # the header only, for most formats: long audio is rejected before it is decoded
            info = audio_info(data, name=name)
            if info.duration > limit + 1e-3:
                raise ApiError(400, too_long.format(name=name, seconds=info.duration, limit=limit),
                               code="audio_too_long", param="file")
            if self.long_form.applies(info.duration):
                return _Upload(name, None, info.duration, data)
            wave = load_audio(data, name=name)
            seconds = len(wave) / SAMPLE_RATE
            if seconds <= limit + 1e-3 and self.long_form.no_speech(wave):
                return _Upload(name, None, seconds, no_speech=True)
            features = self.model.featurize_waveform(wave, name)
        except AudioError as e:
            raise ApiError(400, f"{name}: {_clean_reason(e.reason)}", code="invalid_audio", param="file") from None
        except ApiError:
            raise
        except Exception as e:  # noqa: BLE001 - a decoder choking on hostile input is still bad input
            log.warning("could not decode upload %s: %r", name, e)
            raise ApiError(400, f"{name}: not a readable audio file.", code="invalid_audio", param="file") from None
        if seconds > limit + 1e-3:
            raise ApiError(400, too_long.format(name=name, seconds=seconds, limit=limit),
                           code="audio_too_long", param="file")
        return _Upload(name, features, seconds)

    async def featurize(self, upload: UploadFile | None) -> _Upload:
        name, data = await self.read(upload)
        return await run_in_threadpool(self._featurize, name, data)

    # ---------------------------------------------------------------------------------------- decode
    def submit(self, item: _Upload, task: str, options: DecodingOptions, streamer: Any = None):
        try:
            return self.batcher.submit(item.features, task, options, streamer=streamer)
        except ServerBusy as e:
            self.metrics.rejected.labels("busy").inc()
            raise ApiError.busy(e) from None

    def result(self, item: _Upload, task: str, generation: Generation) -> Result:
        return self.model.pipeline.result(Path(item.name).stem, item.name, task, generation, item.duration)

    def silent(self, item: _Upload, task: str) -> Result:
        return Result(key=Path(item.name).stem, audio=item.name, task=task, text="", duration=round(item.duration, 3),
                      notes=[NO_SPEECH], **({"asr": "", "ast": ""} if task == "asr_ast" else {}))

    def _decode_segments(self, features, task: str, options, budget: int) -> list[list[int]]:
        """Long uploads (in a worker thread): queue each segment on the batcher and wait for all."""
        futures = []
        try:
            for f in features:
                futures.append(self.batcher.submit(f, task, options.replace(max_new_tokens=budget)))
        except ServerBusy as e:
            for future in futures:  # the request fails as a whole: free the queue of its other segments
                future.cancel()
            self.metrics.rejected.labels("busy").inc()
            raise ApiError.busy(e) from None
        return [f.result(timeout=self.settings.timeout_s).ids for f in futures]

    def _run_long(self, item: _Upload, task: str, options: DecodingOptions) -> Result:
        return transcribe_long(self.model.pipeline, item.data, key=Path(item.name).stem, name=item.name,
                               duration=item.duration, task=task, options=options,
                               batch_size=self.settings.max_batch_size, long_form=self.long_form,
                               decode=self._decode_segments)

    async def run(self, upload: UploadFile | None, task: str, options: DecodingOptions) -> Result:
        """Featurise, decode in a batch, and build the result, all within the request timeout."""
        async def work() -> Result:
            item = await self.featurize(upload)
            if item.no_speech:
                return self.silent(item, task)
            if item.features is None:
                return await run_in_threadpool(self._run_long, item, task, options)
            generation = await asyncio.wrap_future(self.submit(item, task, options))  # cancelled with this task
            return self.result(item, task, generation)

        started = time.monotonic()
        result = await self.within_timeout(work())
        self.metrics.latency.labels(task).observe(time.monotonic() - started)
        return result

    async def within_timeout(self, coro: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(coro, timeout=self.settings.timeout_s)
        except asyncio.TimeoutError:
            self.metrics.rejected.labels("timeout").inc()
            raise ApiError(504, f"The request took longer than {self.settings.timeout_s:g} s.",
                           code="timeout") from None

    def stream(self, item: _Upload, task: str, options: DecodingOptions,
               events: Callable[[Result | None, str | None, dict | None], dict]) -> StreamingResponse:
        """Token streaming (``options``: greedy) as server-sent events; ``events`` shapes each payload.

        ``events(None, delta, None)`` is a text piece, ``events(result, None, None)`` the final event and
        ``events(None, None, error)`` a failure after the response started.
        """
        if item.no_speech:
            async def nothing() -> AsyncIterator[bytes]:
                yield _sse(events(self.silent(item, task), None, None))

            return StreamingResponse(nothing(), media_type="text/event-stream")
        if item.features is None:
            raise ApiError(400, f"{item.name}: streaming is for recordings up to "
                                f"{self.long_form.vad.max_segment_s:g} s; send longer ones without stream.",
                           code="audio_too_long_for_stream", param="stream")
        streamer = TokenStreamer(self.model.tokenizer, timeout=self.settings.timeout_s)
        future = self.submit(item, task, options, streamer)

        async def generate() -> AsyncIterator[bytes]:
            try:
                async for delta in iterate_in_threadpool(streamer):
                    if delta:
                        yield _sse(events(None, delta, None))
                generation = await asyncio.wait_for(asyncio.wrap_future(future), timeout=self.settings.timeout_s)
                yield _sse(events(self.result(item, task, generation), None, None))
            except queue.Empty:
                yield _sse(events(None, None, ApiError(504, "No token within the request timeout.",
                                                       code="timeout").body()["error"]))
            except asyncio.TimeoutError:
                yield _sse(events(None, None, ApiError(504, "Generation did not finish in time.",
                                                       code="timeout").body()["error"]))
            except Exception as e:  # noqa: BLE001 - the status line is gone: report in-band
                if future.cancelled() or streamer.cancelled.is_set():
                    return
                log.exception("streamed decoding failed")
                yield _sse(events(None, None, ApiError(500, f"Decoding failed: {type(e).__name__}",
                                                       code="decoding_failed").body()["error"]))
            finally:
                future.cancel()
                streamer.close()

        return StreamingResponse(generate(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# ------------------------------------------------------------------------------------------------- app
def create_app(model: Any, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI application serving ``model`` (a :class:`mooer.api.MooER`).

    With the ``hf`` engine one worker thread owns the model (:class:`~mooer.serving.batcher.MicroBatcher`);
    with ``vllm``, requests are encoded in batches and decoded by vLLM's async engine with continuous batching
    (:class:`~mooer.serving.continuous.ContinuousBatcher`). Either is started with the app and stopped at
    shutdown; ``app.state`` holds ``model``, ``settings`` and ``batcher``. The settings' default preset, when
    not given, is the engine's (``official`` on hf, ``greedy`` on vllm); one the engine cannot decode is a
    ConfigError.
    """
    settings = engine_settings(settings or ServeSettings(), model.pipeline.engine)
    limit_arenas()
    if model.pipeline.engine.name == "vllm":
        batcher: MicroBatcher | ContinuousBatcher = ContinuousBatcher(
            model.pipeline, max_batch_size=settings.max_batch_size, max_queue=settings.max_queue,
            max_queued_audio_s=settings.max_queued_audio_s)
    else:
        batcher = MicroBatcher(model.pipeline, window_ms=settings.batch_window_ms,
                               max_batch_size=settings.max_batch_size, max_queue=settings.max_queue,
                               max_queued_audio_s=settings.max_queued_audio_s)
    metrics = ServerMetrics(batcher, settings.max_batch_size)
    trimmer = Trimmer(idle=lambda: batcher.stats()["queued"] == 0)

    def after_batch(size: int, seconds: float) -> None:
        metrics.batch_size.observe(size)
        trimmer()

    batcher.on_batch = after_batch
    service = _Service(model, settings, batcher, metrics)
    _check_model_len(model, settings, service.long_form)
    default_task = "asr_ast" if "asr_ast" in model.tasks else model.default_task

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(batcher.start)  # vLLM's engine takes a while to start: off the event loop
        try:
            yield
        finally:
            await run_in_threadpool(batcher.stop)

    app = FastAPI(title="mooer serve", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="MooER speech recognition and Chinese→English speech translation: an "
                              "OpenAI-compatible audio API.")
    app.state.model = model
    app.state.settings = settings
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.started = time.time()
    app.add_middleware(_Guard, settings=settings)
    add_realtime(app, service)

    # -------------------------------------------------------------------------------- error handlers
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", []) if p not in ("body", "query")]
        param = ".".join(loc) or None
        if param == "file":  # a form part without a file name is a text field to Starlette, not an upload
            return ApiError(400, "file: expected an uploaded file (a multipart/form-data part with a file name), "
                                 "got a text field; an upload whose file name is empty arrives as one.",
                            code="missing_file", param="file").response()
        message = f"{param}: {first.get('msg', 'invalid value')}" if param else str(first.get("msg", exc))
        return ApiError(400, message, code="invalid_value", param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return ApiError(exc.status_code, str(exc.detail), code=None).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return ApiError(500, f"Internal error: {type(exc).__name__}", code="internal_error").response()

    # ---------------------------------------------------------------------------------------- routes
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/health")
    async def health() -> dict:
        """Liveness plus what clients may want to know: tasks, limits and batching counters."""
        return {"status": "ok" if batcher.running else "starting", "model": settings.model_name,
                "tasks": model.tasks, "default_task": default_task, "device": str(getattr(model, "device", "")),
                "engine": model.pipeline.engine.name,
                "uptime_s": round(time.time() - app.state.started, 1), "limits": settings.public(),
                "batcher": batcher.stats()}

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        """Queue, batches, latency, rejections and memory in Prometheus text format."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def _model_card() -> dict:
        return {"id": settings.model_name, "object": "model", "created": int(app.state.started),
                "owned_by": "mooer", "tasks": model.tasks}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [_model_card()]}

    @app.get("/v1/models/{model_id}")
    async def model_info(model_id: str) -> dict:
        if model_id != settings.model_name:
            raise ApiError(404, f"The model {model_id!r} does not exist; this server has "
                                f"{settings.model_name!r}.", code="model_not_found", param="model")
        return _model_card()

    async def openai_audio(task: str, file: UploadFile | None, response_format: str | None,
                           language: str | None, temperature: float | None, stream: bool, prompt: str | None,
                           hotwords: str | None, hotword_weight: float | None) -> Response:
        fmt = _check_format(response_format)
        language_name = _check_language(language) or ("english" if task == "ast" else "chinese")
        _check_temperature(temperature)
        service.check_task(task)
        preset = "greedy" if stream else settings.default_preset
        options = service.check_options(_options(preset, hotwords, prompt, hotword_weight), preset)
        if stream:
            item = await service.within_timeout(service.featurize(file))

            def event(result: Result | None, delta: str | None, error: dict | None) -> dict:
                if error is not None:
                    return {"type": "error", "error": error}
                if result is None:
                    return {"type": "transcript.text.delta", "delta": delta}
                return {"type": "transcript.text.done", "text": result.text}

            return service.stream(item, task, options, event)
        result = await service.run(file, task, options)
        if fmt == "json":
            return JSONResponse({"text": result.text})
        if fmt == "text":
            return PlainTextResponse(result.text)
        if fmt == "srt":
            return PlainTextResponse(to_srt(segments_from_result(result)))
        if fmt == "vtt":
            return PlainTextResponse(to_vtt(segments_from_result(result)), media_type="text/vtt")
        return JSONResponse({"task": "translate" if task == "ast" else "transcribe", "language": language_name,
                             "duration": result.duration, "text": result.text,
                             "segments": _openai_segments(result)})

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(
        file: UploadFile | None = File(None, description="the audio file (any format FFmpeg reads)"),
        model_: str | None = Form(None, alias="model", description="accepted, whatever the value"),
        language: str | None = Form(None, description="zh or en; validated, not used"),
        prompt: str | None = Form(None, description=PROMPT_HELP),
        response_format: str | None = Form("json"),
        temperature: float | None = Form(None, description="0-1; ignored: decoding is deterministic"),
        stream: bool = Form(False, description="server-sent events (greedy decoding)"),
        hotwords: str | None = Form(None, description=HOTWORDS_HELP),
        hotword_weight: float | None = Form(None, description=WEIGHT_HELP),
    ) -> Response:
        """Speech → text in the spoken language (MooER task ``asr``)."""
        return await openai_audio("asr", file, response_format, language, temperature, stream, prompt, hotwords,
                                  hotword_weight)

    @app.post("/v1/audio/translations")
    async def translations(
        file: UploadFile | None = File(None, description="the audio file (any format FFmpeg reads)"),
        model_: str | None = Form(None, alias="model", description="accepted, whatever the value"),
        prompt: str | None = Form(None, description=PROMPT_HELP),
        response_format: str | None = Form("json"),
        temperature: float | None = Form(None, description="0-1; ignored: decoding is deterministic"),
        hotwords: str | None = Form(None, description=HOTWORDS_HELP),
        hotword_weight: float | None = Form(None, description=WEIGHT_HELP),
    ) -> Response:
        """Chinese speech → English text (MooER task ``ast``)."""
        return await openai_audio("ast", file, response_format, None, temperature, False, prompt, hotwords,
                                  hotword_weight)

    @app.post("/v1/mooer/transcribe")
    async def mooer_transcribe(
        file: UploadFile | None = File(None, description="the audio file"),
        task: str | None = Form(None, description=f"asr, ast or asr_ast (default: {default_task})"),
        preset: str | None = Form(None, description="official (beam 4) or greedy; streaming is greedy"),
        stream: bool = Form(False, description="token streaming as server-sent events"),
        hotwords: str | None = Form(None, description=HOTWORDS_HELP),
        hotword_weight: float | None = Form(None, description=WEIGHT_HELP),
    ) -> Response:
        """Transcript and translation together (multitask model), optionally streamed token by token."""
        task = service.check_task(task or default_task)
        if preset is not None and preset not in PRESETS:
            raise ApiError(400, f"Unknown preset {preset!r}; use one of {', '.join(sorted(PRESETS))}.",
                           code="invalid_value", param="preset")
        if stream and preset not in (None, "greedy"):
            raise ApiError(400, "Streaming decodes greedily (as the official demo does): use preset=greedy "
                                "or leave it out.", code="invalid_value", param="preset")
        preset = preset or ("greedy" if stream else settings.default_preset)
        options = service.check_options(_options(preset, hotwords, None, hotword_weight), preset)

        def payload(result: Result) -> dict:
            asr = result.asr if task == "asr_ast" else (result.text if task == "asr" else None)
            ast = result.ast if task == "asr_ast" else (result.text if task == "ast" else None)
            return {"text": result.text, "asr": asr, "ast": ast, "task": task, "preset": preset,
                    "hotwords": len(options.hotwords), "duration": result.duration}

        if stream:
            item = await service.within_timeout(service.featurize(file))

            def event(result: Result | None, delta: str | None, error: dict | None) -> dict:
                if error is not None:
                    return {"error": error}
                if result is None:
                    return {"delta": delta}
                return {"done": True, **payload(result)}

            return service.stream(item, task, options, event)
        return JSONResponse(payload(await service.run(file, task, options)))

    return app


def engine_settings(settings: ServeSettings, engine: Any) -> ServeSettings:
    """``settings`` with the engine's default preset filled in (``official`` on hf, ``greedy`` on vllm, which
    has no beam search); a ConfigError naming the hf engine when the engine cannot decode the chosen one."""
    if settings.default_preset is None:
        return settings.replace(default_preset="greedy" if engine.name == "vllm" else "official")
    try:
        engine.check(PRESETS[settings.default_preset])
    except ConfigError as e:
        raise ConfigError(f"the server's preset {settings.default_preset!r} cannot run on the {engine.name} "
                          f"engine: {e}") from None
    return settings


def _check_model_len(model: Any, settings: ServeSettings, long_form: LongFormOptions) -> None:
    """A ConfigError at start when the engine's longest sequence (vllm's ``max_model_len``) cannot hold the
    longest request: the longest piece decoded at once (an upload, a VAD segment or a live segment), the
    longest task prompt and the presets' token budget."""
    limit = getattr(model.pipeline.engine, "max_model_len", None)
    if limit is None:
        return
    seconds = min(settings.max_audio_seconds, long_form.vad.max_segment_s)
    pipeline = model.pipeline
    prompt = max(len(pipeline.prompts.prompt_ids(task)) for task in model.tasks)
    positions = audio_tokens(math.ceil(seconds / FRAME_SECONDS) + 1, pipeline.downsample) + prompt
    budget = max(PRESETS[settings.default_preset].max_new_tokens, PRESETS["greedy"].max_new_tokens)
    if positions + budget > limit:
        raise ConfigError(f"the engine's max_model_len {limit} cannot hold the longest request: {seconds:g} s of "
                          f"audio and a prompt ({positions} positions) plus {budget} new tokens; raise "
                          f"--max-model-len to at least {positions + budget}")


def _version() -> str:
    from mooer import __version__

    return __version__
