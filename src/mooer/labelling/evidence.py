"""The evidence for trusting a pseudo-label: small pure functions over a decoded output.

- :func:`logprob_stats`: mean and minimum of the LLM's per-token log-probabilities (natural log; over the
  generated tokens, EOS included: a hesitant end is evidence too).
- :func:`speech_rate`: Chinese characters per second when the text has any, else words per second.
- :func:`disagreement`: the token error rate (%) of one text against another, tokenised like the official
  scorer's char mode after the documented normalisation (``mooer.evaluation.wer``: CJK characters and
  English words), so it is a CER for Chinese and a WER for English. Used for the LLM against the CTC head's
  greedy transcript, and for one teacher against another.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

__all__ = ["logprob_stats", "speech_rate", "disagreement", "text_lang"]

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def logprob_stats(logprobs: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    """(mean, min) of ``logprobs``; (None, None) when there are none."""
    if not logprobs:
        return None, None
    return round(sum(logprobs) / len(logprobs), 4), round(min(logprobs), 4)


def text_lang(text: str) -> str:
    """``zh`` if ``text`` holds a CJK character, else ``en``."""
    return "zh" if _CJK.search(text) else "en"


def speech_rate(text: str, seconds: float, lang: Optional[str] = None) -> tuple[float, str]:
    """(units per second, unit): ``char`` (CJK characters) for ``zh``, ``word`` otherwise; ``lang`` defaults
    to :func:`text_lang`."""
    lang = lang or text_lang(text)
    if lang == "zh":
        count, unit = len(_CJK.findall(text)), "char"
    else:
        count, unit = len(text.split()), "word"
    return round(count / max(seconds, 1e-3), 3), unit


def disagreement(reference: str, other: str) -> float:
    """Token errors (%) of ``other`` against ``reference`` (see the module docstring); against an empty
    reference every token of ``other`` is an error (100 % per token), and two empty texts agree (0)."""
    from mooer.evaluation.wer import TokenizerOptions, align

    options = TokenizerOptions(mode="char", normalize=True)
    ref, hyp = options.tokenize(reference), options.tokenize(other)
    errors = align(ref, hyp).counts.errors
    return round(100.0 * errors / max(len(ref), 1), 2)
