"""Settings of ``mooer serve``: limits, batching and authentication, in one frozen dataclass."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from mooer.errors import ConfigError

#: The environment variable read for the API key when none is given on the command line.
API_KEY_ENV = "MOOER_API_KEY"


@dataclass(frozen=True)
class RealtimeSettings:
    """Limits of live transcription sessions (``/v1/realtime``, :mod:`mooer.serving.realtime`).

    Attributes:
        max_session_s: a session is closed (``session_expired``) this many seconds after it opened.
        idle_timeout_s: a session that sends nothing for this long, with no result pending, is closed
            (``idle_timeout``).
        max_buffer_s: most audio one session may hold: the open segment plus the segments waiting for
            their final decoding. Audio beyond it is refused (``buffer_full``).
        max_speed: audio seconds a client may send per wall-clock second on average (a token bucket
            that refills at this rate and holds at most ``burst_s`` seconds, full at the start: a client
            may send what it buffered while connecting). Faster audio is refused (``audio_too_fast``):
            live input arrives at 1x; raise it to let ``mooer stream --speed N`` replay files faster.
        burst_s: see ``max_speed`` (at least 1 s).
        interim_interval_ms: default interval of interim results (a greedy decoding of the growing
            segment at most once per interval); 0 = none. Sessions may change it.
    """

    max_session_s: float = 3600.0
    idle_timeout_s: float = 30.0
    max_buffer_s: float = 60.0
    max_speed: float = 1.5
    burst_s: float = 10.0
    interim_interval_ms: int = 1000

    def __post_init__(self) -> None:
        for name in ("max_session_s", "idle_timeout_s", "max_buffer_s", "max_speed"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"realtime {name} must be > 0")
        if self.burst_s < 1.0:
            raise ConfigError("realtime burst_s must be >= 1 s (clients send audio in chunks)")
        if self.interim_interval_ms < 0:
            raise ConfigError("realtime interim_interval_ms must be >= 0")


@dataclass(frozen=True)
class ServeSettings:
    """How the server behaves. Every limit is enforced per request.

    Attributes:
        model_name: the id listed by ``GET /v1/models``. The ``model`` field of a request is accepted
            whatever its value (clients often hard-code ``whisper-1``): one process serves one model.
        api_key: when set, every ``/v1/...`` request needs ``Authorization: Bearer <api_key>``
            (401 otherwise). ``/``, ``/static`` and ``/health`` stay open.
        max_upload_mb: largest accepted upload (MiB). Bigger requests get 413, as soon as the
            ``Content-Length`` header or the bytes received so far exceed it.
        max_audio_seconds: longest accepted audio; longer input gets 400 ``audio_too_long``. MooER was
            trained on utterances under 20 s: uploads over 30 s are cut at pauses by the VAD and each
            segment is decoded as its own batcher job (``verbose_json``/``srt``/``vtt`` then carry one
            segment per piece); streaming takes at most 30 s.
        batch_window_ms: how long the batcher waits for more requests after the first one arrives (hf engine;
            with vllm, requests join the running decoding batch as they come).
        max_batch_size: most requests decoded in one model call (with the vllm engine: most requests encoded
            together; how many vLLM decodes at once is the engine's ``max_num_seqs``).
        max_queue: most requests waiting for the model; more get 503 ``server_busy`` with ``Retry-After``.
        max_queued_audio_s: most seconds of audio waiting for the model; a request that would exceed it gets
            503 ``server_busy`` with ``Retry-After`` at once. This bounds the wait of accepted requests:
            wait ≈ queued audio × decoding speed (model seconds per audio second, ``mooer_model_seconds_total``
            / ``mooer_decoded_audio_seconds_total`` at ``/metrics``). Size it as target wait / speed, e.g.
            10 s target at 0.05 s per audio second → 200 s. None = bounded by ``max_queue`` only.
        timeout_s: a request not answered within this many seconds gets 504 (a streamed one ends
            with an error event when no token arrives for this long).
        default_preset: decoding preset of the OpenAI endpoints when they do not stream (and of the final
            results of live transcription). None: the engine's own, ``official`` (beam search) on hf and
            ``greedy`` on vllm, which has no beam search (:func:`mooer.serving.app.create_app` fills it in).
        realtime: limits of live transcription sessions (:class:`RealtimeSettings`).
    """

    model_name: str = "mooer"
    api_key: str | None = None
    max_upload_mb: float = 25.0
    max_audio_seconds: float = 600.0
    batch_window_ms: float = 20.0
    max_batch_size: int = 8
    max_queue: int = 256
    max_queued_audio_s: float | None = 300.0
    timeout_s: float = 120.0
    default_preset: str | None = None
    realtime: RealtimeSettings = field(default_factory=RealtimeSettings)

    def __post_init__(self) -> None:
        if self.max_upload_mb <= 0:
            raise ConfigError("max_upload_mb must be > 0")
        if self.max_audio_seconds <= 0:
            raise ConfigError("max_audio_seconds must be > 0")
        if self.batch_window_ms < 0:
            raise ConfigError("batch_window_ms must be >= 0")
        if self.max_batch_size < 1:
            raise ConfigError("max_batch_size must be >= 1")
        if self.max_queue < 1:
            raise ConfigError("max_queue must be >= 1")
        if self.max_queued_audio_s is not None and self.max_queued_audio_s <= 0:
            raise ConfigError("max_queued_audio_s must be > 0 (or None for no bound)")
        if self.timeout_s <= 0:
            raise ConfigError("timeout_s must be > 0")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("api_key must not be blank (leave it unset to disable authentication)")
        from mooer.decoding import PRESETS

        if self.default_preset is not None and self.default_preset not in PRESETS:
            raise ConfigError(f"default_preset must be one of {sorted(PRESETS)}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def replace(self, **changes: Any) -> "ServeSettings":
        """A copy with some fields changed."""
        return replace(self, **changes)

    def public(self) -> dict[str, Any]:
        """The settings a client may see (``/health``): everything except the API key."""
        out = asdict(self)
        out["api_key"] = self.api_key is not None
        return out

    @classmethod
    def with_env_key(cls, **kwargs: Any) -> "ServeSettings":
        """Settings whose ``api_key`` falls back to ``$MOOER_API_KEY`` when not given."""
        if kwargs.get("api_key") is None and os.environ.get(API_KEY_ENV):
            kwargs["api_key"] = os.environ[API_KEY_ENV]
        return cls(**kwargs)
