"""SubRip (.srt) and WebVTT (.vtt) subtitles from timed text segments.

A segment is anything with ``start``, ``end`` (seconds) and ``text``: a mapping such as
``{"start": 1.0, "end": 2.5, "text": "..."}`` (the shape of ``Result.segments``) or an object with
those attributes. Segments whose text is empty or only whitespace are skipped, and cues are
numbered consecutively over the segments that remain. Multi-line text keeps its line breaks;
blank lines inside a text are dropped because a blank line ends a cue in both formats.

Example::

    >>> print(to_srt([{"start": 0.0, "end": 1.5, "text": "你好"}]), end="")
    1
    00:00:00,000 --> 00:00:01,500
    你好
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

__all__ = [
    "Cue",
    "format_timestamp",
    "to_cues",
    "to_srt",
    "to_vtt",
    "render_subtitles",
    "write_subtitles",
    "segments_from_result",
]


@dataclass(frozen=True)
class Cue:
    """One subtitle: a time span and its (possibly multi-line) text."""

    start: float
    end: float
    text: str


def format_timestamp(seconds: float, decimal_marker: str = ",") -> str:
    """``HH:MM:SS<marker>mmm``, rounded to the millisecond (``,`` for SRT, ``.`` for WebVTT).

    Hours are not wrapped (100 h prints as ``100:00:00,000``). Negative times are clamped to 0.
    """
    total_ms = max(0, int(round(float(seconds) * 1000.0)))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def _field(segment: Any, name: str) -> Any:
    if isinstance(segment, Mapping):
        if name not in segment:
            raise ValueError(f"subtitle segment has no {name!r}: {segment!r}")
        return segment[name]
    try:
        return getattr(segment, name)
    except AttributeError:
        raise ValueError(f"subtitle segment has no {name!r}: {segment!r}") from None


def _clean_text(text: Any) -> str:
    lines = (line.strip() for line in str(text if text is not None else "").splitlines())
    return "\n".join(line for line in lines if line)


def to_cues(segments: Iterable[Any], text_key: str = "text") -> list[Cue]:
    """Normalise segments into cues: text cleaned, empty texts skipped, times validated.

    Raises ``ValueError`` if a segment lacks a field or has ``end < start``.
    """
    cues: list[Cue] = []
    for seg in segments:
        start = float(_field(seg, "start"))
        end = float(_field(seg, "end"))
        if end < start:
            raise ValueError(f"subtitle segment ends before it starts: start={start}, end={end}")
        text = _clean_text(_field(seg, text_key))
        if text:
            cues.append(Cue(start, end, text))
    return cues


def to_srt(segments: Iterable[Any], text_key: str = "text") -> str:
    """SubRip text: ``n``, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, the text, a blank line; per cue."""
    blocks = [
        f"{i}\n{format_timestamp(c.start, ',')} --> {format_timestamp(c.end, ',')}\n{c.text}\n"
        for i, c in enumerate(to_cues(segments, text_key), start=1)
    ]
    return "\n".join(blocks)


def _escape_vtt(text: str) -> str:
    # WebVTT cue text: '&' and '<' start entities/tags; escaping '>' also defuses a literal "-->".
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(segments: Iterable[Any], text_key: str = "text") -> str:
    """WebVTT text: a ``WEBVTT`` header, then ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` and the text per cue.

    Cues carry no identifiers; ``&``, ``<`` and ``>`` in the text are escaped as entities.
    """
    blocks = ["WEBVTT\n"]
    blocks += [
        f"{format_timestamp(c.start, '.')} --> {format_timestamp(c.end, '.')}\n{_escape_vtt(c.text)}\n"
        for c in to_cues(segments, text_key)
    ]
    return "\n".join(blocks)


def segments_from_result(result: Any, text_key: str = "text") -> list[dict[str, Any]]:
    """Timed segments of a transcription result, ready for :func:`to_srt` / :func:`to_vtt`.

    ``result`` is a ``Result`` object or its ``to_dict()`` form. When it has ``segments``
    (long-form decoding), those are returned as ``{"start", "end", "text"}`` dicts, ``text`` taken
    from ``text_key`` (e.g. ``"ast"`` for the translation of a multitask result, when segments
    carry it). Otherwise the whole result becomes one segment from 0 to ``duration``.

    Raises ``ValueError`` when there are no segments and no duration to time the text with.
    """
    get = result.get if isinstance(result, Mapping) else (lambda k, d=None: getattr(result, k, d))
    segments = get("segments")
    if segments:
        return [
            {"start": float(_field(s, "start")), "end": float(_field(s, "end")), "text": _field(s, text_key)}
            for s in segments
        ]
    text = get(text_key)
    if text is None or not str(text).strip():
        return []
    duration = get("duration")
    if duration is None:
        raise ValueError("result has neither segments nor a duration; cannot time its text")
    return [{"start": 0.0, "end": float(duration), "text": text}]


def render_subtitles(result_or_segments: Any, fmt: str, text_key: str = "text") -> str:
    """SRT (``fmt="srt"``) or WebVTT (``"vtt"``) text of a result (see :func:`segments_from_result`) or of
    a list of segments. A multitask (``asr_ast``) text is ``transcript\\ntranslation``, so its cues hold
    the transcript and the translation on two lines."""
    kind = fmt.lower()
    if kind not in ("srt", "vtt"):
        raise ValueError(f"unknown subtitle format {fmt!r} (use 'srt' or 'vtt')")
    if isinstance(result_or_segments, (list, tuple)):
        segments: list[Any] = list(result_or_segments)
    else:
        segments = segments_from_result(result_or_segments, text_key)
        text_key = "text"
    return to_srt(segments, text_key) if kind == "srt" else to_vtt(segments, text_key)


def write_subtitles(
    result_or_segments: Any,
    path: str | os.PathLike[str],
    fmt: str | None = None,
    text_key: str = "text",
) -> Path:
    """Write :func:`render_subtitles` to ``path`` (UTF-8) and return the path; ``fmt`` comes from the file
    suffix by default."""
    out = Path(path)
    out.write_text(render_subtitles(result_or_segments, fmt or out.suffix.lstrip("."), text_key), encoding="utf-8")
    return out
