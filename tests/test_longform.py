"""Long-form decoding: VAD segments decoded in batches and stitched in time order; guards on loops."""

from __future__ import annotations

import numpy as np
import pytest

from fixtures_path import AUDIO
from mooer.audio import load_audio
from mooer.inference.longform import LongFormOptions, join_texts
from mooer.inference.vad import VadOptions

CLIPS = ("zh1", "en1", "zh2", "demo")


@pytest.fixture(scope="module")
def long_recording():
    """~40 s: the fixture clips separated by 3 s of low noise, with their true positions."""
    rng = np.random.default_rng(0)
    parts, spans, t = [], [], 0.0
    for clip in CLIPS * 2:
        gap = (rng.standard_normal(48000) * 1e-3).astype(np.float32)
        wave = load_audio(AUDIO / f"{clip}.wav")
        parts += [gap, wave]
        t += len(gap) / 16000
        spans.append((clip, t, t + len(wave) / 16000))
        t += len(wave) / 16000
    parts.append((rng.standard_normal(48000) * 1e-3).astype(np.float32))
    return np.concatenate(parts), spans


def test_join_texts():
    assert join_texts(["你好", "世界"]) == "你好世界"
    assert join_texts(["hello", "world.", "", "再见"]) == "hello world. 再见"


def test_long_input_is_segmented_decoded_and_stitched(tiny_model, long_recording):
    wave, spans = long_recording
    opts = LongFormOptions(vad=VadOptions(max_segment_s=20.0), guard=None)
    res = tiny_model.transcribe(wave, task="asr", decoding="greedy", long_form=opts, batch_size=1)[0]
    assert res.error is None and res.segments
    assert len(res.segments) == len(spans)
    for seg, (_, start, end) in zip(res.segments, spans):
        assert abs(seg["start"] - start) < 0.5 and abs(seg["end"] - end) < 0.5
    starts = [s["start"] for s in res.segments]
    assert starts == sorted(starts)
    # each segment's text is what decoding that segment alone gives (greedy, the length-derived budget)
    from mooer.decoding import PRESETS
    from mooer.inference.guards import max_new_tokens_for
    from mooer.inference.vad import segment_speech

    seg = segment_speech(wave, opts.vad)[1]
    alone = tiny_model.transcribe(wave[seg.slice()], task="asr", long_form=False,
                                  decoding=PRESETS["greedy"].replace(max_new_tokens=max_new_tokens_for(seg.duration)))
    assert alone[0].text == res.segments[1]["text"]
    assert res.text == join_texts([s["text"] for s in res.segments])


def test_short_inputs_are_not_segmented_by_default(tiny_model, ref_json):
    res = tiny_model.transcribe(AUDIO / "zh1.wav", task="asr")[0]
    assert res.segments is None
    assert res.token_ids == ref_json["clips"]["zh1"]["tasks"]["asr"]["beam"]["ids"]


def test_forced_repetition_triggers_the_guard(tiny_model):
    """The random fixture model loops on zh2 ('像素像素像素…'): the guard retries and records it."""
    res = tiny_model.transcribe(AUDIO / "zh2.wav", task="asr", decoding="greedy",
                                long_form=LongFormOptions(enabled=True))[0]
    assert any("guard" in n and "retried" in n for n in res.notes), res.notes
    from mooer.inference.guards import find_loop, text_units

    assert find_loop(text_units(res.text)) is None  # the stitched text no longer loops


def test_silence_gives_an_empty_result_quickly(tiny_model):
    silence = np.zeros(16000 * 60, dtype=np.float32)
    res = tiny_model.transcribe(silence, task="asr")[0]
    assert res.error is None and res.text == "" and res.segments == []
