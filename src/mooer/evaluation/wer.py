"""Token error rates (CER/WER) computed exactly like the official MooER scorer, plus a normalised mode.

The official scorer is ``src/tools/compute-wer.py`` (WeNet/Kaldi style), run by ``inference.sh`` as
``compute-wer.py --char=1 --v=1 ref hyp`` for every test set. With the default options this module gives the
same numbers (N, C, S, D, I and the rate) and the same text layout.

Compatible ("compat") mode, the default
---------------------------------------
Tokenisation, ``mode="char"`` (``--char=1``; :func:`characterize`), walking the text character by character:

- a character of the punctuation list ``! , ? 、 。 ！ ， ； ？ ： 「 」 ︰ 『 』 《 》`` at a token start is skipped;
- a character of Unicode category Zs or Cn, or one of space, tab, CR, LF, is skipped;
- a character of category Lo (CJK ideographs, kana, ...) is a single-character token;
- any other character starts a run that extends until a character with code point >= 128, a whitespace
  character (space, tab, CR, LF) or the separator: space, or ``>`` when the run starts with ``<`` (the
  closing ``>`` is kept). ASCII words and numbers are therefore word tokens, ASCII punctuation attached to a
  word stays in it (``WORLD.`` != ``WORLD``), full-width punctuation is always dropped, and other non-ASCII
  non-Lo characters (curly quotes, accented letters) become their own tokens or split words.

``mode="word"`` (no ``--char``) splits on whitespace instead.

Then, per token: upper-case unless ``case_sensitive`` (``--cs=1``); remove ``<...>`` tags
(``remove_tags``, the official default, e.g. ``<unk>``, ``<noise>``); drop tokens that became empty.

Alignment (:func:`align`): Levenshtein distance with sub = del = ins = 1. On ties the official code prefers
deletion, then insertion, then the diagonal (a later option wins only if strictly smaller); this decides the
S/D/I split, never the total. Counts are pooled over the corpus: rate = (S + D + I) / N x 100, where N is
the number of reference tokens (0.0 when N = 0, as in the official script).

Which utterances are scored is decided by :mod:`mooer.evaluation.pairing`: by default reference utterances
without a hypothesis are ignored (official behaviour); a hypothesis with a key but no text is all deletions.

Known deviations from the script, all outside the default numbers: keys are taken from the input files
before tokenisation (the script tokenises the whole line, so a non-ASCII key would be split); duplicate keys
keep the last occurrence; ``--ig``, ``--splitfile``, ``--cluster``, ``--concat-all`` and
``--merge_en_single`` are not offered.

Normalised mode (``normalize=True``, not official)
--------------------------------------------------
For comparing systems whose output style differs from the references (punctuation, width, case), the text
is first rewritten by :func:`normalize_text`:

1. Unicode NFKC (folds full-width letters, digits and punctuation to ASCII, the ideographic space to a
   space, compatibility ligatures, ...);
2. ``<...>`` tags removed (only if ``remove_tags``);
3. apostrophes (``'`` and ``’``) deleted, so ``DON'T`` == ``DONT``;
4. every other character of Unicode category P* (punctuation), S* (symbols), Z* (separators) or C*
   (control, format, unassigned) replaced by a space;
5. upper-cased (case is always folded in this mode, whatever ``case_sensitive`` says);
6. whitespace runs collapsed to one space, ends stripped.

The result is then tokenised and aligned exactly as above (char or word mode).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from mooer.evaluation.pairing import MissingPolicy, Pairing, pair_utterances

Mode = Literal["char", "word"]

#: the official punctuation list, skipped at a token start in char mode
PUNCTUATION: frozenset[str] = frozenset("!,?、。！，；？：「」︰『』《》")
_SPACES: frozenset[str] = frozenset(" \t\r\n")
_APOSTROPHES: frozenset[str] = frozenset("'\u2019")
_TAG_RE = re.compile(r"<[^<>]*>")

#: alignment operations, as named in the official script
COR, SUB, DEL, INS = "cor", "sub", "del", "ins"
_OPS = (COR, SUB, DEL, INS)
_OP_COR, _OP_SUB, _OP_DEL, _OP_INS = range(4)


# --------------------------------------------------------------------------------------------------
# tokenisation


def characterize(text: str) -> list[str]:
    """Split ``text`` into tokens like the official char mode (``--char=1``), before case/tag handling."""
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in PUNCTUATION:
            i += 1
            continue
        cat = unicodedata.category(ch)
        if cat == "Zs" or cat == "Cn" or ch in _SPACES:
            i += 1
            continue
        if cat == "Lo":
            tokens.append(ch)
            i += 1
            continue
        sep = ">" if ch == "<" else " "
        j = i + 1
        while j < n:
            c = text[j]
            if ord(c) >= 128 or c in _SPACES or c == sep:
                break
            j += 1
        if j < n and text[j] == ">":
            j += 1
        tokens.append(text[i:j])
        i = j
    return tokens


def strip_tags(token: str) -> str:
    """Remove ``<...>`` spans from a token like the official script (an unclosed ``<`` eats the rest)."""
    if "<" not in token:
        return token
    out: list[str] = []
    i, n = 0, len(token)
    while i < n:
        if token[i] == "<":
            while i < n and token[i] != ">":
                i += 1
            i += 1
        else:
            out.append(token[i])
            i += 1
    return "".join(out)


def normalize_text(text: str, *, remove_tags: bool = True) -> str:
    """Rewrite ``text`` for the normalised mode (see the module docstring for the exact steps)."""
    text = unicodedata.normalize("NFKC", text)
    if remove_tags:
        text = _TAG_RE.sub(" ", text)
    chars: list[str] = []
    for ch in text:
        if ch in _APOSTROPHES:
            continue
        chars.append(" " if unicodedata.category(ch)[0] in "PSZC" else ch)
    return " ".join("".join(chars).upper().split())


@dataclass(frozen=True)
class TokenizerOptions:
    """How texts become tokens. The defaults are the official ``--char=1`` settings."""

    mode: Mode = "char"
    case_sensitive: bool = False
    remove_tags: bool = True
    normalize: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("char", "word"):
            raise ValueError(f"unknown tokenisation mode {self.mode!r}; expected 'char' or 'word'")

    def tokenize(self, text: str) -> list[str]:
        """Tokens of ``text`` as the scorer compares them."""
        if self.normalize:
            text = normalize_text(text, remove_tags=self.remove_tags)
        raw = characterize(text) if self.mode == "char" else text.split()
        fold = not self.case_sensitive or self.normalize
        tokens: list[str] = []
        for tok in raw:
            if fold:
                tok = tok.upper()
            if self.remove_tags:
                tok = strip_tags(tok)
            if tok:
                tokens.append(tok)
        return tokens

    def describe(self) -> str:
        parts = [f"{self.mode} mode"]
        parts.append("normalised" if self.normalize else "compat")
        parts.append("case-sensitive" if self.case_sensitive and not self.normalize else "case-insensitive")
        parts.append("tags removed" if self.remove_tags else "tags kept")
        return ", ".join(parts)


# --------------------------------------------------------------------------------------------------
# counts and alignment


@dataclass(frozen=True)
class ErrorCounts:
    """Token counts: N reference tokens, C correct, S substitutions, D deletions, I insertions."""

    n: int = 0
    c: int = 0
    s: int = 0
    d: int = 0
    i: int = 0

    @property
    def errors(self) -> int:
        return self.s + self.d + self.i

    @property
    def rate(self) -> float:
        """(S + D + I) / N x 100; 0.0 when N = 0 (as the official script)."""
        return self.errors * 100.0 / self.n if self.n else 0.0

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(self.n + other.n, self.c + other.c, self.s + other.s, self.d + other.d, self.i + other.i)

    def format(self) -> str:
        """``N=… C=… S=… D=… I=…`` as printed by the official script."""
        return f"N={self.n} C={self.c} S={self.s} D={self.d} I={self.i}"

    def to_dict(self) -> dict[str, int | float]:
        return {"n": self.n, "c": self.c, "s": self.s, "d": self.d, "i": self.i, "errors": self.errors,
                "rate": self.rate}


@dataclass(frozen=True)
class Alignment:
    """An optimal alignment: ``ops[k]`` pairs ``ref[k]`` with ``hyp[k]`` ("" on the empty side)."""

    ops: tuple[str, ...]
    ref: tuple[str, ...]
    hyp: tuple[str, ...]

    @property
    def counts(self) -> ErrorCounts:
        c = self.ops.count(COR)
        s = self.ops.count(SUB)
        d = self.ops.count(DEL)
        return ErrorCounts(n=c + s + d, c=c, s=s, d=d, i=self.ops.count(INS))


def align(ref: Sequence[str], hyp: Sequence[str]) -> Alignment:
    """Align two token sequences with the official costs and tie-break (deletion, insertion, diagonal).

    Distances use two rows; the backtrace needs one byte per cell, O(len(ref) x len(hyp)) for this
    utterance only.
    """
    n, m = len(ref), len(hyp)
    # back[i][j]: operation reaching cell (i, j); row 0 is all insertions, column 0 all deletions
    back: list[bytearray] = [bytearray([_OP_INS]) * (m + 1)]
    prev = list(range(m + 1))
    for i in range(1, n + 1):
        r = ref[i - 1]
        cur = [i] + [0] * m
        row = bytearray([_OP_DEL]) * (m + 1)
        for j in range(1, m + 1):
            best = prev[j] + 1  # deletion
            op = _OP_DEL
            v = cur[j - 1] + 1  # insertion
            if v < best:
                best, op = v, _OP_INS
            if r == hyp[j - 1]:
                v, diag = prev[j - 1], _OP_COR
            else:
                v, diag = prev[j - 1] + 1, _OP_SUB
            if v < best:
                best, op = v, diag
            cur[j] = best
            row[j] = op
        back.append(row)
        prev = cur

    ops: list[str] = []
    ref_side: list[str] = []
    hyp_side: list[str] = []
    i, j = n, m
    while i > 0 or j > 0:
        op = back[i][j]
        if op == _OP_DEL:
            i -= 1
            ref_side.append(ref[i])
            hyp_side.append("")
        elif op == _OP_INS:
            j -= 1
            ref_side.append("")
            hyp_side.append(hyp[j])
        else:
            i -= 1
            j -= 1
            ref_side.append(ref[i])
            hyp_side.append(hyp[j])
        ops.append(_OPS[op])
    ops.reverse()
    ref_side.reverse()
    hyp_side.reverse()
    return Alignment(tuple(ops), tuple(ref_side), tuple(hyp_side))


# --------------------------------------------------------------------------------------------------
# clusters (the official per-class lines)


_CLUSTER_DROPPED = (
    "AMPERSAND", "APOSTROPHE", "COMMERCIAL AT", "DEGREE CELSIUS", "EQUALS SIGN", "FULL STOP",
    "HYPHEN-MINUS", "LOW LINE", "NUMBER SIGN", "PLUS SIGN", "SEMICOLON",
)


def token_cluster(token: str) -> str:
    """The official default cluster of a token: Mandarin, English, Number, Japanese or Other."""
    names: list[str] = []
    for ch in token:
        name = unicodedata.name(ch, "")
        if name.startswith("DIGIT"):
            names.append("Number")
        elif name.startswith(("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH")):
            names.append("Mandarin")
        elif name.startswith(("LATIN CAPITAL LETTER", "LATIN SMALL LETTER")):
            names.append("English")
        elif name.startswith("HIRAGANA LETTER"):
            names.append("Japanese")
        elif name.startswith(_CLUSTER_DROPPED):
            continue
        else:
            return "Other"
    if not names or any(x != names[0] for x in names):
        return "Other"
    return names[0]


class _TokenTally:
    """Per-token counts charged like the official script (N/C/S/D to the reference token, I to the
    hypothesis token), from which the per-cluster lines are summed."""

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}  # token -> [n, c, s, d, i]
        self._cluster_of: dict[str, str] = {}
        self._clusters: dict[str, None] = {}  # first-seen order

    def add(self, ref: Sequence[str], hyp: Sequence[str], alignment: Alignment) -> None:
        for tok in (*hyp, *ref):
            if tok not in self._cluster_of:
                name = token_cluster(tok)
                self._cluster_of[tok] = name
                self._clusters.setdefault(name, None)
        for op, r, h in zip(alignment.ops, alignment.ref, alignment.hyp):
            counts = self._counts.setdefault(h if op == INS else r, [0, 0, 0, 0, 0])
            if op == INS:
                counts[4] += 1
            else:
                counts[0] += 1
                counts[1 + (COR, SUB, DEL).index(op)] += 1

    def clusters(self) -> dict[str, ErrorCounts]:
        sums = {name: [0, 0, 0, 0, 0] for name in self._clusters}
        for tok, counts in self._counts.items():
            acc = sums[self._cluster_of[tok]]
            for k in range(5):
                acc[k] += counts[k]
        return {name: ErrorCounts(*acc) for name, acc in sums.items()}


# --------------------------------------------------------------------------------------------------
# corpus scoring


@dataclass(frozen=True)
class UtteranceScore:
    """One scored utterance: raw texts, alignment and counts."""

    key: str
    ref: str
    hyp: str
    alignment: Alignment
    counts: ErrorCounts
    #: True when the hypothesis was missing and scored as empty (policy "deletion")
    missing: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "key": self.key,
            "ref": self.ref,
            "hyp": self.hyp,
            "missing": self.missing,
            **self.counts.to_dict(),
            "alignment": [[op, r, h] for op, r, h in zip(self.alignment.ops, self.alignment.ref,
                                                         self.alignment.hyp)],
        }


def _width(text: str) -> int:
    """Display width as the official script computes it (East Asian A/F/W characters count 2)."""
    return sum(1 + (unicodedata.east_asian_width(c) in "AFW") for c in text)


def format_utterance(utt: UtteranceScore, padding: str = " ") -> str:
    """The official ``--v=1`` block of one utterance: ``utt:``, ``WER:`` and aligned ``lab:``/``rec:``.

    Byte for byte what the script prints, including the leading empty line, the trailing space after
    every token and the empty line after ``rec:``.
    """
    text = f"\nutt: {utt.key}\nWER: {utt.counts.rate:4.2f} % {utt.counts.format()}\n"
    if utt.alignment.ops:
        lab: list[str] = []
        rec: list[str] = []
        for r, h in zip(utt.alignment.ref, utt.alignment.hyp):
            wr, wh = _width(r), _width(h)
            w = max(wr, wh)
            lab.append(r + padding * (w - wr) + " ")
            rec.append(h + padding * (w - wh) + " ")
        text += "lab: " + "".join(lab) + "\nrec: " + "".join(rec) + "\n\n"
    return text


@dataclass(frozen=True)
class WerResult:
    """Corpus result: pooled counts, per-utterance scores, per-cluster counts and the pairing."""

    options: TokenizerOptions
    overall: ErrorCounts
    utterances: tuple[UtteranceScore, ...]
    clusters: dict[str, ErrorCounts]
    pairing: Pairing = field(repr=False)

    @property
    def rate(self) -> float:
        return self.overall.rate

    def overall_line(self) -> str:
        """``Overall -> xx.xx % N=… C=… S=… D=… I=…`` exactly as the official script prints it."""
        return f"Overall -> {self.overall.rate:4.2f} % {self.overall.format()}"

    def format_official(self, verbose: bool = False) -> str:
        """The official script's output (``--v=0`` or, with ``verbose``, ``--v=1``)."""
        text = ""
        if verbose:
            text += "".join(format_utterance(u) for u in self.utterances)
            text += "=" * 74 + "\n\n"
        text += self.overall_line() + "\n"
        if verbose:
            text += "".join(f"{name} -> {c.rate:4.2f} % {c.format()}\n" for name, c in self.clusters.items())
            text += "=" * 75 + "\n"
        else:
            text += "\n"
        return text


