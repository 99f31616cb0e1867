"""Hotword scores: did the listed phrases that were spoken get written, and did the others stay out?

For every scored utterance (the pairs of :mod:`mooer.evaluation.pairing`) and every listed phrase:

- *spoken*: the phrase occurs in the reference; a *hit* when it also occurs in the hypothesis;
- *unspoken*: it does not occur in the reference; a *false alarm* when it occurs in the hypothesis.

recall = hits / spoken, false-alarm rate = false alarms / unspoken (per listed phrase not spoken, the
denominator NeMo's and WeNet's keyword scripts use), precision = hits / (hits + false alarms); the number
of utterances with at least one false alarm is reported too. Given the hypotheses of a decoding without
hotwords (the *baseline*), the recall of the spoken phrases the baseline did not write is reported as well:
what biasing recovered.

A phrase *occurs* in a text when it is a substring after Unicode NFKC, whitespace runs made one space and,
unless ``case_sensitive``, case folding; a phrase that starts (ends) with a Latin letter or digit must
start (end) at a word boundary (``"Knuth"`` is not in ``"Knuths"``). Chinese has no word boundaries: a
phrase is found wherever its characters are.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mooer.evaluation.pairing import Pairing
from mooer.inference.hotwords import WORD_CHARACTERS

__all__ = ["HotwordScore", "phrase_pattern", "phrase_in", "score_hotwords"]

_EDGE = re.compile(f"[{WORD_CHARACTERS}]")


def _normal(text: str, case_sensitive: bool) -> str:
    text = " ".join(unicodedata.normalize("NFKC", text).split())
    return text if case_sensitive else text.casefold()


def phrase_pattern(phrase: str, case_sensitive: bool = False) -> re.Pattern:
    """The regular expression that finds ``phrase`` in a text normalised as the module docstring says."""
    body = _normal(phrase, case_sensitive)
    left = f"(?<![{WORD_CHARACTERS}])" if _EDGE.match(body[:1]) else ""
    right = f"(?![{WORD_CHARACTERS}])" if _EDGE.match(body[-1:]) else ""
    return re.compile(left + re.escape(body) + right)


def phrase_in(phrase: str, text: str, case_sensitive: bool = False) -> bool:
    """Whether ``phrase`` occurs in ``text`` (the rule of the module docstring)."""
    return phrase_pattern(phrase, case_sensitive).search(_normal(text, case_sensitive)) is not None


@dataclass(frozen=True)
class HotwordScore:
    """Counts over (utterance, listed phrase) pairs; ``utterances`` holds the details per key (phrases spoken,
    missed and falsely written) for the utterances that have any."""

    phrases: int
    scored: int  # utterances
    spoken: int
    hits: int
    unspoken: int
    false_alarms: int
    utterances_with_false_alarms: int
    baseline_missed: int | None = None  # spoken phrases the baseline did not write (None: no baseline)
    recovered: int | None = None  # of those, the ones written here
    utterances: dict[str, dict[str, list[str]]] = field(default_factory=dict, repr=False)

    @staticmethod
    def _pct(num: int, den: int | None) -> float | None:
        return None if not den else 100.0 * num / den

    @property
    def recall(self) -> float | None:
        return self._pct(self.hits, self.spoken)

    @property
    def false_alarm_rate(self) -> float | None:
        return self._pct(self.false_alarms, self.unspoken)

    @property
    def precision(self) -> float | None:
        return self._pct(self.hits, self.hits + self.false_alarms)

    @property
    def recovered_recall(self) -> float | None:
        return None if self.baseline_missed is None else self._pct(self.recovered or 0, self.baseline_missed)

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {
            "phrases": self.phrases, "utterances": self.scored, "spoken": self.spoken, "hits": self.hits,
            "recall": _round(self.recall), "unspoken": self.unspoken, "false_alarms": self.false_alarms,
            "false_alarm_rate": _round(self.false_alarm_rate, 4), "precision": _round(self.precision),
            "utterances_with_false_alarms": self.utterances_with_false_alarms,
        }
        if self.baseline_missed is not None:
            out.update(baseline_missed=self.baseline_missed, recovered=self.recovered,
                       recovered_recall=_round(self.recovered_recall))
        return out

    def to_dict(self) -> dict[str, object]:
        return {**self.summary(), "details": self.utterances}

    def format(self) -> str:
        """Report lines (after the error-rate line of ``mooer eval``)."""
        def pct(x: float | None, digits: int = 2) -> str:
            return "n/a" if x is None else f"{x:.{digits}f} %"

        text = (f"Hotwords -> recall {pct(self.recall)} ({self.hits}/{self.spoken} spoken listed phrases "
                f"written); false alarms {pct(self.false_alarm_rate, 3)} ({self.false_alarms}/{self.unspoken:,} "
                f"listed phrases not spoken, in {self.utterances_with_false_alarms} of {self.scored} utterances); "
                f"precision {pct(self.precision)}; {self.phrases} phrases\n")
        if self.baseline_missed is not None:
            text += (f"Hotwords the baseline missed -> recall {pct(self.recovered_recall)} "
                     f"({self.recovered}/{self.baseline_missed})\n")
        return text


def _round(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def score_hotwords(pairing: Pairing, phrases: Sequence[str], *, baseline: Mapping[str, str] | None = None,
                   case_sensitive: bool = False) -> HotwordScore:
    """Hotword counts over the scored pairs of ``pairing`` (see the module docstring). ``baseline``: the
    hypotheses (key → text) of a decoding without hotwords; keys it lacks are left out of its counts."""
    patterns = [(p, phrase_pattern(p, case_sensitive)) for p in dict.fromkeys(phrases)]
    spoken = hits = unspoken = false_alarms = with_false_alarms = 0
    missed_before = recovered = 0
    details: dict[str, dict[str, list[str]]] = {}
    for pair in pairing.pairs:
        ref, hyp = _normal(pair.ref, case_sensitive), _normal(pair.hyp, case_sensitive)
        before = _normal(baseline[pair.key], case_sensitive) if baseline is not None and pair.key in baseline else None
        said, missed, wrong = [], [], []
        for phrase, pattern in patterns:
            written = pattern.search(hyp) is not None
            if pattern.search(ref):
                said.append(phrase)
                spoken += 1
                hits += written
                if not written:
                    missed.append(phrase)
                if before is not None and pattern.search(before) is None:
                    missed_before += 1
                    recovered += written
            else:
                unspoken += 1
                if written:
                    wrong.append(phrase)
        false_alarms += len(wrong)
        with_false_alarms += bool(wrong)
        if said or wrong:
            details[pair.key] = {"spoken": said, "missed": missed, "false_alarms": wrong}
    return HotwordScore(len(patterns), pairing.n_scored, spoken, hits, unspoken, false_alarms, with_false_alarms,
                        missed_before if baseline is not None else None,
                        recovered if baseline is not None else None, details)
