"""Corpus BLEU and chrF for speech translation, via sacreBLEU.

The original repository has no BLEU scorer and the README does not name one, so we use the most common
comparable choice: sacreBLEU corpus BLEU with its defaults (13a tokenisation, case-sensitive, one
reference per utterance, exponential smoothing) on detokenised output, always reported together with the
sacreBLEU signature so numbers can be compared. chrF (sacreBLEU defaults, chrF2) is reported alongside,
plus a sentence-level chrF per utterance for finding bad translations.

Utterances are paired by :mod:`mooer.evaluation.pairing` (same missing-hypothesis policies as CER/WER;
with ``"deletion"`` a missing translation is scored as an empty string).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from sacrebleu.metrics import BLEU, CHRF

from mooer.evaluation.pairing import EvaluationError, MissingPolicy, Pairing, pair_utterances


@dataclass(frozen=True)
class SentenceScore:
    """One translated utterance with its sentence-level chrF."""

    key: str
    ref: str
    hyp: str
    chrf: float
    missing: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"key": self.key, "ref": self.ref, "hyp": self.hyp, "missing": self.missing, "chrf": self.chrf}


@dataclass(frozen=True)
class BleuResult:
    """Corpus BLEU and chrF with their sacreBLEU signatures."""

    bleu: float
    bleu_signature: str
    #: sacreBLEU's one-line summary, e.g. ``BLEU = 48.89 85.7/66.7/40.0/25.0 (BP = 1.000 ...)``
    bleu_line: str
    precisions: tuple[float, ...]
    brevity_penalty: float
    sys_len: int
    ref_len: int
    chrf: float
    chrf_signature: str
    chrf_line: str
    utterances: tuple[SentenceScore, ...]
    pairing: Pairing = field(repr=False)

    def summary(self) -> dict[str, object]:
        return {
            "bleu": self.bleu,
            "bleu_signature": self.bleu_signature,
            "precisions": list(self.precisions),
            "brevity_penalty": self.brevity_penalty,
            "sys_len": self.sys_len,
            "ref_len": self.ref_len,
            "chrf": self.chrf,
            "chrf_signature": self.chrf_signature,
        }

    def format(self, verbose: bool = False) -> str:
        """sacreBLEU's score lines and signatures; with ``verbose`` each utterance first."""
        text = ""
        if verbose:
            for u in self.utterances:
                text += f"\nutt: {u.key}\nchrF: {u.chrf:.2f}\nref: {u.ref}\nhyp: {u.hyp}\n"
            text += "=" * 74 + "\n\n"
        text += f"{self.bleu_line}\nBLEU signature: {self.bleu_signature}\n"
        text += f"{self.chrf_line}\nchrF signature: {self.chrf_signature}\n"
        return text


def score_bleu(
    refs: Mapping[str, str],
    hyps: Mapping[str, str],
    *,
    missing: MissingPolicy = "ignore",
    failed: Collection[str] = (),
) -> BleuResult:
    """Corpus BLEU and chrF of ``hyps`` against ``refs`` (``key -> text`` mappings).

    Raises :class:`EvaluationError` when no utterance is left to score (sacreBLEU cannot score an empty
    corpus).
    """
    pairing = pair_utterances(refs, hyps, missing=missing, failed=failed)
    if not pairing.pairs:
        raise EvaluationError(f"no utterance to score: {pairing.describe()}")
    hyp_texts = [p.hyp for p in pairing.pairs]
    ref_texts = [p.ref for p in pairing.pairs]
    bleu_metric = BLEU()
    chrf_metric = CHRF()
    bleu = bleu_metric.corpus_score(hyp_texts, [ref_texts])
    chrf = chrf_metric.corpus_score(hyp_texts, [ref_texts])
    sentences = tuple(
        SentenceScore(p.key, p.ref, p.hyp, chrf_metric.sentence_score(p.hyp, [p.ref]).score, p.missing)
        for p in pairing.pairs
    )
    return BleuResult(
        bleu=bleu.score,
        bleu_signature=str(bleu_metric.get_signature()),
        bleu_line=str(bleu),
        precisions=tuple(bleu.precisions),
        brevity_penalty=bleu.bp,
        sys_len=bleu.sys_len,
        ref_len=bleu.ref_len,
        chrf=chrf.score,
        chrf_signature=str(chrf_metric.get_signature()),
        chrf_line=str(chrf),
        utterances=sentences,
        pairing=pairing,
    )
