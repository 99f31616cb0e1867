"""Voice-activity segmentation for long recordings.

MooER was trained on utterances of at most ~20 s and degrades beyond ~30 s, so long inputs are cut
into speech segments of at most ``VadOptions.max_segment_s`` before decoding.

How it works
------------
1. **Frame scoring, streamed.** The input is read as a stream of 16 kHz mono chunks
   (:func:`mooer.audio.iter_audio_chunks` for files, plain slicing for arrays) and scored by the
   Silero VAD model in 512-sample (32 ms) windows. Only two small arrays per 32 ms frame (speech
   probability and energy) are kept, so a two-hour file needs ~2 MB of scores, never the whole
   waveform nor a whole-file feature matrix. The model's convolutional front end is stateless per
   window, so each chunk's windows go through it as one batch and only the LSTM runs step by step;
   this is checked once per process against the model's own window-by-window call (identical to
   ~1e-7) and the slow path is used if the check ever fails.
2. **Segments from scores** (:func:`segments_from_scores`, pure numpy, no model): hysteresis on the
   probability (enter at ``threshold``, leave below ``neg_threshold``), merge pauses shorter than
   ``min_silence_s``, drop bursts shorter than ``min_speech_s``, pad by ``speech_pad_s`` (never into
   a neighbour), then split every segment longer than ``max_segment_s`` at its *quietest* points:
   cuts are scored by smoothed speech probability plus 0.5 x energy (scaled to the segment's own
   range: in continuous speech the probability saturates and energy decides), and the set of cuts
   minimising ``sum(score) + 0.25 * pieces`` with every piece <= ``max_segment_s`` is found by
   dynamic programming (a small, exact search over 32 ms boundaries). Cuts therefore fall in
   pauses or the softest stretches, not blindly in the middle, and an extra piece is only made when
   it buys a clearly quieter cut.
3. **Segment audio, streamed** (:func:`iter_segment_audio`): soundfile-readable files are read by
   seeking to each segment; other containers are decoded once, front to back, keeping at most one
   segment plus one chunk in memory.

Threads: importing ``silero_vad`` sets torch's global thread count to 1; this module restores the
caller's setting after the import. Scoring itself runs with ``VadOptions.num_threads`` (default 1,
much faster for this tiny network on a busy machine) and restores torch's setting afterwards.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from mooer.errors import ConfigError

__all__ = [
    "SAMPLE_RATE",
    "FRAME_SAMPLES",
    "FRAME_SECONDS",
    "VadOptions",
    "Segment",
    "FrameScores",
    "score_frames",
    "StreamingScorer",
    "segments_from_scores",
    "quietest_cut",
    "segment_speech",
    "iter_segment_audio",
]

SAMPLE_RATE = 16000
"""The only rate the VAD (and MooER) works at."""
FRAME_SAMPLES = 512
"""Silero VAD window at 16 kHz."""
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE  # 0.032 s
_CONTEXT_SAMPLES = 64  # Silero v5+ prepends the last 64 samples of the previous window


# --------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class VadOptions:
    """Parameters of :func:`segment_speech`. All durations are in seconds.

    Attributes:
        max_segment_s: no returned segment is longer than this (MooER: trained on <=20 s, degrades >30 s).
        min_speech_s: speech bursts shorter than this (after merging pauses) are dropped.
        min_silence_s: pauses shorter than this do not end a segment (they are merged).
        speech_pad_s: padding added on both sides of each segment (clamped to the audio and
            never overlapping the neighbouring segment).
        threshold: a frame with speech probability >= this starts speech.
        neg_threshold: speech ends at a frame below this; ``None`` means ``threshold - 0.15``
            (Silero's default hysteresis).
        min_split_s: shortest piece a split of an over-long segment may create (capped at
            ``max_segment_s / 4``).
        split_smoothing_s: width of the moving average applied to probability/energy when
            looking for the quietest cut, so cuts land inside pauses rather than on one dip.
        chunk_seconds: how much audio is decoded and scored at a time (memory/speed trade-off).
        num_threads: torch intra-op threads while scoring. The VAD network is tiny, and extra
            threads make it several times *slower* on a busy machine (120 s of audio: 0.2 s with
            1 thread, 0.7-6 s with 2 on a loaded 2-core box). torch's setting is process-wide, so
            it is changed only for the duration of the call and restored when the last concurrent
            call ends. ``None`` leaves torch's setting alone.
    """

    max_segment_s: float = 30.0
    min_speech_s: float = 0.25
    min_silence_s: float = 0.3
    speech_pad_s: float = 0.1
    threshold: float = 0.5
    neg_threshold: float | None = None
    min_split_s: float = 1.0
    split_smoothing_s: float = 0.16
    chunk_seconds: float = 10.0
    num_threads: int | None = 1

    def __post_init__(self) -> None:
        if not self.max_segment_s >= 1.0:
            raise ConfigError(f"VadOptions.max_segment_s must be >= 1.0 s, got {self.max_segment_s}")
        for name in ("min_speech_s", "min_silence_s", "speech_pad_s", "min_split_s", "split_smoothing_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"VadOptions.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"VadOptions.threshold must be in (0, 1), got {self.threshold}")
        if self.neg_threshold is not None and not 0.0 <= self.neg_threshold <= self.threshold:
            raise ConfigError(
                f"VadOptions.neg_threshold must be in [0, threshold={self.threshold}], got {self.neg_threshold}"
            )
        if not self.chunk_seconds > 0:
            raise ConfigError(f"VadOptions.chunk_seconds must be > 0, got {self.chunk_seconds}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"VadOptions.num_threads must be >= 1 or None, got {self.num_threads}")

    @property
    def effective_neg_threshold(self) -> float:
        """The exit threshold actually used."""
        if self.neg_threshold is not None:
            return self.neg_threshold
        return max(self.threshold - 0.15, 0.01)


# --------------------------------------------------------------------------------------------- segments


@dataclass(frozen=True)
class Segment:
    """A span of the input in seconds, ``start < end``."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    def start_sample(self, sample_rate: int = SAMPLE_RATE) -> int:
        """Index of the first sample of the segment."""
        return int(round(self.start * sample_rate))

    def end_sample(self, sample_rate: int = SAMPLE_RATE) -> int:
        """Index one past the last sample of the segment (slice end)."""
        return int(round(self.end * sample_rate))

    def slice(self, sample_rate: int = SAMPLE_RATE) -> slice:
        """``waveform[segment.slice()]`` is the segment's audio."""
        return slice(self.start_sample(sample_rate), self.end_sample(sample_rate))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class FrameScores:
    """Per-32 ms-frame VAD output for a whole input (small: 8 bytes per frame)."""

    probs: np.ndarray  # (F,) float32 speech probability of frame i = samples [512 i, 512 (i+1))
    energy_db: np.ndarray  # (F,) float32 frame energy, 10 log10(mean(x^2)), floored at -100 dB
    num_samples: int  # length of the input in samples at 16 kHz

    @property
    def duration(self) -> float:
        return self.num_samples / SAMPLE_RATE


# --------------------------------------------------------------------------------------------- model


class _SileroScorer:
    """Streaming Silero VAD scorer: feed (N, 512) windows in order, get (N,) probabilities."""

    def __init__(self, model: Any, batched: bool) -> None:
        import torch

        self._torch = torch
        self._model = model
        self.batched = batched
        if batched:
            sub = model._model
            rnn = sub.decoder.rnn
            lstm = torch.nn.LSTM(rnn.weight_ih.shape[1], rnn.weight_hh.shape[1])
            with torch.no_grad():
                lstm.weight_ih_l0.copy_(rnn.weight_ih)
                lstm.weight_hh_l0.copy_(rnn.weight_hh)
                lstm.bias_ih_l0.copy_(rnn.bias_ih)
                lstm.bias_hh_l0.copy_(rnn.bias_hh)
            lstm.eval()
            self._sub = sub
            self._lstm = lstm
        self.reset()

    def reset(self) -> None:
        torch = self._torch
        self._context = torch.zeros(1, _CONTEXT_SAMPLES)
        self._hc: tuple[Any, Any] | None = None
        if not self.batched:
            self._model.reset_states()

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        torch = self._torch
        frames = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        if frames.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        with torch.inference_mode():
            if not self.batched:
                out = [self._model(frames[i : i + 1], SAMPLE_RATE)[0, 0] for i in range(frames.shape[0])]
                return torch.stack(out).numpy().astype(np.float32)
            ctx = torch.cat([self._context, frames[:-1, -_CONTEXT_SAMPLES:]], dim=0)
            self._context = frames[-1:, -_CONTEXT_SAMPLES:].clone()
            x = torch.cat([ctx, frames], dim=1)  # (N, 576)
            enc = self._sub.encoder(self._sub.stft(x))  # (N, 128, 1)
            h, self._hc = self._lstm(enc.squeeze(-1).unsqueeze(1), self._hc)  # (N, 1, 128)
            out = self._sub.decoder.decoder(h.squeeze(1).unsqueeze(-1))  # (N, 1, 1)
            return out.squeeze(1).mean(dim=1).numpy().astype(np.float32)


_MODEL_LOCK = threading.Lock()
_MODEL: Any = None
_BATCHED_OK: bool | None = None


def _load_model() -> tuple[Any, bool]:
    """Load the Silero JIT model once per process (weights ship inside the wheel; no download)."""
    global _MODEL, _BATCHED_OK
    with _MODEL_LOCK:
        if _MODEL is None:
            import torch

            threads = torch.get_num_threads()
            try:
                import silero_vad  # sets torch.set_num_threads(1) as an import side effect
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "Voice-activity segmentation needs the silero-vad package: pip install 'mooer[vad]'"
                ) from exc
            finally:
                torch.set_num_threads(threads)
            with warnings.catch_warnings():  # silero's own importlib/jit.load deprecation noise
                warnings.simplefilter("ignore", DeprecationWarning)
                model = silero_vad.load_silero_vad()
            model.eval()
            _BATCHED_OK = _check_batched(model)
            _MODEL = model
        return _MODEL, bool(_BATCHED_OK)


