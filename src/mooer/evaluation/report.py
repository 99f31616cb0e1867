"""One entry point for every metric, and the report it returns (text and JSON).

Metrics:

- ``cer``: the official scorer, char mode (``compute-wer.py --char=1``): CJK characters and ASCII words
  are the tokens. This is what MooER's ``inference.sh`` runs for **every** test set, so it is the number
  the README reports both as CER (Chinese) and as WER (English).
- ``wer``: the same scorer in word mode (tokens split on whitespace).
- ``bleu``: sacreBLEU corpus BLEU (13a, case-sensitive) and chrF, with their signatures.
- ``auto``: ``bleu`` for the ``ast`` task, ``cer`` otherwise.

``normalize=True`` selects the documented normalised mode of :mod:`mooer.evaluation.wer` (cer/wer only).
Given a phrase list, every metric's report also carries the hotword scores of
:mod:`mooer.evaluation.hotwords` (recall, false alarms, and what biasing recovered against a baseline).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Union, get_args

from mooer.evaluation.bleu import BleuResult, score_bleu
from mooer.evaluation.hotwords import HotwordScore, score_hotwords
from mooer.evaluation.io import Task, check_task
from mooer.evaluation.pairing import EvaluationError, MissingPolicy, Pairing
from mooer.evaluation.wer import WerResult, score_wer

Metric = Literal["cer", "wer", "bleu", "auto"]
METRICS: tuple[str, ...] = get_args(Metric)


def resolve_metric(metric: Metric, task: Task | None) -> str:
    """The concrete metric for ``metric`` (``auto``: ``bleu`` for task ``ast``, else ``cer``)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    if metric != "auto":
        return metric
    return "bleu" if task is not None and check_task(task) == "ast" else "cer"


@dataclass(frozen=True)
class EvalReport:
    """The outcome of :func:`evaluate`: headline numbers, per-utterance details and bookkeeping."""

    metric: str
    #: options in effect (tokenisation mode, normalisation, case, missing policy, ...)
    options: dict[str, object]
    #: headline numbers: pooled counts and rate (cer/wer) or BLEU/chrF and signatures (bleu)
    summary: dict[str, object]
    #: utterance bookkeeping: references, scored, missing, failed, extra, missing_policy
    counts: dict[str, object]
    #: one dict per scored utterance, in reference order
    utterances: tuple[dict[str, object], ...]
    #: the scorer's own result (for the official text layout and alignments)
    result: Union[WerResult, BleuResult] = field(repr=False)
    #: hotword recall and false alarms, when a phrase list was given
    hotwords: HotwordScore | None = field(default=None, repr=False)

    @property
    def pairing(self) -> Pairing:
        return self.result.pairing

    @property
    def score(self) -> float:
        """The headline number: the error rate in % (cer/wer) or BLEU."""
        return self.result.rate if isinstance(self.result, WerResult) else self.result.bleu

    def to_text(self, details: bool = False) -> str:
        """Human-readable report.

        For cer/wer this is the official scorer's output (``--v=0``; with ``details`` the ``--v=1`` layout
        with per-utterance alignments and cluster lines), followed by one bookkeeping line.
        """
        if isinstance(self.result, WerResult):
            body = self.result.format_official(verbose=details)
        else:
            body = self.result.format(verbose=details)
        if self.hotwords is not None:
            body += self.hotwords.format()
        return body + self.pairing.describe() + "\n"

    def to_dict(self) -> dict[str, object]:
        pairing = self.pairing
        return {
            "metric": self.metric,
            "options": self.options,
            "summary": self.summary,
            "counts": self.counts,
            "missing_keys": list(pairing.missing),
            "failed_keys": list(pairing.failed),
            "extra_keys": list(pairing.extra),
            "utterances": list(self.utterances),
            **({"hotwords": self.hotwords.to_dict()} if self.hotwords is not None else {}),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)


def evaluate(
    refs: Mapping[str, str],
    hyps: Mapping[str, str],
    *,
    metric: Metric = "auto",
    task: Task | None = None,
    normalize: bool = False,
    case_sensitive: bool = False,
    missing: MissingPolicy = "ignore",
    failed: Collection[str] = (),
    hotwords: Sequence[str] | None = None,
    baseline: Mapping[str, str] | None = None,
) -> EvalReport:
    """Score ``hyps`` against ``refs`` (``key -> text``) with one metric and return a report.

    ``task`` only matters for ``metric="auto"``. ``missing``/``failed``: see
    :mod:`mooer.evaluation.pairing`. ``normalize`` and ``case_sensitive`` apply to cer/wer; BLEU always
    uses sacreBLEU's defaults (case-sensitive). ``hotwords``: a phrase list to score
    (:mod:`mooer.evaluation.hotwords`; case folded unless ``case_sensitive``), with ``baseline`` the
    hypotheses of a decoding without it.
    """
    report = _evaluate(refs, hyps, metric=metric, task=task, normalize=normalize, case_sensitive=case_sensitive,
                       missing=missing, failed=failed)
    if hotwords is None:
        if baseline is not None:
            raise EvaluationError("a hotword baseline needs a hotword list")
        return report
    score = score_hotwords(report.pairing, hotwords, baseline=baseline, case_sensitive=case_sensitive)
    return replace(report, hotwords=score)


def _evaluate(refs, hyps, *, metric, task, normalize, case_sensitive, missing, failed) -> EvalReport:
    name = resolve_metric(metric, task)
    if name == "bleu":
        if normalize or case_sensitive:
            raise EvaluationError("normalize/case_sensitive apply to cer and wer only; BLEU uses sacreBLEU defaults")
        bleu = score_bleu(refs, hyps, missing=missing, failed=failed)
        return EvalReport(
            metric=name,
            options={"tokenize": "13a", "case_sensitive": True, "missing": missing},
            summary=bleu.summary(),
            counts=bleu.pairing.counts(),
            utterances=tuple(u.to_dict() for u in bleu.utterances),
            result=bleu,
        )
    wer = score_wer(refs, hyps, mode="char" if name == "cer" else "word", case_sensitive=case_sensitive,
                    normalize=normalize, missing=missing, failed=failed)
    opts = wer.options
    summary: dict[str, object] = {**wer.overall.to_dict(),
                                  "clusters": {k: v.to_dict() for k, v in wer.clusters.items()}}
    return EvalReport(
        metric=name,
        options={"mode": opts.mode, "normalize": opts.normalize, "case_sensitive": opts.case_sensitive and not opts.normalize,
                 "remove_tags": opts.remove_tags, "missing": missing, "description": opts.describe()},
        summary=summary,
        counts=wer.pairing.counts(),
        utterances=tuple(u.to_dict() for u in wer.utterances),
        result=wer,
    )
