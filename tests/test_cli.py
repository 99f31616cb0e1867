"""The ``mooer`` command line: the issue's acceptance command, formats, and per-input errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from fixtures_path import AUDIO, OFFICIAL_TINY
from mooer.cli import main

MODEL = ["--model", str(OFFICIAL_TINY)]


def expected(ref_json, clip, task, run="beam"):
    return ref_json["clips"][clip]["tasks"][task][run]["text"]


def test_acceptance_command_prints_reference_text(ref_json):
    """`mooer transcribe demo.wav --model official-tiny --variant asr_ast_mtl --task ast`, as a process."""
    out = subprocess.run(
        [sys.executable, "-m", "mooer.cli", "transcribe", str(AUDIO / "demo.wav"), *MODEL,
         "--variant", "asr_ast_mtl", "--task", "ast"],
        capture_output=True, text=True, check=True)
    assert out.stdout == expected(ref_json, "demo", "ast") + "\n"


def test_translate_is_task_ast_and_greedy_preset(capsys, ref_json):
    assert main(["translate", str(AUDIO / "en1.wav"), *MODEL, "--preset", "greedy"]) == 0
    assert capsys.readouterr().out == expected(ref_json, "en1", "ast", "greedy") + "\n"


def test_formats_scp_and_bad_inputs(tmp_path, capsys, ref_json):
    bad = tmp_path / "broken.wav"
    bad.write_text("not audio")
    scp = tmp_path / "wav.scp"
    scp.write_text(f"zh1 {AUDIO / 'zh1.wav'}\nmissing {tmp_path / 'missing.wav'}\n\n")
    out = tmp_path / "hyp.jsonl"
    code = main(["transcribe", str(AUDIO / "short.wav"), str(bad), "--scp", str(scp), *MODEL, "--task", "asr",
                 "--format", "jsonl", "--output", str(out), "--batch-size", "2"])
    assert code == 1  # failures are reported at the end with a non-zero exit
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["key"] for r in rows] == ["short", "broken", "zh1", "missing"]  # input order
    assert rows[0]["text"] == expected(ref_json, "short", "asr") and rows[0]["task"] == "asr"
    assert rows[2]["text"] == expected(ref_json, "zh1", "asr")
    assert "broken.wav" in rows[1]["error"] and "missing.wav" in rows[3]["error"]
    assert "text" not in rows[1] or rows[1]["text"] == ""
    err = capsys.readouterr().err
    assert "2 of 4 inputs failed" in err


def test_tsv_escapes_newlines_and_directory_input(tmp_path, capsys, ref_json):
    d = tmp_path / "audio"
    (d / "sub").mkdir(parents=True)
    shutil.copy(AUDIO / "zh2.wav", d / "sub" / "b.wav")
    shutil.copy(AUDIO / "en1.wav", d / "a.wav")
    assert main(["transcribe", str(d), *MODEL, "--task", "asr_ast", "--format", "tsv", "--beams", "1",
                 "--max-new-tokens", "20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["a", "sub_b"]
    assert all(line.count("\t") == 1 for line in lines)


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["transcribe", "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "--preset" in text and "--variant" in text


def test_no_input_is_a_usage_error(capsys):
    assert main(["transcribe", *MODEL]) == 2
    assert "no input" in capsys.readouterr().err


def test_convert_then_transcribe(tmp_path, capsys, ref_json):
    assert main(["convert", str(OFFICIAL_TINY), str(tmp_path / "conv")]) == 0
    capsys.readouterr()
    assert main(["transcribe", str(AUDIO / "zh1.wav"), "--model", str(tmp_path / "conv"), "--task", "ast"]) == 0
    assert capsys.readouterr().out == expected(ref_json, "zh1", "ast") + "\n"


def test_write_results_escapes_multitask_newline():
    import io

    from mooer.cli.transcribe import write_results
    from mooer.decoding import Result

    r = Result(key="k", audio="k.wav", task="asr_ast", text="你好\nhello\tthere", asr="你好", ast="hello")
    buf = io.StringIO()
    write_results([r], "tsv", buf)
    assert buf.getvalue() == "k\t你好\\nhello\\tthere\n"  # the tab escaped too: read back exactly
    buf = io.StringIO()
    write_results([r], "jsonl", buf)
    row = json.loads(buf.getvalue())
    assert row["asr"] == "你好" and row["ast"] == "hello" and row["text"] == "你好\nhello\tthere"


def test_subtitle_files_through_the_subtitles_writer(tmp_path, capsys):
    from mooer.cli.transcribe import write_subtitle_files
    from mooer.decoding import Result

    long = Result(key="long", audio="long.wav", task="asr_ast", text="你好\nhello. 再见\nbye.", duration=9.0,
                  segments=[{"start": 0.5, "end": 2.0, "text": "你好 \n hello.", "asr": "你好", "ast": "hello."},
                            {"start": 4.0, "end": 6.25, "text": "再见\nbye.", "asr": "再见", "ast": "bye."}])
    short = Result(key="short", audio="short.wav", task="asr", text="a < b", duration=1.5)
    failed = Result(key="bad", audio="bad.wav", task="asr", error="AudioError: cannot decode")
    write_subtitle_files([long, short, failed], "srt", str(tmp_path / "subs"), several=True)
    assert sorted(p.name for p in (tmp_path / "subs").iterdir()) == ["long.srt", "short.srt"]
    assert (tmp_path / "subs" / "long.srt").read_text(encoding="utf-8") == (
        "1\n00:00:00,500 --> 00:00:02,000\n你好\nhello.\n\n2\n00:00:04,000 --> 00:00:06,250\n再见\nbye.\n")
    write_subtitle_files([short], "vtt", None, several=False)
    assert capsys.readouterr().out == "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\na &lt; b\n"
