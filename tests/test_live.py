"""Live segmentation (:mod:`mooer.inference.live`): segments cut while audio arrives, without a model or a
server. Synthetic speech comes from the helpers of ``test_vad`` (espeak-ng or flite)."""

from __future__ import annotations

import numpy as np
import pytest
from test_vad import SR, noise, tts

from mooer.inference.live import LiveSegmenter, SegmentClosed, SpeechStarted
from mooer.inference.vad import FRAME_SAMPLES, FrameScores, VadOptions, quietest_cut, score_frames, segment_speech


def _recording(sentences: int, gap_s: float = 1.5, seed: int = 7) -> tuple[np.ndarray, list[tuple[float, float]]]:
    rng = np.random.default_rng(seed)
    parts, bounds, pos = [np.zeros(int(0.8 * SR), np.float32)], [], int(0.8 * SR)
    for i in range(sentences):
        clip = tts(i)
        bounds.append((pos / SR, (pos + clip.size) / SR))
        parts += [clip, np.zeros(int(gap_s * SR), np.float32)]
        pos += clip.size + int(gap_s * SR)
    audio = np.concatenate(parts)
    return audio + noise(rng, audio.size), bounds


def _feed(segmenter: LiveSegmenter, audio: np.ndarray, chunk: int) -> list[tuple[int, object]]:
    """(samples pushed when it happened, event) for every event."""
    out = []
    for i in range(0, audio.size, chunk):
        for event in segmenter.push(audio[i : i + chunk]):
            out.append((min(i + chunk, audio.size), event))
    return out


def test_one_segment_per_sentence_closed_at_the_pause():
    audio, bounds = _recording(3)
    events = _feed(LiveSegmenter(), audio, 1600)
    started = [e for _, e in events if isinstance(e, SpeechStarted)]
    closed = [(at, e) for at, e in events if isinstance(e, SegmentClosed)]
    assert len(started) == len(closed) == 3
    offline = segment_speech(audio)
    assert len(offline) == 3
    for (at, seg), start, (b0, b1), ref in zip(closed, started, bounds, offline):
        assert seg.start == start.start and seg.reason == "pause" and seg.announced
        assert np.array_equal(seg.audio, audio[seg.start : seg.end])
        assert seg.start / SR <= b0 and abs(seg.start / SR - (b0 - 0.3)) < 0.35  # 300 ms of prefix padding
        assert abs(seg.end / SR - b1) < 0.3
        assert seg.end / SR == pytest.approx(ref.end, abs=1e-3)  # the offline rules end it at the same place
        # announced once min_speech_s of speech was heard; closed once the pause reached min_silence_s
        assert at / SR - b1 < 0.5 + 0.2 + 0.1 + 1e-6  # silence 0.5 s, the hysteresis tail, one chunk


def test_events_do_not_depend_on_how_the_audio_is_cut_into_pieces():
    audio, _ = _recording(2)
    runs = []
    for chunk in (160, 1600, 7777):
        runs.append([(type(e).__name__, e.start, getattr(e, "end", None)) for _, e in _feed(LiveSegmenter(), audio, chunk)])
    assert runs[0] == runs[1] == runs[2] and len(runs[0]) == 4


def test_streaming_scores_equal_scoring_the_whole_input():
    audio, _ = _recording(1)
    whole = score_frames(audio)
    from mooer.inference.vad import StreamingScorer

    scorer = StreamingScorer()
    parts = [scorer.push(audio[i : i + 999]) for i in range(0, audio.size, 999)] + [scorer.flush()]
    np.testing.assert_allclose(np.concatenate([p for p, _ in parts]), whole.probs, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate([e for _, e in parts]), whole.energy_db)
    assert scorer.num_samples == whole.num_samples == audio.size


def test_silence_and_short_bursts_give_nothing():
    rng = np.random.default_rng(0)
    seg = LiveSegmenter()
    assert _feed(seg, noise(rng, 5 * SR), 1600) == []
    assert seg.buffered_seconds <= 0.3 + FRAME_SAMPLES / SR  # only the prefix padding is kept in silence
    click = np.zeros(3 * SR, np.float32)
    click[SR : SR + int(0.03 * SR)] = tts(0)[SR : SR + int(0.03 * SR)]  # 30 ms of speech
    click += noise(rng, click.size)
    assert segment_speech(click) == []  # under min_speech_s (with Silero's tail) for the offline rules
    assert _feed(LiveSegmenter(), click, 1600) == []  # and for the live ones


def test_long_speech_is_cut_at_the_max_length_in_its_second_half():
    rng = np.random.default_rng(1)
    speech = np.concatenate([tts(i) for i in range(4)])
    audio = np.concatenate([np.zeros(SR // 2, np.float32), speech, np.zeros(SR, np.float32)])
    audio += noise(rng, audio.size)
    opts = VadOptions(max_segment_s=8.0)
    closed = [e for _, e in _feed(LiveSegmenter(opts), audio, 1600) if isinstance(e, SegmentClosed)]
    assert len(closed) >= 3
    assert all(c.reason == "max_length" for c in closed[:-1]) and closed[-1].reason == "pause"
    for a, b in zip(closed, closed[1:]):
        assert a.end == b.start  # contiguous: nothing lost, nothing decoded twice
    for c in closed[:-1]:
        assert 4.0 - 1e-3 <= c.seconds <= 8.0 and c.end % FRAME_SAMPLES == 0
    # the cut is the quietest boundary the rules allowed (recomputed from the whole input's scores)
    scores = score_frames(audio)
    first = closed[0]
    limit = first.start + 8 * SR
    window = FrameScores(scores.probs[: limit // FRAME_SAMPLES], scores.energy_db[: limit // FRAME_SAMPLES], limit)
    expect = quietest_cut(window, first.start / SR, limit / SR, opts, earliest=(first.start + limit) / 2 / SR)
    assert first.end == round(expect * SR)


def test_quietest_cut_finds_the_pause():
    probs = np.full(200, 0.95, np.float32)
    energy = np.full(200, -20.0, np.float32)
    probs[120:125], energy[120:125] = 0.05, -60.0  # a pause at frames 120-124 (3.84-4.0 s)
    scores = FrameScores(probs, energy, 200 * FRAME_SAMPLES)
    cut = quietest_cut(scores, 0.0, 6.4, VadOptions())
    assert 120 * 0.032 <= cut <= 125 * 0.032
    assert quietest_cut(scores, 0.0, 6.4, VadOptions(), earliest=4.5) >= 4.5


def test_commit_and_clear():
    audio, bounds = _recording(1)
    seg = LiveSegmenter()
    middle = int((bounds[0][0] + 1.0) * SR)
    events = _feed(seg, audio[:middle], 1600)
    assert [type(e) for _, e in events] == [SpeechStarted]
    start, sofar = seg.current()
    assert start == events[0][1].start and np.array_equal(sofar, audio[start:middle])
    closed = seg.commit()
    assert closed is not None and closed.reason == "commit" and (closed.start, closed.end) == (start, middle)
    assert seg.commit() is None and seg.current() is None
    seg.clear()
    assert seg.buffered_seconds == 0.0

    manual = LiveSegmenter(detect=False)
    assert _feed(manual, audio[:SR], 500) == []
    first = manual.commit()
    assert (first.start, first.end, first.announced) == (0, SR, False) and np.array_equal(first.audio, audio[:SR])
    manual.push(audio[SR : 2 * SR])
    manual.clear()
    manual.push(audio[2 * SR : 3 * SR])
    second = manual.commit()
    assert (second.start, second.end) == (2 * SR, 3 * SR)
    assert manual.commit() is None
