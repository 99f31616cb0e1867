"""Repetition and hallucination guards for decoded output.

LLM-based ASR fails in recognisable ways: loops ("好的好的好的…", "okay okay
okay…") that run until the token limit, and text out of proportion to the audio (hallucination on
silence or noise, refusals). This module *detects* those failures and offers the pieces of a retry
policy; the transcribe loop decides what to do with them:

1. decode with ``max_new_tokens = max_new_tokens_for(seconds)`` (a bound that scales with the audio);
2. ``verdict = check_output(text, token_ids, seconds)``;
3. if not ``verdict.ok``: decode again with ``stricter_decoding(options)`` and keep the retry if its
   verdict is better; if it still loops, ``truncate_repetition`` cuts the looping tail. Record the
   decision (``verdict.reasons``) in the result.

Checks (all configurable in :class:`RepetitionGuard`):

- **n-gram loop**: some n-gram (n <= ``max_ngram``) occurs more than ``max_repeats`` times back to
  back *and* the loop spans at least ``min_loop_units`` units, so short genuine repetitions
  ("对对对", "哈哈哈哈") pass. Units are token ids when given (pad/EOS ids ignored), and for the
  text: single CJK characters, Latin words, and punctuation marks. Both are checked.
- **compression ratio** (as in Whisper): ``len(utf8) / len(zlib.compress(utf8)) > 2.4``. Repetitive
  text compresses well; normal text, and all short text, stays well below.
- **length for the audio**: more tokens than ``max_new_tokens_for(seconds)``, or more characters than
  ``chars_base + chars_per_second * seconds``.
- **refusal**: the output contains a chat-style refusal phrase (SLAM-LLM #113).
"""

from __future__ import annotations

import dataclasses
import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Sequence, TypeVar, overload

__all__ = [
    "RepetitionGuard",
    "GuardVerdict",
    "Loop",
    "compression_ratio",
    "text_units",
    "find_loop",
    "check_output",
    "max_new_tokens_for",
    "truncate_repetition",
    "stricter_decoding",
]

QWEN2_SPECIAL_IDS: tuple[int, ...] = (151643, 151645)
"""Qwen2 ``<|endoftext|>`` (pad) and ``<|im_end|>`` (EOS): not content, ignored by the loop check."""

DEFAULT_REFUSALS: tuple[str, ...] = (
    "as an ai language model",
    "i'm an ai language model",
    "i am an ai language model",
    "i'm sorry, but i can't transcribe",
    "i cannot transcribe",
    "作为一个人工智能语言模型",
    "作为一个ai语言模型",
    "作为ai语言模型",
)


@dataclass(frozen=True)
class RepetitionGuard:
    """Thresholds of :func:`check_output` and :func:`max_new_tokens_for`.

    Attributes:
        max_repeats: an n-gram may occur this many times back to back; more is a loop.
        max_ngram: longest loop period looked for, in units.
        min_loop_units: a loop must also cover at least this many units to count.
        compression_ratio_threshold: flag text whose UTF-8/zlib ratio exceeds this (Whisper: 2.4);
            ``None`` disables the check.
        tokens_base, tokens_per_second: the token bound ``tokens_base + tokens_per_second * seconds``.
            15 tokens/s is ~1.6x the densest expected output (multitask: ~5 tokens/s of Chinese
            transcript plus ~4 tokens/s of English translation), so it only stops runaways.
        chars_base, chars_per_second: the character bound, same form (multitask output of fast
            speech is ~25 chars/s).
        refusal_phrases: lower-case substrings that mark a refusal instead of a transcript.
        ignore_token_ids: ids dropped before the loop check (default: Qwen2 pad and EOS).
    """

    max_repeats: int = 4
    max_ngram: int = 20
    min_loop_units: int = 8
    compression_ratio_threshold: float | None = 2.4
    tokens_base: int = 16
    tokens_per_second: float = 15.0
    chars_base: int = 30
    chars_per_second: float = 40.0
    refusal_phrases: tuple[str, ...] = DEFAULT_REFUSALS
    ignore_token_ids: tuple[int, ...] = QWEN2_SPECIAL_IDS

    def __post_init__(self) -> None:
        if self.max_repeats < 1 or self.max_ngram < 1 or self.min_loop_units < 1:
            raise ValueError("RepetitionGuard: max_repeats, max_ngram and min_loop_units must be >= 1")
        if self.tokens_base < 1 or self.tokens_per_second < 0:
            raise ValueError("RepetitionGuard: tokens_base must be >= 1 and tokens_per_second >= 0")


