"""Result files (text, tsv, jsonl) and Kaldi-style key-text tables: the one writer and reader of each.

Result files, as ``mooer transcribe --format`` writes them:

- ``text``: the text of each successful result, one per line. A multitask text keeps its newline, so a
  text file cannot be read back by key.
- ``tsv``: ``key<TAB>text`` per successful result, the text escaped by :func:`escape` (backslash, newline,
  tab and carriage return become ``\\\\``, ``\\n``, ``\\t``, ``\\r``), so that every record is one line and
  :func:`unescape` gives the text back exactly. Files of earlier versions, which turned a tab into a space
  and left a carriage return raw, are read correctly too (the tab stays a space).
- ``jsonl``: one ``Result.to_dict()`` object per result, failed ones included (with ``error``).

In ``text`` and ``tsv`` a failed result is left out (the CLI reports it on standard error).

Key-text tables (Kaldi ``text``, ``wav.scp``, ``segments``, translation tables, hypotheses of other tools):
``key<spaces or tabs>value`` per line, split once, value stripped; a key alone has the value ``""``;
blank lines are skipped; a UTF-8 byte-order mark is ignored; there is no comment syntax (Kaldi has none).
"""

from __future__ import annotations

import json
import os
import re
from typing import Iterable, Iterator, TextIO

from mooer.decoding import Result

__all__ = [
    "FORMATS",
    "escape",
    "unescape",
    "write_results",
    "parse_record",
    "read_records",
    "result_from_record",
    "iter_key_text",
    "read_key_text",
]

#: result file formats (subtitles are in :mod:`mooer.output.subtitles`)
FORMATS = ("text", "tsv", "jsonl")

_ESCAPED = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_UNESCAPED = {v[1]: k for k, v in _ESCAPED.items()}
# one pass each way: decoding escape by escape in sequence (``\\n`` then ``\\\\``) would turn a literal
# backslash followed by "n" into a newline
_ESCAPE_RE = re.compile(r"[\\\n\t\r]")
_UNESCAPE_RE = re.compile(r"\\([\\ntr])")
_KEY_TEXT_RE = re.compile(r"[ \t]*([^ \t]+)(?:[ \t](.*))?")

PathLike = str | os.PathLike


def escape(text: str) -> str:
    """A text as one tsv field: backslash, newline, tab and CR written as ``\\\\``, ``\\n``, ``\\t``, ``\\r``."""
    return _ESCAPE_RE.sub(lambda m: _ESCAPED[m.group()], text)


def unescape(text: str) -> str:
    """The inverse of :func:`escape`. Any other backslash (one before another letter, a trailing one) is
    kept as it is."""
    if "\\" not in text:
        return text
    return _UNESCAPE_RE.sub(lambda m: _UNESCAPED[m.group(1)], text)


def write_results(results: Iterable[Result], fmt: str, out: TextIO) -> None:
    """Write ``results`` to ``out`` in ``fmt`` (one of :data:`FORMATS`), flushing after each one (a
    long run's output can be followed while it is written)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown result format {fmt!r}; expected one of {FORMATS}")
    for r in results:
        if fmt == "jsonl":
            out.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
        elif r.error is not None:
            continue
        elif fmt == "tsv":
            out.write(f"{r.key}\t{escape(r.text)}\n")
        else:
            out.write(r.text + "\n")
        out.flush()


def parse_record(line: str) -> dict | None:
    """The record of one line of a jsonl or tsv result file (tsv: ``{"key", "text"}``); None for a line
    that is neither (blank, or cut off by an interruption)."""
    line = line.removesuffix("\n").removesuffix("\r")
    if not line.strip():
        return None
    if line.lstrip().startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and "key" in record:
            return record
        # else perhaps a tsv line whose key starts with "{"; a cut JSON line has no tab (JSON escapes it)
    if "\t" not in line:
        return None
    key, text = line.split("\t", 1)
    return {"key": key, "text": unescape(text)}


def read_records(path: PathLike) -> list[dict]:
    """The records of a jsonl or tsv result file (lines may mix both), in file order. Unreadable lines are
    skipped, and so is a last line without its newline: an interrupted writer left it incomplete."""
    # only "\n" ends a line: files of earlier versions hold raw carriage returns inside tsv texts
    with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
        lines = f.readlines()
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    return [record for record in map(parse_record, lines) if record is not None]


def result_from_record(record: dict) -> Result:
    """A :class:`Result` from a record read back (the inverse of ``Result.to_dict``; a tsv record has
    only key and text, so audio and task are empty)."""
    values = {k: v for k, v in record.items() if k in Result.__dataclass_fields__}
    values.setdefault("audio", "")
    values.setdefault("task", "")
    return Result(**values)


def iter_key_text(path: PathLike, *, escaped: bool = False) -> Iterator[tuple[int, str, str]]:
    """``(line number, key, value)`` for every non-blank line of a key-text table (see the module
    docstring); ``escaped``: the values are tsv-escaped (:func:`unescape` is applied after stripping)."""
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            match = _KEY_TEXT_RE.fullmatch(line.rstrip("\r\n"))
            if match is None:  # blank line
                continue
            value = (match.group(2) or "").strip()
            yield lineno, match.group(1), unescape(value) if escaped else value


def read_key_text(path: PathLike, *, escaped: bool = False) -> dict[str, str]:
    """A key-text table as an ordered ``key -> value`` dict; a repeated key keeps its last value."""
    return {key: value for _, key, value in iter_key_text(path, escaped=escaped)}
