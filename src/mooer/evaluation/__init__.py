"""Evaluation: CER/WER compatible with the official ``compute-wer.py``, a normalised mode, BLEU/chrF.

Typical use::

    from mooer.evaluation import evaluate, read_references, read_hypotheses

    refs = read_references("test/text")                 # or a manifest .jsonl
    hyps = read_hypotheses("decode/test.jsonl")         # key-text, .tsv or `mooer transcribe` jsonl
    report = evaluate(refs, hyps.texts, metric="cer", failed=hyps.failed)
    print(report.to_text())                             # "Overall -> 4.21 % N=... C=... S=... D=... I=..."

Modules: :mod:`~mooer.evaluation.wer` (tokenisation, alignment, official output),
:mod:`~mooer.evaluation.bleu` (sacreBLEU), :mod:`~mooer.evaluation.io` (readers),
:mod:`~mooer.evaluation.pairing` (missing-hypothesis policy), :mod:`~mooer.evaluation.hotwords` (hotword
recall and false alarms), :mod:`~mooer.evaluation.report` (:func:`evaluate` and :class:`EvalReport`).
"""

from mooer.evaluation.bleu import BleuResult, SentenceScore, score_bleu
from mooer.evaluation.hotwords import HotwordScore, phrase_in, phrase_pattern, score_hotwords
from mooer.evaluation.io import (
    REFERENCE_FIELDS,
    SCORED_TASKS,
    Hypotheses,
    Task,
    read_hypotheses,
    read_references,
    reference_field,
    split_multitask,
    task_text,
)
from mooer.evaluation.pairing import (
    MISSING_POLICIES,
    EvaluationError,
    MissingPolicy,
    Pair,
    Pairing,
    pair_utterances,
)
from mooer.evaluation.report import METRICS, EvalReport, Metric, evaluate, resolve_metric
from mooer.evaluation.wer import (
    Alignment,
    ErrorCounts,
    TokenizerOptions,
    UtteranceScore,
    WerResult,
    align,
    characterize,
    normalize_text,
    score_wer,
    strip_tags,
    token_cluster,
)
from mooer.output.formats import read_key_text, unescape  # the readers of key-text and tsv files

__all__ = [
    "Alignment",
    "BleuResult",
    "ErrorCounts",
    "EvalReport",
    "EvaluationError",
    "HotwordScore",
    "Hypotheses",
    "METRICS",
    "MISSING_POLICIES",
    "Metric",
    "MissingPolicy",
    "Pair",
    "Pairing",
    "REFERENCE_FIELDS",
    "SentenceScore",
    "SCORED_TASKS",
    "Task",
    "TokenizerOptions",
    "UtteranceScore",
    "WerResult",
    "align",
    "characterize",
    "evaluate",
    "normalize_text",
    "pair_utterances",
    "phrase_in",
    "phrase_pattern",
    "read_hypotheses",
    "read_key_text",
    "read_references",
    "reference_field",
    "resolve_metric",
    "score_bleu",
    "score_hotwords",
    "score_wer",
    "split_multitask",
    "strip_tags",
    "task_text",
    "token_cluster",
    "unescape",
]
