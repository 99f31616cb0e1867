"""Bookkeeping of a decoding run: padding per batch, timing, real-time factor (``MooER.last_stats``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

__all__ = ["PaddingStats", "TranscribeStats", "batched_padding_fraction"]


@dataclass
class PaddingStats:
    """Padded vs real positions over a set of batches (each batch is padded to its longest row)."""

    rows: int = 0
    batches: int = 0
    real: int = 0
    total: int = 0

    def add(self, lengths: Sequence[int]) -> None:
        lengths = [int(n) for n in lengths]
        if not lengths:
            return
        self.batches += 1
        self.rows += len(lengths)
        self.real += sum(lengths)
        self.total += max(lengths) * len(lengths)

    @property
    def padded(self) -> int:
        return self.total - self.real

    @property
    def fraction(self) -> float:
        """Share of computed positions that are padding (0.0 when nothing was added)."""
        return self.padded / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return {"rows": self.rows, "batches": self.batches, "real": self.real, "total": self.total,
                "fraction": round(self.fraction, 4)}


def batched_padding_fraction(lengths: Iterable[int], batch_size: int, sort: bool = True) -> float:
    """Padding fraction of batching ``lengths`` in groups of ``batch_size``, longest first when ``sort``
    (what ``MooER.transcribe`` does), else in the given order."""
    lengths = list(lengths)
    if sort:
        lengths = sorted(lengths, reverse=True)
    stats = PaddingStats()
    for start in range(0, len(lengths), batch_size):
        stats.add(lengths[start : start + batch_size])
    return stats.fraction


@dataclass
class TranscribeStats:
    """What one ``MooER.transcribe`` call did (``MooER.last_stats``)."""

    inputs: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    batch_size: int = 0
    workers: int = 1
    featurize_seconds: float = 0.0  # loading + features, wall clock
    decode_seconds: float = 0.0  # encoder + LLM, wall clock
    features: PaddingStats = field(default_factory=PaddingStats)  # encoder frames (T6)
    tokens: PaddingStats = field(default_factory=PaddingStats)  # LLM input positions (audio + prompt)

    @property
    def seconds(self) -> float:
        return self.featurize_seconds + self.decode_seconds

    @property
    def rtf(self) -> float:
        """Real-time factor (processing seconds per audio second; smaller is faster)."""
        return self.seconds / self.audio_seconds if self.audio_seconds else 0.0

    def to_dict(self) -> dict:
        return {"inputs": self.inputs, "failed": self.failed, "audio_seconds": round(self.audio_seconds, 3),
                "batch_size": self.batch_size, "workers": self.workers,
                "featurize_seconds": round(self.featurize_seconds, 4),
                "decode_seconds": round(self.decode_seconds, 4), "rtf": round(self.rtf, 4),
                "feature_padding": self.features.to_dict(), "token_padding": self.tokens.to_dict()}

    def summary(self) -> str:
        return (f"mooer: {self.inputs} inputs ({self.failed} failed), {self.audio_seconds:.1f} s audio, "
                f"{self.features.batches} batches of <= {self.batch_size}; padding "
                f"{100 * self.features.fraction:.1f} % of encoder frames, {100 * self.tokens.fraction:.1f} % of "
                f"LLM input positions; featurise {self.featurize_seconds:.2f} s ({self.workers} workers), "
                f"decode {self.decode_seconds:.2f} s, RTF {self.rtf:.3f}")
