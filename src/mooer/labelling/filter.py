"""Keep the pseudo-labels worth training on: thresholds, or a target yield, over the labelling evidence.

Every utterance first passes the **hard checks** (rejected whatever the mode):

- ``error``: it could not be read or decoded;
- ``empty``: the label has no text;
- ``guard``: a teacher's output failed the repetition/hallucination guards (:mod:`mooer.inference.guards`:
  an n-gram loop, compression ratio > 2.4, too many tokens or characters for the audio, a refusal);
- ``rate``: the label's speaking rate is outside :attr:`Thresholds.char_rate` (Chinese characters per second)
  or :attr:`Thresholds.word_rate` (English words per second).

Then, **threshold mode** (the default) rejects an utterance when one signal is past its threshold:
``logprob`` (the label's mean token log-probability under ``min_mean_logprob``), ``min_logprob`` (its
least likely token under ``min_token_logprob``), ``ctc`` (the LLM transcript and the CTC head's greedy
transcript differ by more than ``max_ctc_cer`` %) and ``teachers`` (another teacher's transcript differs from
the label by more than ``max_teacher_cer`` %). A threshold of None is off; a signal the labelling did not
record (no CTC head, one teacher) is not checked.

**Target yield** (``keep_fraction``) instead ranks the utterances that pass the hard checks by a combined
score and keeps the best ``keep_fraction`` of *all* utterances (fewer when the hard checks rejected more).
The combined score is the mean, over the signals recorded, of each signal's rank percentile (higher log-probs
and lower disagreements rank higher); ranks need no units, so no signal dominates by its scale.

The defaults were set by looking at the demo model's labels of an unseen pool
(benchmarks/RESULTS_pseudo_label.md): together they keep 41 % of it, at 5.4 % errors against the pool's
13.7 %. A stronger teacher is more confident and agrees more, so its thresholds can be tighter.
"""

from __future__ import annotations

import collections
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

__all__ = ["Thresholds", "FilterResult", "label_of", "SIGNALS", "signal_value", "combined_scores", "apply_filter",
           "write_outputs"]


@dataclass(frozen=True)
class Thresholds:
    min_mean_logprob: Optional[float] = -0.5
    min_token_logprob: Optional[float] = None
    max_ctc_cer: Optional[float] = 25.0
    max_teacher_cer: Optional[float] = 25.0
    guard: bool = True
    char_rate: tuple[float, float] = (1.0, 12.0)  # Chinese characters per second
    word_rate: tuple[float, float] = (0.5, 6.0)  # English words per second


def label_of(record: dict) -> dict:
    """The evidence of the teacher whose transcript is the label (the first transcribing teacher)."""
    return next(t for t in record["teachers"] if "text" in t)


#: signals a record may carry, each oriented so that higher is better
SIGNALS: dict[str, Callable[[dict], Optional[float]]] = {
    "mean_logprob": lambda r: label_of(r).get("mean_logprob"),
    "min_logprob": lambda r: label_of(r).get("min_logprob"),
    "ctc_agreement": lambda r: None if label_of(r).get("ctc_cer") is None else -label_of(r)["ctc_cer"],
    "teacher_agreement": lambda r: None if r.get("teacher_cer") is None else -r["teacher_cer"],
}


def signal_value(record: dict, name: str) -> Optional[float]:
    """One signal of a labelled record (higher = better), None when the record has no such evidence."""
    if "error" in record or "teachers" not in record:
        return None
    return SIGNALS[name](record)


def _hard_reasons(record: dict, t: Thresholds) -> list[str]:
    if "error" in record:
        return [f"error: {record['error']}"]
    if not record.get("text", "").strip():
        return ["empty: no text"]
    reasons = []
    if t.guard:
        for teacher in record["teachers"]:
            if not teacher.get("guard_ok", True):
                reasons.append(f"guard: {teacher['name']}: {'; '.join(teacher['guard_reasons'])}")
    label = label_of(record)
    rate, unit = label.get("rate"), label.get("rate_unit")
    if rate is not None:
        low, high = t.char_rate if unit == "char" else t.word_rate
        if not low <= rate <= high:
            reasons.append(f"rate: {rate} {unit}s/s outside [{low}, {high}]")
    return reasons