def score_wer(
    refs: Mapping[str, str],
    hyps: Mapping[str, str],
    *,
    mode: Mode = "char",
    case_sensitive: bool = False,
    remove_tags: bool = True,
    normalize: bool = False,
    missing: MissingPolicy = "ignore",
    failed: Collection[str] = (),
) -> WerResult:
    """Score hypotheses against references (``key -> text`` mappings), corpus-level pooled counts.

    The defaults reproduce ``compute-wer.py --char=1``. ``mode="word"`` splits on whitespace;
    ``normalize=True`` enables the documented normalised mode; ``missing`` and ``failed`` are described in
    :mod:`mooer.evaluation.pairing`.
    """
    options = TokenizerOptions(mode=mode, case_sensitive=case_sensitive, remove_tags=remove_tags,
                               normalize=normalize)
    pairing = pair_utterances(refs, hyps, missing=missing, failed=failed)
    tally = _TokenTally()
    scores: list[UtteranceScore] = []
    overall = ErrorCounts()
    for pair in pairing.pairs:
        ref_tokens = options.tokenize(pair.ref)
        hyp_tokens = options.tokenize(pair.hyp)
        alignment = align(ref_tokens, hyp_tokens)
        counts = alignment.counts
        tally.add(ref_tokens, hyp_tokens, alignment)
        scores.append(UtteranceScore(pair.key, pair.ref, pair.hyp, alignment, counts, pair.missing))
        overall = overall + counts
    return WerResult(options, overall, tuple(scores), tally.clusters(), pairing)