@dataclass
class GuardVerdict:
    """Outcome of :func:`check_output`: ``ok`` is ``not reasons``; ``metrics`` are always filled."""

    ok: bool
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "reasons": list(self.reasons), "metrics": dict(self.metrics)}


@dataclass(frozen=True)
class Loop:
    """``copies`` back-to-back copies of the ``period``-unit n-gram starting at unit ``start``.

    ``stop`` (exclusive) also covers a trailing partial copy: ``units[start:stop]`` is periodic.
    """

    start: int
    period: int
    copies: int
    stop: int

    @property
    def units(self) -> int:
        return self.period * self.copies


# --------------------------------------------------------------------------------------------- units


_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_UNIT_RE = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])[^\W_])+(?:'(?:(?![{_CJK}])[^\W_])+)*|[^\w\s]|_")


def _text_unit_spans(text: str) -> list[tuple[str, int, int]]:
    return [(m.group().lower(), m.start(), m.end()) for m in _UNIT_RE.finditer(text)]


def text_units(text: str) -> list[str]:
    """Units of ``text`` for the loop check: CJK characters, words (lower-cased), punctuation."""
    return [u for u, _, _ in _text_unit_spans(text)]


# --------------------------------------------------------------------------------------------- metrics


def compression_ratio(text: str) -> float:
    """Whisper's compression ratio: UTF-8 bytes / zlib-compressed bytes (0.0 for empty text)."""
    data = text.encode("utf-8")
    if not data:
        return 0.0
    return len(data) / len(zlib.compress(data))


def _runs(units: Sequence[Any], period: int) -> list[Loop]:
    """Maximal back-to-back repetitions with the given period (copies >= 2)."""
    loops: list[Loop] = []
    n = len(units)
    i = 0
    while i + period < n:
        if units[i] != units[i + period]:
            i += 1
            continue
        j = i
        while j + period < n and units[j] == units[j + period]:
            j += 1
        loops.append(Loop(i, period, (j - i + period) // period, j + period))
        i = j
    return loops


def _is_loop(loop: Loop, opts: RepetitionGuard) -> bool:
    return loop.copies > opts.max_repeats and loop.units >= opts.min_loop_units


def find_loop(units: Sequence[Any], options: RepetitionGuard | None = None) -> Loop | None:
    """The loop with the most copies (ties: shortest period) that the guard flags, else ``None``."""
    opts = options or RepetitionGuard()
    best: Loop | None = None
    for period in range(1, min(opts.max_ngram, len(units) // 2) + 1):
        for loop in _runs(units, period):
            if _is_loop(loop, opts) and (best is None or loop.copies > best.copies):
                best = loop
    return best


def _max_copies(units: Sequence[Any], max_ngram: int) -> int:
    best = 1 if units else 0
    for period in range(1, min(max_ngram, len(units) // 2) + 1):
        for loop in _runs(units, period):
            best = max(best, loop.copies)
    return best


def _content_ids(token_ids: Sequence[int] | None, opts: RepetitionGuard) -> list[int]:
    if token_ids is None:
        return []
    ignore = set(opts.ignore_token_ids)
    return [int(t) for t in token_ids if int(t) not in ignore]


# --------------------------------------------------------------------------------------------- bounds


def max_new_tokens_for(
    audio_seconds: float, options: RepetitionGuard | None = None, *, cap: int | None = None
) -> int:
    """Generation budget for ``audio_seconds`` of audio: ``ceil(tokens_base + tokens_per_second * s)``.

    With the defaults (16 + 15/s) that is 91 tokens for 5 s, 316 for 20 s, 466 for 30 s: generous
    for real speech (see :class:`RepetitionGuard`) but it stops a loop early on short audio, where a
    fixed budget (the official 200) lets it run, and does not truncate long multitask output,
    which a fixed 200 can. ``cap`` optionally bounds it from above.
    """
    opts = options or RepetitionGuard()
    seconds = max(0.0, float(audio_seconds))
    bound = int(math.ceil(opts.tokens_base + opts.tokens_per_second * seconds))
    return min(bound, cap) if cap is not None else bound


# --------------------------------------------------------------------------------------------- check


def check_output(
    text: str,
    token_ids: Sequence[int] | None = None,
    audio_seconds: float | None = None,
    options: RepetitionGuard | None = None,
) -> GuardVerdict:
    """Check one decoded output; see the module docstring for the checks.

    Args:
        text: the decoded text.
        token_ids: the generated ids (optional; pad/EOS ids are ignored).
        audio_seconds: length of the audio decoded (optional; enables the length bounds).
        options: thresholds.

    Returns:
        A :class:`GuardVerdict`. Metrics: ``compression_ratio``, ``max_ngram_repeats`` (most
        back-to-back copies of any n-gram, text or ids), ``num_chars``, ``num_tokens`` (with ids)
        and, with ``audio_seconds``, ``chars_per_second``, ``max_chars``, ``max_tokens`` and
        ``tokens_per_second`` (with ids).
    """
    opts = options or RepetitionGuard()
    reasons: list[str] = []
    ids = _content_ids(token_ids, opts)
    units = text_units(text)
    num_chars = len("".join(text.split()))
    metrics: dict[str, float] = {
        "compression_ratio": round(compression_ratio(text), 4),
        "max_ngram_repeats": float(max(_max_copies(units, opts.max_ngram), _max_copies(ids, opts.max_ngram))),
        "num_chars": float(num_chars),
    }
    if token_ids is not None:
        metrics["num_tokens"] = float(len(ids))

    for kind, seq, sep in (("text", units, ""), ("token", ids, " ")):
        loop = find_loop(seq, opts)
        if loop is not None:
            shown = sep.join(str(u) for u in seq[loop.start : loop.start + loop.period])
            reasons.append(
                f"repetition: {kind} {loop.period}-gram {shown[:40]!r} repeated {loop.copies}x "
                f"(> {opts.max_repeats})"
            )
            break  # one repetition reason is enough

    ratio = metrics["compression_ratio"]
    if opts.compression_ratio_threshold is not None and ratio > opts.compression_ratio_threshold:
        reasons.append(f"compression_ratio: {ratio:.2f} > {opts.compression_ratio_threshold}")

    if audio_seconds is not None:
        seconds = max(float(audio_seconds), 0.0)
        max_tokens = max_new_tokens_for(seconds, opts)
        max_chars = int(math.ceil(opts.chars_base + opts.chars_per_second * seconds))
        per = max(seconds, 1e-3)
        metrics.update(chars_per_second=round(num_chars / per, 3), max_chars=float(max_chars))
        metrics["max_tokens"] = float(max_tokens)
        if token_ids is not None:
            metrics["tokens_per_second"] = round(len(ids) / per, 3)
        if token_ids is not None and len(ids) >= max_tokens:
            reasons.append(f"too_many_tokens: {len(ids)} >= {max_tokens} for {seconds:.2f} s of audio")
        if num_chars > max_chars:
            reasons.append(f"too_many_chars: {num_chars} > {max_chars} for {seconds:.2f} s of audio")

    lowered = text.lower()
    for phrase in opts.refusal_phrases:
        if phrase in lowered:
            reasons.append(f"refusal: {phrase!r}")
            break

    return GuardVerdict(ok=not reasons, reasons=reasons, metrics=metrics)


# --------------------------------------------------------------------------------------------- repair


def _tail_loop(units: Sequence[Any], opts: RepetitionGuard) -> Loop | None:
    """The flagged loop that runs to the end of ``units`` and starts earliest (ties: shortest period)."""
    best: Loop | None = None
    for period in range(1, min(opts.max_ngram, len(units) // 2) + 1):
        runs = _runs(units, period)
        if runs and runs[-1].stop == len(units) and _is_loop(runs[-1], opts):
            if best is None or runs[-1].start < best.start:
                best = runs[-1]
    return best


@overload
def truncate_repetition(seq: str, options: RepetitionGuard | None = ..., keep: int = ...) -> str: ...
@overload
def truncate_repetition(seq: Sequence[int], options: RepetitionGuard | None = ..., keep: int = ...) -> list[int]: ...


def truncate_repetition(seq: Any, options: RepetitionGuard | None = None, keep: int = 1) -> Any:
    """Cut a looping tail, keeping ``keep`` copies of the repeated n-gram.

    A tail loop is one the guard flags (see :class:`RepetitionGuard`) that lasts until the end,
    possibly ending in a partial copy (generation stopped mid-loop); the partial copy is dropped
    too. Text is cut between units (trailing whitespace removed); id lists are cut by position,
    ignored ids (pad/EOS) counting as nothing. Without a tail loop the input is returned
    unchanged (a new list for ids).

    >>> truncate_repetition("我们走吧好的好的好的好的好的好的好")
    '我们走吧好的'
    """
    opts = options or RepetitionGuard()
    keep = max(1, int(keep))
    if isinstance(seq, str):
        spans = _text_unit_spans(seq)
        loop = _tail_loop([u for u, _, _ in spans], opts)
        if loop is None:
            return seq
        last_kept = loop.start + keep * loop.period - 1
        return seq[: spans[last_kept][2]].rstrip()
    ignore = set(opts.ignore_token_ids)
    positions = [i for i, t in enumerate(seq) if int(t) not in ignore]
    ids = [int(seq[i]) for i in positions]
    loop = _tail_loop(ids, opts)
    if loop is None:
        return [int(t) for t in seq]
    last_kept = positions[loop.start + keep * loop.period - 1]
    return [int(t) for t in seq[: last_kept + 1]]


# --------------------------------------------------------------------------------------------- retry


_T = TypeVar("_T")


def stricter_decoding(options: _T, repetition_penalty: float = 1.2, no_repeat_ngram_size: int = 4) -> _T:
    """A copy of decoding ``options`` that discourages loops, for one retry.

    ``options`` is any dataclass with ``repetition_penalty`` and ``no_repeat_ngram_size`` fields (e.g.
    ``DecodingOptions``). The copy has ``repetition_penalty = max(current, 1.2)`` and
    ``no_repeat_ngram_size = 4`` (or the current size if it is already set and smaller); all other
    fields are kept. A no-repeat size of 4 tokens blocks a loop from its second copy yet still lets a
    ≤30 s segment repeat short words; 1.2 is the usual mild CTRL-style penalty.
    """
    if not dataclasses.is_dataclass(options) or isinstance(options, type):
        raise TypeError(f"stricter_decoding needs a dataclass instance, got {type(options).__name__}")
    names = {f.name for f in dataclasses.fields(options)}
    missing = {"repetition_penalty", "no_repeat_ngram_size"} - names
    if missing:
        raise TypeError(f"{type(options).__name__} has no field(s) {sorted(missing)}")
    current_rp = float(getattr(options, "repetition_penalty") or 1.0)
    current_nr = int(getattr(options, "no_repeat_ngram_size") or 0)
    new_nr = no_repeat_ngram_size if current_nr <= 0 else min(current_nr, no_repeat_ngram_size)
    return dataclasses.replace(
        options,  # type: ignore[type-var]
        repetition_penalty=max(current_rp, float(repetition_penalty)),
        no_repeat_ngram_size=new_nr,
    )
