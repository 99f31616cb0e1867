"""Live segmentation: speech segments cut from audio while it arrives (turn detection of the realtime API).

:class:`LiveSegmenter` takes 16 kHz samples in pieces of any size, scores every 32 ms frame with the Silero
VAD (:class:`~mooer.inference.vad.StreamingScorer`, the scorer of offline segmentation) and runs the offline
rules (:func:`~mooer.inference.vad.segments_from_scores`) as a state machine, frame by frame:

* speech starts at a frame with probability >= ``threshold`` and ends at the first frame below the exit
  threshold (hysteresis); a pause shorter than ``min_silence_s`` does not end the segment;
* a segment is announced (:class:`SpeechStarted`) once it holds ``min_speech_s`` of speech; shorter
  bursts are dropped without a word;
* it closes (:class:`SegmentClosed`) when a pause reaches ``min_silence_s``: it ends ``speech_pad_s``
  after the last speech frame and starts ``prefix_pad_s`` before the first one (never before the end of
  the previous segment);
* a segment that reaches ``max_segment_s`` while speech goes on is cut at the quietest point of its
  second half (:func:`~mooer.inference.vad.quietest_cut`, the long-form split scores); the rest starts the
  next segment.

Memory is bounded: outside speech only the prefix padding is kept, and a segment never exceeds
``max_segment_s``. Sample indices count from the first sample pushed. With ``detect=False`` nothing is
detected: audio accumulates until :meth:`LiveSegmenter.commit` (the realtime API's manual mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mooer.inference.vad import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE, FrameScores, StreamingScorer, VadOptions, quietest_cut

__all__ = ["SpeechStarted", "SegmentClosed", "LiveSegmenter"]

_EPS = 1e-9


@dataclass(frozen=True)
class SpeechStarted:
    """A segment holds enough speech to be reported; it begins at sample ``start`` (16 kHz)."""

    start: int


@dataclass(frozen=True)
class SegmentClosed:
    """A finished segment: samples ``[start, end)`` of the stream, and why it ended
    (``pause``, ``max_length`` or ``commit``). ``announced``: a :class:`SpeechStarted` was sent for it."""

    start: int
    end: int
    audio: np.ndarray
    reason: str
    announced: bool = True

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


class _Audio:
    """The recent part of the stream: samples ``[start, end)``, in one growable array."""

    def __init__(self) -> None:
        self._data = np.zeros(SAMPLE_RATE * 4, dtype=np.float32)
        self.start = 0
        self._size = 0

    @property
    def end(self) -> int:
        return self.start + self._size

    def append(self, samples: np.ndarray) -> None:
        need = self._size + samples.size
        if need > self._data.size:
            grown = np.zeros(max(need, 2 * self._data.size), dtype=np.float32)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : need] = samples
        self._size = need

    def drop_before(self, index: int) -> None:
        k = min(max(index - self.start, 0), self._size)
        if k:
            self._data[: self._size - k] = self._data[k : self._size]
            self._size -= k
            self.start += k

    def slice(self, a: int, b: int) -> np.ndarray:
        a, b = max(a, self.start), min(b, self.end)
        return self._data[a - self.start : max(b, a) - self.start].copy()


class LiveSegmenter:
    """Cuts a live 16 kHz stream into speech segments (see the module docstring).

    ``options``: the VAD rules (``threshold``, ``neg_threshold``, ``min_silence_s`` = the pause that
    closes a segment, ``min_speech_s``, ``speech_pad_s`` = padding after speech, ``max_segment_s``,
    ``min_split_s``); ``prefix_pad_s``: audio kept before the first speech frame.
    """

    def __init__(self, options: VadOptions | None = None, prefix_pad_s: float = 0.3, detect: bool = True) -> None:
        self.options = options or VadOptions()
        self.detect = detect
        self.prefix = int(round(max(prefix_pad_s, 0.0) * SAMPLE_RATE))
        self.pad = int(round(self.options.speech_pad_s * SAMPLE_RATE))
        self.max_samples = int(round(self.options.max_segment_s * SAMPLE_RATE))
        self.enter = self.options.threshold
        self.leave = self.options.effective_neg_threshold
        self._scorer: StreamingScorer | None = None  # made by the first push (loading Silero takes a moment)
        self._audio = _Audio()
        self._frame = 0  # index of the next frame to score
        self._f0 = 0  # frame index of _probs[0]
        self._probs: list[float] = []
        self._energy: list[float] = []
        self._state = "silence"  # silence | speech | pause
        self._seg_start = 0
        self._speech_from = 0  # frame where the open segment's speech began
        self._last_end = 0  # frame after its last speech frame
        self._confirmed = False
        self._prev_end = 0  # segments never overlap

    # ------------------------------------------------------------------------------------------- state
    @property
    def num_samples(self) -> int:
        """Samples pushed so far."""
        return self._audio.end

    @property
    def buffered_seconds(self) -> float:
        """Audio held for the open segment (or, in manual mode, since the last commit)."""
        return (self._audio.end - self._audio.start) / SAMPLE_RATE

    @property
    def in_speech(self) -> bool:
        """A segment is open and announced."""
        return self._state != "silence" and self._confirmed

    def current(self) -> tuple[int, np.ndarray] | None:
        """The open, announced segment so far: ``(start, audio up to now)``; None outside speech."""
        if not self.in_speech:
            return None
        return self._seg_start, self._audio.slice(self._seg_start, self._audio.end)

    # ------------------------------------------------------------------------------------------- input
    def push(self, samples: np.ndarray) -> list[SpeechStarted | SegmentClosed]:
        """Add samples (float32, 16 kHz); returns what happened, in order."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._audio.append(samples)
        if not self.detect:
            return []
        if self._scorer is None:
            self._scorer = StreamingScorer(self.options.num_threads)
        probs, energy = self._scorer.push(samples)
        events: list[SpeechStarted | SegmentClosed] = []
        for p, e in zip(probs.tolist(), energy.tolist()):
            self._probs.append(p)
            self._energy.append(e)
            self._step(p, events)
            self._frame += 1
        if self._state == "silence":
            self._forget(max(self._frame * FRAME_SAMPLES - self.prefix, 0))
        return events

    def commit(self) -> SegmentClosed | None:
        """Close the open segment now (announced or not); None when there is nothing to close."""
        if not self.detect:
            start, end = max(self._audio.start, self._prev_end), self._audio.end
            audio = self._audio.slice(start, end)
            self._prev_end = end
            self._forget(end)
            return SegmentClosed(start, end, audio, "commit", False) if end > start else None
        if self._state == "silence":
            return None
        end = self._audio.end if self._state == "speech" else min(self._last_end * FRAME_SAMPLES + self.pad,
                                                                    self._audio.end)
        return self._close(end, "commit")

    def clear(self) -> None:
        """Drop the open segment and everything buffered."""
        self._state = "silence"
        self._confirmed = False
        self._prev_end = self._audio.end
        self._forget(self._audio.end)

    # -------------------------------------------------------------------------------------------- rules
    def _step(self, p: float, events: list) -> None:
        f = self._frame
        frame_end = (f + 1) * FRAME_SAMPLES
        if self._state == "silence":
            if p < self.enter:
                return
            self._state = "speech"
            self._seg_start = max(f * FRAME_SAMPLES - self.prefix, self._prev_end, self._audio.start)
            self._speech_from, self._last_end, self._confirmed = f, f + 1, False
        elif self._state == "speech":
            if p >= self.leave:
                self._last_end = f + 1
            else:
                self._state = "pause"
        elif p >= self.enter:  # pause: speech again before the pause was long enough
            self._state = "speech"
            self._last_end = f + 1
        self._confirm(events)
        if self._state == "pause" and (f + 1 - self._last_end) * FRAME_SECONDS >= self.options.min_silence_s - _EPS:
            closed = self._close(min(self._last_end * FRAME_SAMPLES + self.pad, frame_end), "pause")
            if closed.announced:
                events.append(closed)
        elif frame_end - self._seg_start >= self.max_samples:
            self._cut(frame_end, events)

    def _confirm(self, events: list) -> None:
        if not self._confirmed and (self._last_end - self._speech_from) * FRAME_SECONDS >= self.options.min_speech_s - _EPS:
            self._confirmed = True
            events.append(SpeechStarted(self._seg_start))

    def _close(self, end: int, reason: str) -> SegmentClosed:
        closed = SegmentClosed(self._seg_start, end, self._audio.slice(self._seg_start, end), reason, self._confirmed)
        self._state = "silence"
        self._confirmed = False
        self._prev_end = end
        return closed

    def _cut(self, now: int, events: list) -> None:
        """The open segment reached the maximum length: close it at its quietest point, go on from there."""
        origin = self._f0 * FRAME_SAMPLES
        scores = FrameScores(np.asarray(self._probs, np.float32), np.asarray(self._energy, np.float32), now - origin)
        start, end = (self._seg_start - origin) / SAMPLE_RATE, (now - origin) / SAMPLE_RATE
        at = quietest_cut(scores, start, end, self.options, earliest=(start + end) / 2)
        cut = origin + int(round(at * SAMPLE_RATE))
        state = self._state
        events.append(self._close(cut, "max_length"))
        self._state = state
        self._seg_start = cut
        self._speech_from = cut // FRAME_SAMPLES
        self._last_end = max(self._last_end, self._speech_from)
        self._confirm(events)
        self._forget(cut)

    def _forget(self, before: int) -> None:
        """Drop audio before sample ``before`` and frame scores before its frame."""
        self._audio.drop_before(before)
        frame = min(before // FRAME_SAMPLES, self._frame)
        if frame > self._f0:
            del self._probs[: frame - self._f0]
            del self._energy[: frame - self._f0]
            self._f0 = frame
