"""Tests of mooer.evaluation and `mooer eval`: expected values are derived by hand from the official
compute-wer.py rules (spec section 12)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from sacrebleu.metrics import BLEU, CHRF

from mooer.cli import eval as eval_cli
from mooer.evaluation import (
    ErrorCounts,
    EvaluationError,
    align,
    characterize,
    evaluate,
    normalize_text,
    pair_utterances,
    read_hypotheses,
    read_key_text,
    read_references,
    score_bleu,
    score_wer,
    task_text,
    token_cluster,
    unescape,
)
from mooer.evaluation.wer import TokenizerOptions

COMPAT = TokenizerOptions()


def counts(ref: str, hyp: str, **options) -> ErrorCounts:
    return score_wer({"u": ref}, {"u": hyp}, **options).overall


# ------------------------------------------------------------------------------------------------
# char-mode tokenisation (spec 12.1)


def test_chinese_characters_are_single_tokens():
    assert characterize("你好世界") == ["你", "好", "世", "界"]


def test_ascii_runs_are_word_tokens_and_numbers_stay_whole():
    assert characterize("HELLO WORLD 2024") == ["HELLO", "WORLD", "2024"]
    # an ASCII run ends at the first code point >= 128: mixed text splits at the script boundary
    assert characterize("MOOER模型V2") == ["MOOER", "模", "型", "V2"]


def test_attached_ascii_punctuation_stays_in_the_token():
    assert COMPAT.tokenize("hello, world.") == ["HELLO,", "WORLD."]
    assert counts("WORLD.", "WORLD") == ErrorCounts(n=1, c=0, s=1, d=0, i=0)


def test_full_width_punctuation_is_dropped():
    assert characterize("你好，世界！「测试」。") == ["你", "好", "世", "界", "测", "试"]
    assert counts("你好，世界。", "你好世界") == ErrorCounts(n=4, c=4)


def test_listed_punctuation_is_skipped_only_at_a_token_start():
    # '!' and ',' start a token -> skipped; inside an ASCII run they stay
    assert characterize("!HELLO ,WORLD A,B") == ["HELLO", "WORLD", "A,B"]
    # '.' is not in the list: at a token start it begins a run
    assert characterize(".NET") == [".NET"]


def test_other_non_ascii_symbols_split_runs():
    assert characterize("“quoted” café") == ["“quoted", "”", "caf", "é"]


def test_case_folding_and_case_sensitive_option():
    assert counts("Hello World", "HELLO world") == ErrorCounts(n=2, c=2)
    assert counts("Hello World", "HELLO world", case_sensitive=True) == ErrorCounts(n=2, c=0, s=2)


def test_tags_are_removed_and_split_at_closing_bracket():
    assert characterize("<unk><noise>你好") == ["<unk>", "<noise>", "你", "好"]
    assert COMPAT.tokenize("<unk><noise>你好 A<sil>B") == ["你", "好", "AB"]
    assert TokenizerOptions(remove_tags=False).tokenize("<unk>你") == ["<UNK>", "你"]


def test_word_mode_splits_on_whitespace_only():
    assert TokenizerOptions(mode="word").tokenize("你好 世界 hello") == ["你好", "世界", "HELLO"]
    assert score_wer({"u": "你好 世界"}, {"u": "你好 世介"}, mode="word").overall == ErrorCounts(n=2, c=1, s=1)


# ------------------------------------------------------------------------------------------------
# alignment and counting (spec 12.2)


def test_tie_break_prefers_deletion_then_insertion_over_diagonal():
    # "A B" -> "B A": two substitutions and "delete A, keep B, insert A" both cost 2. At cell (2,2) the
    # deletion (cost 2) is taken before the equal-cost diagonal, then (1,2) matches A=A, then (0,1) is
    # an insertion of B: C=1 D=1 I=1, S=0 (a diagonal-first scorer would report S=2).
    a = align(["A", "B"], ["B", "A"])
    assert a.ops == ("ins", "cor", "del")
    assert a.counts == ErrorCounts(n=2, c=1, s=0, d=1, i=1)
    assert counts("A B", "B A") == ErrorCounts(n=2, c=1, s=0, d=1, i=1)


def test_tie_break_places_deletions_at_the_end():
    # (3,1) and (2,1) prefer deletion over the equal-cost substitution; (1,1) substitutes A->X.
    a = align(["A", "B", "C"], ["X"])
    assert a.ops == ("sub", "del", "del")
    assert a.ref == ("A", "B", "C") and a.hyp == ("X", "", "")


def test_insertion_only():
    a = align(["你", "好"], ["你", "们", "好"])
    assert a.ops == ("cor", "ins", "cor")
    assert counts("你好", "你们好") == ErrorCounts(n=2, c=2, i=1)
    assert counts("你好", "你们好").rate == pytest.approx(50.0)


def test_empty_hypothesis_is_all_deletions():
    assert counts("你好世界", "") == ErrorCounts(n=4, d=4)


def test_empty_reference_gives_rate_zero_like_the_official_script():
    c = counts("", "你好")
    assert c == ErrorCounts(n=0, i=2)
    assert c.rate == 0.0


def test_counts_are_pooled_over_the_corpus_not_averaged():
    refs = {"u1": "你好世界", "u2": "A", "u3": ""}
    hyps = {"u1": "你好", "u2": "A", "u3": "多余"}
    result = score_wer(refs, hyps)
    assert [u.counts.rate for u in result.utterances] == [50.0, 0.0, 0.0]
    assert result.overall == ErrorCounts(n=5, c=3, s=0, d=2, i=2)
    assert result.rate == pytest.approx(80.0)  # (2 + 2) / 5, not the mean of the per-utterance rates
    assert result.overall_line() == "Overall -> 80.00 % N=5 C=3 S=0 D=2 I=2"


def test_missing_hypothesis_ignored_by_default_and_counted():
    refs = {"u1": "你好", "u2": "世界"}
    hyps = {"u1": "你好", "x9": "extra"}
    result = score_wer(refs, hyps)
    assert result.overall == ErrorCounts(n=2, c=2)
    assert result.pairing.missing == ("u2",)
    assert result.pairing.extra == ("x9",)
    assert [u.key for u in result.utterances] == ["u1"]


def test_missing_hypothesis_as_deletions():
    result = score_wer({"u1": "你好", "u2": "世界"}, {"u1": "你好"}, missing="deletion")
    assert result.overall == ErrorCounts(n=4, c=2, d=2)
    assert [u.missing for u in result.utterances] == [False, True]


def test_missing_hypothesis_error_names_the_key():
    with pytest.raises(EvaluationError, match="u2"):
        score_wer({"u1": "你好", "u2": "世界"}, {"u1": "你好"}, missing="error")
    with pytest.raises(ValueError):
        pair_utterances({}, {}, missing="skip")  # type: ignore[arg-type]


def test_failed_hypotheses_count_as_missing():
    pairing = pair_utterances({"u1": "a", "u2": "b"}, {"u1": "a", "u2": "b"}, failed=["u2"])
    assert [p.key for p in pairing.pairs] == ["u1"]
    assert pairing.missing == ("u2",) and pairing.failed == ("u2",)


def test_clusters_follow_the_official_classes():
    assert token_cluster("你") == "Mandarin"
    assert token_cluster("WORLD.") == "English"  # FULL STOP is ignored
    assert token_cluster("2024") == "Number"
    assert token_cluster("A1") == "Other"
    result = score_wer({"u": "你好 HELLO 12"}, {"u": "你 HELLO 13"})
    assert result.clusters["Mandarin"] == ErrorCounts(n=2, c=1, d=1)
    assert result.clusters["English"] == ErrorCounts(n=1, c=1)
    assert result.clusters["Number"] == ErrorCounts(n=1, s=1)


def test_official_verbose_layout():
    result = score_wer({"u1": "你好 HI", "u2": ""}, {"u1": "你 HI", "u2": ""})
    expected = (
        "\nutt: u1\nWER: 33.33 % N=3 C=2 S=0 D=1 I=0\n"
        "lab: 你 好 HI \n"
        "rec: 你    HI \n\n"  # the deleted 好 is two columns wide, padded with two spaces
        "\nutt: u2\nWER: 0.00 % N=0 C=0 S=0 D=0 I=0\n"
        + "=" * 74 + "\n\n"
        "Overall -> 33.33 % N=3 C=2 S=0 D=1 I=0\n"
        "Mandarin -> 50.00 % N=2 C=1 S=0 D=1 I=0\n"
        "English -> 0.00 % N=1 C=1 S=0 D=0 I=0\n"
        + "=" * 75 + "\n"
    )
    assert result.format_official(verbose=True) == expected
    assert result.format_official() == "Overall -> 33.33 % N=3 C=2 S=0 D=1 I=0\n\n"


# ------------------------------------------------------------------------------------------------
# normalised mode


def test_normalize_text_steps():
    assert normalize_text("Ｈｅｌｌｏ，ｗｏｒｌｄ！ Don't <unk> 3.5%  你好。") == "HELLO WORLD DONT 3 5 你好"


def test_normalised_mode_ignores_punctuation_width_and_case():
    assert counts("Hello, World!", "hello world") == ErrorCounts(n=2, s=2)
    assert counts("Hello, World!", "hello world", normalize=True) == ErrorCounts(n=2, c=2)
    # full-width letters are not Lo: compat mode makes one token per character
    assert counts("ＨＥＬＬＯ", "HELLO") == ErrorCounts(n=5, s=1, d=4)
    assert counts("ＨＥＬＬＯ", "hello", normalize=True, case_sensitive=True) == ErrorCounts(n=1, c=1)


# ------------------------------------------------------------------------------------------------
# BLEU / chrF


def test_bleu_equals_sacrebleu_and_reports_signatures():
    refs = {"a": "The signature is probably a forgery.", "b": "Authentication failure", "c": "unused"}
    hyps = {"a": "The signature is probably forged.", "b": "authentication failure"}
    result = score_bleu(refs, hyps)
    direct_bleu = BLEU().corpus_score([hyps["a"], hyps["b"]], [[refs["a"], refs["b"]]])
    direct_chrf = CHRF().corpus_score([hyps["a"], hyps["b"]], [[refs["a"], refs["b"]]])
    assert result.bleu == pytest.approx(direct_bleu.score)
    assert result.chrf == pytest.approx(direct_chrf.score)
    assert 0.0 < result.bleu < 100.0
    assert result.bleu_signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert "nc:6" in result.chrf_signature
    assert result.pairing.missing == ("c",)
    text = result.format()
    assert "BLEU signature: nrefs:1|case:mixed" in text and text.startswith("BLEU = ")


def test_bleu_missing_as_empty_translation_lowers_the_score():
    refs = {"a": "the cat sat on the mat", "b": "the dog ran in the park"}
    hyps = {"a": "the cat sat on the mat"}
    assert score_bleu(refs, hyps).bleu == pytest.approx(100.0)
    deleted = score_bleu(refs, hyps, missing="deletion")
    assert deleted.bleu == pytest.approx(BLEU().corpus_score([hyps["a"], ""], [list(refs.values())]).score)
    assert deleted.bleu < 100.0
    with pytest.raises(EvaluationError):
        score_bleu(refs, {})


# ------------------------------------------------------------------------------------------------
# readers


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_read_key_text_splits_once_and_keeps_empty_texts(tmp_path):
    p = write(tmp_path / "text", "\ufeffu1 你好 世界\nu2\tHELLO  THERE \nu3\n\n   \nu4 \n")
    assert read_key_text(p) == {"u1": "你好 世界", "u2": "HELLO  THERE", "u3": "", "u4": ""}


def test_tsv_newlines_are_unescaped_and_multitask_split(tmp_path):
    assert unescape(r"a\nb\\n\tc") == "a\nb\\n\tc"
    p = write(tmp_path / "hyp.tsv", "u1\t你好\\nHello\nu2\ta\\\\b\n")
    assert read_hypotheses(p, "asr").texts == {"u1": "你好", "u2": "a\\b"}
    assert read_hypotheses(p, "ast").texts["u1"] == "Hello"
    assert task_text("one line", "ast") == "one line"
    assert task_text(" a \nb\nc", "asr") == "a"  # split at the first newline, like mooer.prompting
    assert task_text(" a \nb\nc", "ast") == "b\nc"


def test_read_transcribe_jsonl_with_multitask_fields_and_errors(tmp_path):
    lines = [
        {"key": "u1", "text": "你好\nHello", "asr": "你好", "ast": "Hello"},
        {"key": "u2", "error": "AudioError: bad.wav: cannot decode"},
        {"key": "u3", "text": "只有文本"},
        {"key": "u4", "text": "甲\n乙"},
    ]
    p = write(tmp_path / "hyp.jsonl", "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n")
    asr = read_hypotheses(p, "asr")
    assert asr.texts == {"u1": "你好", "u3": "只有文本", "u4": "甲"}
    assert asr.failed == {"u2": "AudioError: bad.wav: cannot decode"}
    assert read_hypotheses(p, "ast").texts == {"u1": "Hello", "u3": "只有文本", "u4": "乙"}


def test_read_manifest_reference_field_per_task(tmp_path):
    lines = [{"id": "u1", "audio": "a.wav", "text": "你好", "translation": "Hello"},
             {"id": "u2", "audio": "b.wav", "text": "世界"}]
    p = write(tmp_path / "test.jsonl", "\n".join(json.dumps(x, ensure_ascii=False) for x in lines))
    assert read_references(p, "asr") == {"u1": "你好", "u2": "世界"}
    with pytest.raises(EvaluationError, match=r"test.jsonl:2.*u2.*translation"):
        read_references(p, "ast")
    bad = write(tmp_path / "bad.jsonl", "{not json}\n")
    with pytest.raises(EvaluationError, match="bad.jsonl:1"):
        read_references(bad)


# ------------------------------------------------------------------------------------------------
# report and CLI


def test_evaluate_report_text_and_json():
    report = evaluate({"u1": "你好世界", "u2": "再见"}, {"u1": "你好时间"}, metric="cer")
    assert report.metric == "cer" and report.score == pytest.approx(50.0)
    assert report.summary["s"] == 2 and report.summary["n"] == 4
    assert report.counts == {"references": 2, "scored": 1, "missing": 1, "missing_policy": "ignore",
                             "failed": 0, "extra": 0}
    text = report.to_text()
    assert text.startswith("Overall -> 50.00 % N=4 C=2 S=2 D=0 I=0\n")
    assert "Scored 1 of 2 reference utterances; missing hypotheses: 1 (ignored)" in text
    data = json.loads(report.to_json())
    assert data["missing_keys"] == ["u2"]
    assert data["utterances"][0]["alignment"][2] == ["sub", "世", "时"]
    assert evaluate({"u": "a b"}, {"u": "a b"}, metric="auto", task="ast").metric == "bleu"
    assert evaluate({"u": "a b"}, {"u": "a b"}).metric == "cer"


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mooer")
    eval_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_cer_end_to_end(tmp_path, capsys):
    ref = write(tmp_path / "text", "u1 你好，世界。\nu2 HELLO WORLD.\nu3 再见\n")
    hyp = write(tmp_path / "hyp.jsonl", "\n".join(json.dumps(x, ensure_ascii=False) for x in [
        {"key": "u1", "text": "你好世界"}, {"key": "u2", "text": "hello word"}, {"key": "u3", "error": "boom"}]))
    out_json = tmp_path / "report.json"
    rc = run_cli(["eval", "--ref", str(ref), "--hyp", str(hyp), "--details", "--json", str(out_json)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Overall -> 16.67 % N=6 C=5 S=1 D=0 I=0" in out  # WORLD. vs WORD: one sub; u3 failed, ignored
    assert "utt: u2" in out and "failed transcriptions: 1" in out
    data = json.loads(out_json.read_text(encoding="utf-8"))
    assert data["metric"] == "cer" and data["failed_keys"] == ["u3"] and data["summary"]["s"] == 1

    rc = run_cli(["eval", "--ref", str(ref), "--hyp", str(hyp), "--missing", "deletion", "--normalize",
                  "--json", "-"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["n"] == 8 and data["summary"]["d"] == 2 and data["summary"]["s"] == 1


def test_cli_bleu_and_errors(tmp_path, capsys):
    manifest = write(tmp_path / "m.jsonl", json.dumps(
        {"id": "u1", "audio": "a.wav", "text": "你好", "translation": "Hello there , friend"}))
    hyp = write(tmp_path / "hyp.jsonl", json.dumps({"key": "u1", "asr": "你好", "ast": "Hello there , friend"}))
    assert run_cli(["eval", "--ref", str(manifest), "--hyp", str(hyp), "--task", "ast"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("BLEU = 100.00") and "BLEU signature: nrefs:1|case:mixed" in out
    assert run_cli(["eval", "--ref", str(manifest), "--hyp", str(hyp), "--task", "asr"]) == 0
    assert capsys.readouterr().out.startswith("Overall -> 0.00 % N=2 C=2")

    empty = write(tmp_path / "empty.jsonl", "")
    assert run_cli(["eval", "--ref", str(manifest), "--hyp", str(empty), "--missing", "error"]) == 1
    assert "u1" in capsys.readouterr().err
    assert run_cli(["eval", "--ref", str(tmp_path / "nope"), "--hyp", str(hyp)]) == 1