def _check_batched(model: Any) -> bool:
    """True when the batched front end reproduces the model's own window-by-window output."""
    try:
        rng = np.random.default_rng(0)
        t = np.arange(FRAME_SAMPLES * 40) / SAMPLE_RATE
        probe = (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
        probe += rng.normal(0, 0.01, probe.shape).astype(np.float32)
        windows = probe.reshape(-1, FRAME_SAMPLES)
        fast = _SileroScorer(model, batched=True)
        got = np.concatenate([fast(windows[:17]), fast(windows[17:])])
        ref = _SileroScorer(model, batched=False)(windows)
        # the LSTM state must agree too (probabilities alone can sit in the sigmoid's flat tail)
        assert fast._hc is not None
        state_diff = float((fast._hc[0].reshape(-1) - model._state[0].reshape(-1)).abs().max())
        model.reset_states()
        return bool(np.max(np.abs(got - ref)) < 1e-4 and state_diff < 1e-4)
    except Exception:  # noqa: BLE001 - any structural mismatch means "use the slow path"
        return False


_THREADS_LOCK = threading.Lock()
_THREADS_USERS = 0
_THREADS_SAVED = 0


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``torch.set_num_threads(n)``; the caller's setting returns when the last user exits."""
    global _THREADS_USERS, _THREADS_SAVED
    if n is None:
        yield
        return
    import torch

    with _THREADS_LOCK:
        if _THREADS_USERS == 0:
            _THREADS_SAVED = torch.get_num_threads()
        _THREADS_USERS += 1
        torch.set_num_threads(n)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS_USERS -= 1
            if _THREADS_USERS == 0:
                torch.set_num_threads(_THREADS_SAVED)


def _new_scorer() -> _SileroScorer:
    """A scorer with its own stream state. The batched path shares the process's model (its state lives
    in the scorer); the step-by-step fallback keeps state inside the model, so it gets a private copy."""
    model, batched = _load_model()
    if not batched:
        import silero_vad

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            model = silero_vad.load_silero_vad()
        model.eval()
    return _SileroScorer(model, batched)


# --------------------------------------------------------------------------------------------- streaming


def _as_waveform(source: Any) -> np.ndarray | None:
    """The input as a 1-D float32 16 kHz array if it is already decoded samples, else ``None``.

    Arrays and tensors go through :func:`mooer.audio.load_audio` (no copy for 1-D float32), so
    int16 PCM and ``(channels, samples)`` arrays are handled exactly as everywhere else.
    """
    if not isinstance(source, np.ndarray) and not (
        type(source).__module__.startswith("torch") and hasattr(source, "detach")
    ):
        return None
    from mooer.audio import load_audio

    return load_audio(source, sample_rate=SAMPLE_RATE)


def _iter_chunks(source: Any, chunk_seconds: float) -> Iterator[np.ndarray]:
    wav = _as_waveform(source)
    if wav is not None:
        step = max(int(chunk_seconds * SAMPLE_RATE), FRAME_SAMPLES)
        for i in range(0, len(wav), step):
            yield wav[i : i + step]
        return
    from mooer.audio import iter_audio_chunks

    for chunk in iter_audio_chunks(source, chunk_seconds, sample_rate=SAMPLE_RATE):
        yield np.asarray(chunk, dtype=np.float32).reshape(-1)


class StreamingScorer:
    """Silero VAD over audio that arrives in pieces (a file read chunk by chunk, a live stream).

    :meth:`push` takes 16 kHz float32 samples of any length and returns the speech probability and the
    energy (dB, floored at -100) of every 32 ms frame it completed; the remainder waits for the next
    push. :meth:`flush` scores the last partial frame, zero-padded. Frame ``i`` is always samples
    ``[512 i, 512 (i+1))`` of the stream, so the scores equal those of the whole input scored at once.
    One instance per stream; ``num_threads`` as in :class:`VadOptions`.
    """

    def __init__(self, num_threads: int | None = 1) -> None:
        self._scorer = _new_scorer()
        self.num_threads = num_threads
        self._leftover = np.zeros(0, dtype=np.float32)
        self.num_samples = 0
        """Samples pushed so far."""

    def _score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with _torch_threads(self.num_threads):
            probs = self._scorer(windows)
        power = np.mean(np.square(windows, dtype=np.float64), axis=1)
        return probs, np.maximum(10.0 * np.log10(power + 1e-10), -100.0).astype(np.float32)

    def push(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``(probs, energy_db)`` of the frames completed by ``samples`` (possibly none)."""
        chunk = np.asarray(samples, dtype=np.float32).reshape(-1)
        self.num_samples += chunk.size
        buf = np.concatenate([self._leftover, chunk]) if self._leftover.size else chunk
        n = buf.size // FRAME_SAMPLES
        self._leftover = buf[n * FRAME_SAMPLES :].copy()
        if n == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        return self._score(buf[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES))

    def flush(self) -> tuple[np.ndarray, np.ndarray]:
        """Scores of the last partial frame (zero-padded), if any samples are waiting."""
        if not self._leftover.size:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        last = np.zeros((1, FRAME_SAMPLES), dtype=np.float32)
        last[0, : self._leftover.size] = self._leftover
        self._leftover = np.zeros(0, dtype=np.float32)
        return self._score(last)


def score_frames(source: Any, chunk_seconds: float = 10.0, num_threads: int | None = 1) -> FrameScores:
    """Stream ``source`` through Silero VAD; return per-frame probabilities and energies.

    ``source`` is a 1-D float32 16 kHz waveform (numpy or torch) or anything
    :func:`mooer.audio.iter_audio_chunks` accepts (path, bytes, file object, ...). Memory is
    bounded by one chunk. A file object is consumed; pass a path or bytes to read it again with
    :func:`iter_segment_audio`. ``num_threads``: see :class:`VadOptions`.
    """
    scorer = StreamingScorer(num_threads)
    probs: list[np.ndarray] = []
    energies: list[np.ndarray] = []
    for chunk in _iter_chunks(source, chunk_seconds):
        for part, out in zip(scorer.push(chunk), (probs, energies)):
            out.append(part)
    for part, out in zip(scorer.flush(), (probs, energies)):
        out.append(part)
    if scorer.num_samples == 0:
        return FrameScores(np.zeros(0, np.float32), np.zeros(0, np.float32), 0)
    return FrameScores(np.concatenate(probs), np.concatenate(energies), scorer.num_samples)


# --------------------------------------------------------------------------------------------- segmentation


def _hysteresis(probs: np.ndarray, enter: float, leave: float) -> list[tuple[int, int]]:
    """Speech runs ``[start_frame, end_frame)``: start at p >= enter, end at the first p < leave."""
    runs: list[tuple[int, int]] = []
    above = np.flatnonzero(probs >= enter)
    below = np.flatnonzero(probs < leave)
    pos = 0
    while True:
        k = int(np.searchsorted(above, pos))
        if k >= above.size:
            break
        start = int(above[k])
        j = int(np.searchsorted(below, start + 1))
        end = int(below[j]) if j < below.size else int(probs.size)
        runs.append((start, end))
        pos = end
    return runs


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    if width <= 1 or x.size == 0:
        return x.astype(np.float64)
    c = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    half = width // 2
    idx = np.arange(x.size)
    lo = np.clip(idx - half, 0, x.size)
    hi = np.clip(idx - half + width, 0, x.size)
    return (c[hi] - c[lo]) / np.maximum(hi - lo, 1)


def _pieces_needed(length: float, max_len: float) -> int:
    return max(1, math.ceil(length / max_len - 1e-9))


_ROUNDING_SLACK = 0.002  # segment times are rounded to the millisecond

_PIECE_PENALTY = 0.25
"""Cost of one more piece when splitting, in cut-score units (probability 0..1 + energy 0..0.5):
a split accepts an extra piece only if that makes its cuts quieter by more than this."""


def _split_long(
    start: float, end: float, cut_score: np.ndarray, options: VadOptions
) -> list[tuple[float, float]]:
    """Split ``[start, end]`` into pieces of ``min_piece..max_segment_s`` at the quietest cuts.

    ``cut_score[k]`` scores a cut at time ``k * FRAME_SECONDS``. The cuts minimise
    ``sum(cut_score) + _PIECE_PENALTY * pieces`` (dynamic programming over frame boundaries), so
    they land in the quietest places and no more pieces are made than that needs.
    """
    max_len = options.max_segment_s - _ROUNDING_SLACK  # pieces stay <= max after rounding to ms
    min_piece = min(options.min_split_s, max_len / 4)
    eps = 1e-6
    ks = np.arange(math.ceil((start + min_piece) / FRAME_SECONDS), math.floor((end - min_piece) / FRAME_SECONDS) + 1)
    ks = ks[(ks >= 0) & (ks < cut_score.size)]
    times = np.concatenate([[start], ks * FRAME_SECONDS, [end]])
    node_cost = np.concatenate([[0.0], cut_score[ks], [0.0]]) + _PIECE_PENALTY
    total = np.full(times.size, np.inf)
    back = np.zeros(times.size, dtype=np.int64)
    total[0] = 0.0
    for j in range(1, times.size):
        lo = int(np.searchsorted(times, times[j] - max_len - eps, side="left"))
        hi = int(np.searchsorted(times, times[j] - min_piece + eps, side="right"))
        if hi <= lo:
            continue
        i = lo + int(np.argmin(total[lo:hi]))
        total[j] = total[i] + node_cost[j]
        back[j] = i
    if not np.isfinite(total[-1]):  # cannot happen with min_piece <= max/4; cut hard to be safe
        n = _pieces_needed(end - start, max_len)
        edges = [start + (end - start) * i / n for i in range(n + 1)]
        return list(zip(edges[:-1], edges[1:]))
    cuts = [times.size - 1]
    while cuts[-1] != 0:
        cuts.append(int(back[cuts[-1]]))
    edges = [float(times[i]) for i in reversed(cuts)]
    return list(zip(edges[:-1], edges[1:]))


def segments_from_scores(scores: FrameScores, options: VadOptions | None = None) -> list[Segment]:
    """Turn per-frame VAD scores into speech segments (pure function; see the module docstring)."""
    opts = options or VadOptions()
    probs = np.asarray(scores.probs, dtype=np.float32)
    duration = scores.duration
    fs = FRAME_SECONDS

    runs = _hysteresis(probs, opts.threshold, opts.effective_neg_threshold)
    merged: list[list[int]] = []
    for s, e in runs:
        if merged and (s - merged[-1][1]) * fs < opts.min_silence_s:
            merged[-1][1] = e
        else:
            merged.append([s, e])
    kept = [(s * fs, min(e * fs, duration)) for s, e in merged if (e - s) * fs >= opts.min_speech_s]
    if not kept:
        return []

    padded = [[max(0.0, s - opts.speech_pad_s), min(duration, e + opts.speech_pad_s)] for s, e in kept]
    for i in range(1, len(padded)):
        if padded[i - 1][1] > padded[i][0]:  # pads collide: meet in the middle of the pause
            mid = (kept[i - 1][1] + kept[i][0]) / 2
            padded[i - 1][1] = mid
            padded[i][0] = mid

    profiles: tuple[np.ndarray, np.ndarray] | None = None
    out: list[Segment] = []
    for s, e in padded:
        if e - s > opts.max_segment_s - _ROUNDING_SLACK:
            if profiles is None:
                profiles = _boundary_profiles(scores, opts)
            pieces = _split_long(s, e, _cut_scores(profiles, s, e), opts)
        else:
            pieces = [(s, e)]
        out.extend(Segment(round(a, 3), round(b, 3)) for a, b in pieces if b - a > 0)
    return out


def _boundary_profiles(scores: FrameScores, opts: VadOptions) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed probability and energy (dB) at each frame boundary k (between frames k-1 and k)."""
    width = max(1, int(round(opts.split_smoothing_s / FRAME_SECONDS)))
    probs = np.asarray(scores.probs, dtype=np.float64)
    energy = np.clip(np.asarray(scores.energy_db, dtype=np.float64), -100.0, 0.0)
    if probs.size == 0:
        return probs, energy
    p = np.concatenate([[probs[0]], probs, [probs[-1]]])
    en = np.concatenate([[energy[0]], energy, [energy[-1]]])
    return _moving_average((p[:-1] + p[1:]) / 2, width), _moving_average((en[:-1] + en[1:]) / 2, width)


_ENERGY_WEIGHT = 0.5
"""Weight of the (per-segment normalised) energy in a cut's score; the probability weighs 1.
Inside continuous speech Silero's probability saturates near 1, so energy picks the softest spot."""


def _cut_scores(profiles: tuple[np.ndarray, np.ndarray], start: float, end: float) -> np.ndarray:
    """Cut scores for one segment: probability + energy weight x energy scaled to the segment's
    own 5th..95th percentile range (so the recording's gain does not matter). Lower = quieter."""
    p_s, e_s = profiles
    a = max(int(start / FRAME_SECONDS), 0)
    b = min(int(math.ceil(end / FRAME_SECONDS)) + 1, e_s.size)
    score = np.full(p_s.size, np.inf)
    if b <= a:
        return score
    lo, hi = np.percentile(e_s[a:b], [5.0, 95.0])
    scaled = np.clip((e_s[a:b] - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    score[a:b] = p_s[a:b] + _ENERGY_WEIGHT * scaled
    return score


def quietest_cut(scores: FrameScores, start: float, end: float, options: VadOptions | None = None, *,
                 earliest: float | None = None) -> float:
    """The quietest place to cut ``[start, end]`` (seconds on the time axis of ``scores``) in two.

    Cuts are scored as when :func:`segments_from_scores` splits an over-long segment (smoothed
    probability plus scaled energy), at 32 ms frame boundaries leaving at least ``min_split_s`` (at most
    a quarter of the span) on each side, and not before ``earliest``. Live segmentation uses it to cap a
    segment that reaches ``max_segment_s`` while the speaker goes on (it cannot look ahead as the
    offline split does, so it asks for a cut in the segment's second half: no short first piece).
    """
    opts = options or VadOptions()
    min_piece = min(opts.min_split_s, (end - start) / 4)
    score = _cut_scores(_boundary_profiles(scores, opts), start, end)
    lo = max(math.ceil((max(start + min_piece, earliest or start)) / FRAME_SECONDS - 1e-9), 0)
    hi = min(math.floor((end - min_piece) / FRAME_SECONDS + 1e-9), score.size - 1)
    if hi < lo:  # too short to leave min_piece on both sides: the middle frame boundary
        return round((start + end) / 2 / FRAME_SECONDS) * FRAME_SECONDS
    return (lo + int(np.argmin(score[lo : hi + 1]))) * FRAME_SECONDS


def segment_speech(source: Any, options: VadOptions | None = None) -> list[Segment]:
    """Find speech segments of at most ``options.max_segment_s`` seconds in ``source``.

    Args:
        source: a 1-D float32 16 kHz mono waveform (numpy array or torch tensor), or anything
            :func:`mooer.audio.iter_audio_chunks` accepts (e.g. a file path); files are streamed.
        options: :class:`VadOptions` (defaults: max 30 s, merge pauses < 0.3 s, pad 0.1 s).

    Returns:
        Segments in time order, non-overlapping, each ``0 < duration <= max_segment_s``. An input
        without speech gives ``[]``.
    """
    opts = options or VadOptions()
    return segments_from_scores(score_frames(source, opts.chunk_seconds, opts.num_threads), opts)


# --------------------------------------------------------------------------------------------- segment audio


def _soundfile_reader(source: Any) -> Any | None:
    if not isinstance(source, (str, os.PathLike)):
        return None
    try:
        import soundfile as sf

        return sf.SoundFile(os.fspath(source))
    except Exception:  # noqa: BLE001 - not a soundfile format (mp3 in old libsndfile, mp4, ...)
        return None


def iter_segment_audio(
    source: Any,
    segments: Sequence[Segment],
    chunk_seconds: float = 10.0,
) -> Iterator[tuple[Segment, np.ndarray]]:
    """Yield ``(segment, waveform)`` for each segment, in time order, without loading the whole input.

    Waveforms are float32 mono 16 kHz. Arrays are sliced; files libsndfile can read are read by
    seeking to each segment (resampled with soxr when the file is not 16 kHz); other inputs are
    decoded once front to back by :func:`mooer.audio.iter_audio_chunks`, holding at most one
    segment plus one chunk. Segments past the end of the audio come out truncated (possibly empty).
    """
    ordered = sorted(segments, key=lambda s: (s.start, s.end))
    wav = _as_waveform(source)
    if wav is not None:
        for seg in ordered:
            yield seg, wav[seg.slice()]
        return
    reader = _soundfile_reader(source)
    if reader is not None:
        with reader:
            yield from _seek_segments(reader, ordered)
        return
    yield from _stream_segments(_iter_chunks(source, chunk_seconds), ordered)


_RESAMPLE_MARGIN_S = 0.05  # extra audio read around a segment so the resampler's edges fall outside it


def _seek_segments(reader: Any, ordered: Sequence[Segment]) -> Iterator[tuple[Segment, np.ndarray]]:
    sr = int(reader.samplerate)
    # 16 kHz sample n is at file sample n * sr / 16000; reading from a point where both grids meet
    # (multiples of `step16` / `step_sr`) keeps the resampled slice in phase with a whole-file decode.
    g = math.gcd(sr, SAMPLE_RATE)
    step16, step_sr = SAMPLE_RATE // g, sr // g
    margin16 = 0 if sr == SAMPLE_RATE else math.ceil(_RESAMPLE_MARGIN_S * SAMPLE_RATE / step16) * step16
    for seg in ordered:
        a16, b16 = seg.start_sample(), max(seg.end_sample(), seg.start_sample())
        lo16 = max(0, (a16 // step16) * step16 - margin16)
        hi16 = -(-b16 // step16) * step16 + margin16
        lo, hi = min(lo16 // step16 * step_sr, reader.frames), min(hi16 // step16 * step_sr, reader.frames)
        reader.seek(lo)
        data = reader.read(hi - lo, dtype="float32", always_2d=True)
        mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
        if sr != SAMPLE_RATE and mono.size:
            import soxr

            mono = soxr.resample(mono, sr, SAMPLE_RATE, quality="HQ")
        yield seg, np.ascontiguousarray(mono[a16 - lo16 : b16 - lo16], dtype=np.float32)


def _stream_segments(
    chunks: Iterable[np.ndarray], ordered: Sequence[Segment]
) -> Iterator[tuple[Segment, np.ndarray]]:
    buf = np.zeros(0, dtype=np.float32)
    buf_start = 0  # sample index of buf[0]
    i = 0
    for chunk in chunks:
        if i >= len(ordered):
            return
        buf = np.concatenate([buf, chunk]) if buf.size else np.asarray(chunk, dtype=np.float32)
        buf_end = buf_start + buf.size
        while i < len(ordered) and ordered[i].end_sample() <= buf_end:
            seg = ordered[i]
            yield seg, buf[max(seg.start_sample() - buf_start, 0) : seg.end_sample() - buf_start].copy()
            i += 1
        # keep only what the remaining segments can still need
        keep_from = ordered[i].start_sample() if i < len(ordered) else buf_end
        drop = min(max(keep_from - buf_start, 0), buf.size)
        if drop:
            buf = buf[drop:].copy()
            buf_start += drop
    for seg in ordered[i:]:
        a = max(seg.start_sample() - buf_start, 0)
        b = max(seg.end_sample() - buf_start, a)
        yield seg, buf[a:b].copy()