def _threshold_reasons(record: dict, t: Thresholds) -> list[str]:
    label = label_of(record)
    reasons = []
    mean, low = label.get("mean_logprob"), label.get("min_logprob")
    if t.min_mean_logprob is not None and mean is not None and mean < t.min_mean_logprob:
        reasons.append(f"logprob: mean {mean} < {t.min_mean_logprob}")
    if t.min_token_logprob is not None and low is not None and low < t.min_token_logprob:
        reasons.append(f"min_logprob: {low} < {t.min_token_logprob}")
    ctc = label.get("ctc_cer")
    if t.max_ctc_cer is not None and ctc is not None and ctc > t.max_ctc_cer:
        reasons.append(f"ctc: LLM and CTC head differ by {ctc} % > {t.max_ctc_cer} %")
    teachers = record.get("teacher_cer")
    if t.max_teacher_cer is not None and teachers is not None and teachers > t.max_teacher_cer:
        reasons.append(f"teachers: differ by {teachers} % > {t.max_teacher_cer} %")
    return reasons


def _percentiles(values: Sequence[float]) -> list[float]:
    """Rank of each value in (0, 1], ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j + 2) / 2 / len(values)
        i = j + 1
    return ranks


def combined_scores(records: Sequence[dict]) -> list[float]:
    """The combined score of each record (module docstring); -inf for a record with no signal at all."""
    totals = [0.0] * len(records)
    counts = [0] * len(records)
    for name in SIGNALS:
        present = [(i, v) for i, r in enumerate(records) if (v := signal_value(r, name)) is not None]
        if not present:
            continue
        for (i, _), p in zip(present, _percentiles([v for _, v in present])):
            totals[i] += p
            counts[i] += 1
    return [totals[i] / counts[i] if counts[i] else -math.inf for i in range(len(records))]


@dataclass
class FilterResult:
    kept: list[dict]
    rejected: list[tuple[dict, list[str]]]

    def counts(self) -> dict[str, int]:
        """Rejections by reason (an utterance with several reasons counts for each)."""
        tally: collections.Counter = collections.Counter()
        for _, reasons in self.rejected:
            tally.update({reason.split(":", 1)[0] for reason in reasons})
        return dict(tally.most_common())


def apply_filter(records: Iterable[dict], thresholds: Thresholds = Thresholds(),
                 keep_fraction: Optional[float] = None) -> FilterResult:
    """Split labelled records into kept and rejected (with reasons), in input order (module docstring)."""
    records = list(records)
    if keep_fraction is not None and not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
    reasons = [_hard_reasons(r, thresholds) for r in records]
    if keep_fraction is None:
        for i, r in enumerate(records):
            if not reasons[i]:
                reasons[i] = _threshold_reasons(r, thresholds)
    else:
        candidates = [i for i in range(len(records)) if not reasons[i]]
        scores = combined_scores([records[i] for i in candidates])
        ranked = sorted(range(len(candidates)), key=lambda k: -scores[k])
        quota = round(keep_fraction * len(records))
        for position, k in enumerate(ranked):
            if position >= quota:
                reasons[candidates[k]] = [f"yield: combined score {scores[k]:.3f} ranks {position + 1} of "
                                          f"{len(candidates)}, past the target yield {keep_fraction}"]
    kept = [r for r, why in zip(records, reasons) if not why]
    return FilterResult(kept, [(r, why) for r, why in zip(records, reasons) if why])


def write_outputs(result: FilterResult, manifest: str | os.PathLike, report: Optional[str | os.PathLike],
                  thresholds: Thresholds, keep_fraction: Optional[float]) -> int:
    """The training manifest of the kept labels (``mooer train`` reads it) and a JSON report; returns the
    number of manifest lines."""
    from mooer.data.manifest import Utterance, write_manifest

    utterances = (Utterance(id=r["key"], audio=r["audio"], text=r["text"], duration=r["duration"],
                            start=r.get("start"), end=r.get("end"), translation=r.get("translation"),
                            lang=r.get("lang")) for r in result.kept)
    count = write_manifest(manifest, utterances)
    if report is not None:
        total = len(result.kept) + len(result.rejected)
        body = {"total": total, "kept": len(result.kept), "rejected": len(result.rejected),
                "yield": round(len(result.kept) / total, 4) if total else 0.0,
                "kept_hours": round(sum(r["duration"] for r in result.kept) / 3600, 4),
                "rejected_by_reason": result.counts(),
                "mode": "target yield" if keep_fraction is not None else "thresholds",
                "keep_fraction": keep_fraction, "thresholds": asdict(thresholds),
                "rejected_utterances": [{"key": r["key"], "reasons": why} for r, why in result.rejected]}
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        Path(report).write_text(json.dumps(body, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return count
