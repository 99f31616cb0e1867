"""Result files (``mooer.output.formats``): tsv and jsonl give every text back exactly; key-text tables."""

from __future__ import annotations

import io

import pytest

from mooer.decoding import Result
from mooer.output.formats import (
    escape,
    iter_key_text,
    parse_record,
    read_key_text,
    read_records,
    result_from_record,
    unescape,
    write_results,
)

# each one breaks a naive codec: a backslash before "n"/"t" (decoded as an escape when escapes are undone
# one after another), a trailing backslash, doubled backslashes, the characters that end a tsv field or line
TEXTS = [
    "",
    "plain",
    r"path C:\new\table",
    "ends with a backslash \\",
    "\\",
    r"\\n is not a newline, \\\t not a tab",
    "line one\nline two",
    "tab\tinside\tthe text",
    "carriage\rreturn and crlf\r\n",
    "\n\t\r\\",
    "你好，世界\n Hello world",
    "emoji 🎉👩‍👩‍👧 and 𝄞",
    "\u2028line separator\u2029 \x0b\x0c \x85",
]


@pytest.mark.parametrize("text", TEXTS)
def test_escape_is_one_line_and_undone_exactly(text):
    escaped = escape(text)
    assert not set(escaped) & {"\n", "\t", "\r"}
    assert unescape(escaped) == text


def test_unescape_leaves_unknown_and_trailing_backslashes():
    assert unescape(r"a\xb\ ") == r"a\xb\ "
    assert unescape("end\\") == "end\\"
    assert unescape(r"C:\\new") == r"C:\new"  # the --resume bug: this came back as "C:" + newline + "ew"
    assert escape("a\\nb\tc") == r"a\\nb\tc"


def _results():
    out = [Result(key=f"u{i}", audio=f"/a/u{i}.wav", task="asr", text=t, duration=1.25)
           for i, t in enumerate(TEXTS)]
    out.append(Result(key="multi", audio="m.wav", task="asr_ast", text="你好\nhello", asr="你好", ast="hello",
                      segments=[{"start": 0.0, "end": 1.0, "text": "你好\nhello", "asr": "你好", "ast": "hello"}],
                      notes=["long input"]))
    out.append(Result(key="bad", audio="bad.wav", task="asr", error="AudioError: bad.wav: cannot decode"))
    return out


def _write(tmp_path, fmt, results):
    path = tmp_path / f"out.{fmt}"
    with open(path, "w", encoding="utf-8") as f:
        write_results(results, fmt, f)
    return path


def test_tsv_round_trip(tmp_path):
    results = _results()
    path = _write(tmp_path, "tsv", results)
    assert len(path.read_bytes().split(b"\n")) == len(results)  # one line per successful result
    records = read_records(path)
    assert [r["key"] for r in records] == [r.key for r in results if r.ok]  # the failed one is left out
    assert [r["text"] for r in records] == [r.text for r in results if r.ok]


def test_jsonl_round_trip(tmp_path):
    results = _results()
    path = _write(tmp_path, "jsonl", results)
    assert [result_from_record(r) for r in read_records(path)] == results  # failed one included


def test_text_format_and_unknown_format():
    buf = io.StringIO()
    write_results(_results()[-3:], "text", buf)
    assert buf.getvalue() == TEXTS[-1] + "\n你好\nhello\n"  # multitask keeps its newline; no failed result
    with pytest.raises(ValueError, match="unknown result format 'csv'"):
        write_results([], "csv", buf)


def test_read_records_of_older_and_interrupted_files(tmp_path):
    path = tmp_path / "mixed"
    # earlier versions: tab written as a space, carriage return left raw (only "\n" ends a line)
    path.write_bytes("a\tx y\rz\\\\n\n"
                     '{"key": "b", "text": "j"}\n'
                     "{c\tkey starts with a brace\r\n"
                     "\n"
                     "no tab here\n"
                     '{"key": "d", "te'.encode("utf-8"))  # cut by an interruption
    assert read_records(path) == [{"key": "a", "text": "x y\rz\\n"}, {"key": "b", "text": "j"},
                                  {"key": "{c", "text": "key starts with a brace"}]
    assert parse_record('{"key": "d", "text": "complete"}') == {"key": "d", "text": "complete"}
    assert parse_record("[1, 2]") is None


def test_key_text_reader(tmp_path):
    path = tmp_path / "text"
    path.write_bytes("\ufeffu1 你好 世界\r\nu2\tHELLO  THERE \n\n   \nu3\nu4 \nu1  again\tand\\n more\n".encode())
    assert list(iter_key_text(path)) == [(1, "u1", "你好 世界"), (2, "u2", "HELLO  THERE"), (5, "u3", ""),
                                         (6, "u4", ""), (7, "u1", "again\tand\\n more")]
    assert read_key_text(path) == {"u1": "again\tand\\n more", "u2": "HELLO  THERE", "u3": "", "u4": ""}
    assert read_key_text(path, escaped=True)["u1"] == "again\tand\n more"
