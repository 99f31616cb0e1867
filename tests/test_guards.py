"""Repetition / hallucination guards."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import pytest

from mooer.inference.guards import (
    RepetitionGuard,
    check_output,
    compression_ratio,
    find_loop,
    max_new_tokens_for,
    stricter_decoding,
    text_units,
    truncate_repetition,
)

NORMAL_ZH = (
    "今天我们来讨论一下人工智能在语音识别领域的最新进展以及它对日常生活的影响大家都知道近年来深度学习技术发展"
    "非常迅速很多以前无法解决的问题现在都有了新的答案比如说在嘈杂的环境中识别说话人的声音"
)
NORMAL_EN = (
    "TODAY WE WILL TALK ABOUT THE LATEST PROGRESS OF ARTIFICIAL INTELLIGENCE IN SPEECH RECOGNITION AND ITS "
    "IMPACT ON DAILY LIFE AS WE ALL KNOW DEEP LEARNING HAS DEVELOPED VERY QUICKLY IN RECENT YEARS"
)
EOS, PAD = 151645, 151643


def test_compression_ratio_values() -> None:
    assert compression_ratio("") == 0.0
    text = "好的" * 40
    data = text.encode("utf-8")
    assert compression_ratio(text) == pytest.approx(len(data) / len(zlib.compress(data)))
    assert compression_ratio(text) > 5.0
    assert compression_ratio("the " * 50) > 8.0
    assert 1.0 < compression_ratio(NORMAL_ZH) < 1.6
    assert 1.0 < compression_ratio(NORMAL_EN) < 1.8
    assert compression_ratio("你好") < 1.0  # short text never compresses


def test_text_units() -> None:
    assert text_units("我们走吧, OK don't-stop 42") == ["我", "们", "走", "吧", ",", "ok", "don't", "-", "stop", "42"]
    assert text_units("ABC中文") == ["abc", "中", "文"]


@pytest.mark.parametrize("text", [NORMAL_ZH, NORMAL_EN, NORMAL_ZH + "\n" + NORMAL_EN, "对对对对对", "哈哈哈哈哈哈", ""])
def test_normal_text_passes(text: str) -> None:
    verdict = check_output(text, audio_seconds=30.0)
    assert verdict.ok, verdict.reasons
    assert verdict.reasons == []


@pytest.mark.parametrize(
    "text, unit",
    [
        ("我们今天" + "好的" * 30, "好的"),
        ("好的，" * 12, "好的，"),
        ("AND THEN " + "THE " * 40, "the"),
        ("okay okay okay okay okay okay okay okay okay", "okay"),
    ],
)
def test_forced_repetition_triggers(text: str, unit: str) -> None:
    verdict = check_output(text, audio_seconds=10.0)
    assert not verdict.ok
    assert any(r.startswith("repetition:") and repr(unit) in r for r in verdict.reasons), verdict.reasons
    assert verdict.metrics["max_ngram_repeats"] >= 9


def test_compression_alone_triggers() -> None:
    # a long-period loop (4 copies: not more than max_repeats) is still caught by the compression ratio
    text = "我们今天来讨论人工智能的最新进展吧" * 4
    verdict = check_output(text, options=RepetitionGuard())
    assert not verdict.ok
    assert [r.split(":")[0] for r in verdict.reasons] == ["compression_ratio"]
    assert check_output(text, options=RepetitionGuard(compression_ratio_threshold=None)).ok


def test_token_loop_triggers_and_pad_is_ignored() -> None:
    ids = [11, 12, 13] + [700, 800] * 30 + [EOS, PAD, PAD, PAD]
    verdict = check_output("x", ids, audio_seconds=20.0)
    assert [r.split(":")[0] for r in verdict.reasons] == ["repetition"]
    assert verdict.metrics["num_tokens"] == 63
    # eos/pad padding alone is never a loop
    assert check_output("hello", [5, 6, EOS] + [PAD] * 50, audio_seconds=1.0).ok


def test_length_bounds() -> None:
    assert max_new_tokens_for(0) == 16
    assert max_new_tokens_for(5) == 91
    assert max_new_tokens_for(20) == 316
    assert max_new_tokens_for(30) == 466
    assert max_new_tokens_for(30, cap=200) == 200
    assert max_new_tokens_for(10, RepetitionGuard(tokens_base=10, tokens_per_second=5)) == 60
    # 1 s of audio cannot carry 100 distinct tokens / 200 characters
    ids = list(range(1000, 1100))
    verdict = check_output(NORMAL_ZH[:80] + NORMAL_EN[:130], ids, audio_seconds=1.0)
    kinds = {r.split(":")[0] for r in verdict.reasons}
    assert kinds == {"too_many_tokens", "too_many_chars"}
    assert verdict.metrics["max_tokens"] == 31 and verdict.metrics["tokens_per_second"] == 100
    assert check_output(NORMAL_ZH[:80], ids[:60], audio_seconds=10.0).ok


def test_refusal_triggers() -> None:
    verdict = check_output("I'm sorry, but as an AI language model I cannot transcribe audio.")
    assert not verdict.ok and verdict.reasons[0].startswith("refusal:")


def test_find_loop() -> None:
    units = list("abc") + list("xy") * 6 + list("z")
    loop = find_loop(units)
    assert loop is not None and (loop.start, loop.period, loop.copies, loop.stop) == (3, 2, 6, 15)
    assert find_loop(list("xy") * 4) is None  # 4 copies: allowed
    assert find_loop(list("x") * 7) is None  # too short a span (7 < 8 units)


def test_truncate_repetition_text() -> None:
    assert truncate_repetition("我们走吧好的好的好的好的好的好的好") == "我们走吧好的"
    assert truncate_repetition("AND THEN THE THE THE THE THE THE THE THE THE") == "AND THEN THE"
    assert truncate_repetition("好的，" * 12, keep=2) == "好的，好的，"
    # a loop that ends is not a tail: untouched, as is normal text
    assert truncate_repetition("好的" * 10 + "再见了朋友们") == "好的" * 10 + "再见了朋友们"
    assert truncate_repetition(NORMAL_ZH) == NORMAL_ZH


def test_truncate_repetition_ids() -> None:
    ids = [1, 2, 3] + [7, 8] * 20 + [7, EOS, PAD]
    assert truncate_repetition(ids) == [1, 2, 3, 7, 8]
    assert truncate_repetition((1, 2, 3, EOS)) == [1, 2, 3, EOS]


def test_stricter_decoding() -> None:
    @dataclass(frozen=True)
    class Opts:
        num_beams: int = 4
        repetition_penalty: float = 1.0
        no_repeat_ngram_size: int = 0

    strict = stricter_decoding(Opts())
    assert strict == Opts(num_beams=4, repetition_penalty=1.2, no_repeat_ngram_size=4)
    assert stricter_decoding(Opts(repetition_penalty=1.5, no_repeat_ngram_size=3)) == Opts(4, 1.5, 3)
    assert stricter_decoding(Opts(), repetition_penalty=1.1, no_repeat_ngram_size=6) == Opts(4, 1.1, 6)
    with pytest.raises(TypeError):
        stricter_decoding({"repetition_penalty": 1.0})

    @dataclass
    class NoField:
        repetition_penalty: float = 1.0

    with pytest.raises(TypeError, match="no_repeat_ngram_size"):
        stricter_decoding(NoField())


def test_stricter_decoding_on_project_options() -> None:
    from mooer.decoding import DecodingOptions

    strict = stricter_decoding(DecodingOptions())
    assert strict.repetition_penalty == 1.2 and strict.no_repeat_ngram_size == 4
