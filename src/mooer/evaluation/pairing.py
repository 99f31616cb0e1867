"""Matching reference utterances with hypotheses, and the missing-hypothesis policy.

Every metric (CER/WER and BLEU/chrF) scores the same set of pairs, built here once.

Pairs follow the order of the references. A reference key is *missing* when it has no usable
hypothesis: no hypothesis line at all, or a hypothesis whose transcription failed (the ``error``
records of ``mooer transcribe`` jsonl). What happens to missing keys is the policy:

- ``"ignore"`` (default, what the official ``compute-wer.py`` does): the utterance is left out of
  scoring entirely. It is still counted and listed in the report.
- ``"deletion"``: the utterance is scored against an empty hypothesis, i.e. every reference token is a
  deletion (for BLEU, an empty translation).
- ``"error"``: raise :class:`EvaluationError` naming the missing keys.

A hypothesis that is present but has empty text is not missing: it is scored (all deletions), as in the
official scorer. Hypotheses without a reference ("extra") are never scored; they are only counted.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from mooer.errors import MooerError

MissingPolicy = Literal["ignore", "deletion", "error"]
MISSING_POLICIES: tuple[str, ...] = get_args(MissingPolicy)

#: how many keys an error message lists before eliding the rest
_KEYS_IN_MESSAGE = 5


class EvaluationError(MooerError):
    """Evaluation inputs are unusable (malformed file, missing field, missing hypotheses...)."""


@dataclass(frozen=True)
class Pair:
    """One reference utterance to score. ``missing`` marks a hypothesis scored as empty by policy."""

    key: str
    ref: str
    hyp: str
    missing: bool = False


@dataclass(frozen=True)
class Pairing:
    """The pairs to score plus the bookkeeping every report shows."""

    pairs: tuple[Pair, ...]
    policy: MissingPolicy
    #: reference keys without a usable hypothesis (absent or failed), in reference order
    missing: tuple[str, ...]
    #: hypothesis keys whose transcription failed (whether or not they have a reference)
    failed: tuple[str, ...]
    #: hypothesis keys that have no reference (never scored)
    extra: tuple[str, ...]
    #: number of reference utterances given
    n_references: int

    @property
    def n_scored(self) -> int:
        return len(self.pairs)

    def counts(self) -> dict[str, int | str]:
        """Utterance-level bookkeeping as a flat dict (for reports)."""
        return {
            "references": self.n_references,
            "scored": self.n_scored,
            "missing": len(self.missing),
            "missing_policy": self.policy,
            "failed": len(self.failed),
            "extra": len(self.extra),
        }

    def describe(self) -> str:
        """One human-readable line summarising what was scored."""
        action = {"ignore": "ignored", "deletion": "scored as deletions", "error": "error"}[self.policy]
        return (
            f"Scored {self.n_scored} of {self.n_references} reference utterances; "
            f"missing hypotheses: {len(self.missing)} ({action}); "
            f"failed transcriptions: {len(self.failed)}; "
            f"hypotheses without reference: {len(self.extra)}"
        )


def check_policy(policy: str) -> MissingPolicy:
    """Return ``policy`` if it is a known missing-hypothesis policy, else raise ValueError."""
    if policy not in MISSING_POLICIES:
        raise ValueError(f"unknown missing-hypothesis policy {policy!r}; expected one of {MISSING_POLICIES}")
    return policy  # type: ignore[return-value]


def _elide(keys: Collection[str]) -> str:
    shown = ", ".join(list(keys)[:_KEYS_IN_MESSAGE])
    more = len(keys) - _KEYS_IN_MESSAGE
    return shown + (f", ... ({more} more)" if more > 0 else "")


def pair_utterances(
    refs: Mapping[str, str],
    hyps: Mapping[str, str],
    *,
    missing: MissingPolicy = "ignore",
    failed: Collection[str] = (),
) -> Pairing:
    """Pair references with hypotheses by key, applying the missing-hypothesis policy.

    ``failed`` names hypothesis keys whose transcription failed; they count as missing even if
    ``hyps`` holds text for them.
    """
    policy = check_policy(missing)
    failed_set = set(failed)
    pairs: list[Pair] = []
    missing_keys: list[str] = []
    for key, ref in refs.items():
        hyp = hyps.get(key)
        if hyp is not None and key not in failed_set:
            pairs.append(Pair(key, ref, hyp))
            continue
        missing_keys.append(key)
        if policy == "deletion":
            pairs.append(Pair(key, ref, "", missing=True))
    if missing_keys and policy == "error":
        raise EvaluationError(
            f"{len(missing_keys)} reference utterance(s) have no usable hypothesis: {_elide(missing_keys)} "
            "(use missing='ignore' or 'deletion' to score anyway)"
        )
    extra = tuple(k for k in hyps if k not in refs)
    return Pairing(
        pairs=tuple(pairs),
        policy=policy,
        missing=tuple(missing_keys),
        failed=tuple(dict.fromkeys(failed)),
        extra=extra,
        n_references=len(refs),
    )
