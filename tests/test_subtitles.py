"""SRT / WebVTT writers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mooer.output.subtitles import format_timestamp, segments_from_result, to_srt, to_vtt, write_subtitles

SEGMENTS = [
    {"start": 0.0, "end": 2.5, "text": "你好世界"},
    {"start": 3.0, "end": 3.0004, "text": "   "},  # empty: skipped, numbering continues
    {"start": 62.3449, "end": 65.0, "text": "first line\n\nsecond line "},
    {"start": 3725.5, "end": 3727.0, "text": "a < b & c --> d"},
]


def test_format_timestamp() -> None:
    assert format_timestamp(0) == "00:00:00,000"
    assert format_timestamp(62.345) == "00:01:02,345"
    assert format_timestamp(62.345, ".") == "00:01:02.345"
    assert format_timestamp(3600 * 2 + 59 * 60 + 59.9996) == "03:00:00,000"  # rounds up across units
    assert format_timestamp(-0.2) == "00:00:00,000"
    assert format_timestamp(360000) == "100:00:00,000"


def test_srt_exact() -> None:
    assert to_srt(SEGMENTS) == (
        "1\n00:00:00,000 --> 00:00:02,500\n你好世界\n"
        "\n"
        "2\n00:01:02,345 --> 00:01:05,000\nfirst line\nsecond line\n"
        "\n"
        "3\n01:02:05,500 --> 01:02:07,000\na < b & c --> d\n"
    )


def test_vtt_exact() -> None:
    assert to_vtt(SEGMENTS) == (
        "WEBVTT\n"
        "\n"
        "00:00:00.000 --> 00:00:02.500\n你好世界\n"
        "\n"
        "00:01:02.345 --> 00:01:05.000\nfirst line\nsecond line\n"
        "\n"
        "01:02:05.500 --> 01:02:07.000\na &lt; b &amp; c --&gt; d\n"
    )


def test_empty_inputs() -> None:
    assert to_srt([]) == ""
    assert to_vtt([]) == "WEBVTT\n"
    assert to_srt([{"start": 0, "end": 1, "text": ""}]) == ""


def test_objects_and_errors() -> None:
    @dataclass
    class Seg:
        start: float
        end: float
        text: str

    assert to_srt([Seg(1, 2, "x")]) == "1\n00:00:01,000 --> 00:00:02,000\nx\n"
    with pytest.raises(ValueError, match="ends before"):
        to_srt([{"start": 2, "end": 1, "text": "x"}])
    with pytest.raises(ValueError, match="'end'"):
        to_srt([{"start": 2, "text": "x"}])


def test_segments_from_result() -> None:
    long_form = {"text": "a b", "duration": 9.0, "segments": [{"start": 0, "end": 4, "text": "a", "ast": "A"}]}
    assert segments_from_result(long_form) == [{"start": 0.0, "end": 4.0, "text": "a"}]
    assert segments_from_result(long_form, text_key="ast") == [{"start": 0.0, "end": 4.0, "text": "A"}]
    assert segments_from_result({"text": "hello", "duration": 3.25}) == [{"start": 0.0, "end": 3.25, "text": "hello"}]
    assert segments_from_result({"text": "", "duration": 3.25}) == []
    with pytest.raises(ValueError, match="duration"):
        segments_from_result({"text": "hello"})

    @dataclass
    class R:  # attribute access, like mooer's Result
        text: str
        duration: float
        segments: list | None = None

    assert segments_from_result(R("hi", 1.5)) == [{"start": 0.0, "end": 1.5, "text": "hi"}]


def test_write_subtitles(tmp_path) -> None:
    result = {"text": "x", "segments": [{"start": 0, "end": 1, "text": "好"}]}
    srt = write_subtitles(result, tmp_path / "out.srt")
    assert srt.read_text(encoding="utf-8") == "1\n00:00:00,000 --> 00:00:01,000\n好\n"
    vtt = write_subtitles(SEGMENTS[:1], tmp_path / "out.txt", fmt="vtt")
    assert vtt.read_text(encoding="utf-8").startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\n")
    with pytest.raises(ValueError, match="format"):
        write_subtitles(result, tmp_path / "out.txt")
