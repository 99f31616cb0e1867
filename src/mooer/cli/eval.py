"""``mooer eval``: score transcripts (CER/WER) or translations (BLEU/chrF) against references.

Thin layer over :mod:`mooer.evaluation`: read the files, call :func:`mooer.evaluation.evaluate`, print.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mooer.evaluation import (
    METRICS,
    MISSING_POLICIES,
    SCORED_TASKS,
    EvaluationError,
    evaluate,
    read_hypotheses,
    read_references,
    resolve_metric,
)
from mooer.inference.hotwords import HotwordError, hotword_phrases, read_hotwords_file

DESCRIPTION = """\
Score hypotheses against references.

cer (default for asr) is the official MooER scorer, compute-wer.py --char=1: CJK characters and ASCII
words are the tokens, case is folded, <tags> are removed, ASCII punctuation attached to a word stays in
it, counts are pooled over the corpus. MooER reports it for every test set (CER for Chinese, "WER" for
English). wer is the same scorer on whitespace-separated words. bleu (default for ast) is sacreBLEU corpus
BLEU (13a, case-sensitive) and chrF, printed with their signatures.

--normalize (cer/wer only, not official) first applies NFKC, drops <tags>, deletes apostrophes, turns all
other punctuation/symbols into spaces and upper-cases.

Reference utterances without a hypothesis (absent, or failed in the transcribe jsonl) are ignored by
default, as the official scorer does; they are always counted in the report.

--hotwords FILE (the phrase list given to `mooer transcribe --hotwords-file`) adds hotword scores: recall
(listed phrases in the reference that the hypothesis writes), false alarms (listed phrases the hypothesis
writes although the reference does not have them; rate per listed phrase not spoken, and the utterances
with any) and precision. Phrases are matched case-folded (unless --case-sensitive), whole words for Latin
script. --hotword-baseline HYP (a decoding without hotwords) adds the recall of the spoken phrases it missed.
"""

EPILOG = """\
inputs:
  REF  key-text file ("key text" per line, e.g. a Kaldi `text`) or manifest .jsonl
       ({"id", "audio", "text", "translation"}; --task asr uses text, ast uses translation)
  HYP  key-text file, .tsv from `mooer transcribe` (escaped newlines), or its .jsonl
       (fields key/text, multitask asr/ast; records with "error" count as failed)

examples:
  mooer eval --ref data/test/text --hyp decode/test/text
  mooer eval --ref test.jsonl --hyp hyp.jsonl --task asr --details > wer.txt
  mooer eval --ref test.jsonl --hyp hyp.jsonl --task ast --json bleu.json
  mooer eval --ref en_test/text --hyp out.tsv --metric wer --normalize --missing deletion
  mooer eval --ref test.jsonl --hyp hyp.jsonl --json -        # JSON only, on stdout
  mooer eval --ref test/text --hyp hw.jsonl --hotwords terms.txt --hotword-baseline plain.jsonl

exit status: 0 on success, 1 when an input is unusable (or --missing error finds a missing hypothesis).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``eval`` subcommand on ``subparsers`` (``func`` is :func:`run`)."""
    parser = subparsers.add_parser(
        "eval",
        help="score hypotheses: CER/WER (official compute-wer), BLEU/chrF",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ref", required=True, type=Path, metavar="REF", help="references (key-text or manifest .jsonl)")
    parser.add_argument("--hyp", required=True, type=Path, metavar="HYP", help="hypotheses (key-text, .tsv or .jsonl)")
    parser.add_argument("--task", choices=SCORED_TASKS, default=None,
                        help="which text to score: asr transcript or ast translation "
                             "(default: ast for --metric bleu, else asr)")
    parser.add_argument("--metric", choices=METRICS, default="auto",
                        help="cer (char mode, official), wer (word mode), bleu (BLEU + chrF); "
                             "auto = bleu for --task ast, else cer (default: auto)")
    parser.add_argument("--normalize", action="store_true",
                        help="normalised cer/wer (NFKC, no punctuation, folded case); not the official numbers")
    parser.add_argument("--case-sensitive", action="store_true", help="do not fold case (cer/wer; --cs=1)")
    parser.add_argument("--missing", choices=MISSING_POLICIES, default="ignore",
                        help="reference utterances without a hypothesis: ignore (official), "
                             "score as deletions, or fail (default: ignore)")
    parser.add_argument("--details", action="store_true",
                        help="per-utterance blocks (official --v=1 layout for cer/wer)")
    parser.add_argument("--json", metavar="OUT.json", default=None,
                        help="also write the full report (summary + per-utterance) as JSON; '-' = stdout only")
    parser.add_argument("--hotwords", type=Path, metavar="FILE", default=None,
                        help="score this phrase list too (one phrase per line, optional <TAB>weight, ignored): "
                             "hotword recall, false alarms, precision")
    parser.add_argument("--hotword-baseline", type=Path, metavar="HYP", default=None,
                        help="with --hotwords: hypotheses decoded without them; adds the recall of the spoken "
                             "phrases they missed")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``mooer eval``; return the exit status."""
    task = args.task or ("ast" if args.metric == "bleu" else "asr")
    try:
        metric = resolve_metric(args.metric, task)
        refs = read_references(args.ref, task)
        hyps = read_hypotheses(args.hyp, task)
        if args.hotword_baseline is not None and args.hotwords is None:
            raise EvaluationError("--hotword-baseline needs --hotwords")
        phrases = hotword_phrases(read_hotwords_file(args.hotwords)) if args.hotwords is not None else None
        baseline = read_hypotheses(args.hotword_baseline, task).texts if args.hotword_baseline is not None else None
        report = evaluate(refs, hyps.texts, metric=metric, normalize=args.normalize,
                          case_sensitive=args.case_sensitive, missing=args.missing, failed=hyps.failed,
                          hotwords=phrases, baseline=baseline)
    except (EvaluationError, HotwordError, OSError, UnicodeDecodeError) as exc:
        print(f"mooer eval: error: {exc}", file=sys.stderr)
        return 1
    if args.json == "-":
        sys.stdout.write(report.to_json() + "\n")
        return 0
    sys.stdout.write(report.to_text(details=args.details))
    if args.json:
        try:
            Path(args.json).write_text(report.to_json() + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"mooer eval: error: cannot write {args.json}: {exc}", file=sys.stderr)
            return 1
    return 0
