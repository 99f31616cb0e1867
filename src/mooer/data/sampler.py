"""Batch samplers: which dataset indices go together, per epoch and per rank (kept apart from the dataset).

Both samplers are ``torch.utils.data.DataLoader`` *batch samplers* (``DataLoader(dataset,
batch_sampler=sampler, collate_fn=...)``): iterating one yields lists of dataset indices. They share one
contract (:class:`EpochBatchSampler`):

- **Deterministic.** The batches of an epoch depend only on ``(seed, epoch)`` and the constructor
  arguments; call :meth:`~EpochBatchSampler.set_epoch` before each epoch.
- **Equal counts on every rank.** The batches of an epoch are formed *globally* (identically on every
  rank), then dealt round-robin: rank ``r`` gets global batches ``r, r + W, r + 2W, …``. When the number of
  batches is not a multiple of ``world_size``, ``drop_last=True`` drops the trailing ones; otherwise the
  list is padded by repeating its first batches (those utterances are then seen twice that epoch). Every
  rank therefore runs the same number of steps, so collectives never wait on a rank that ran out (which
  deadlocked the original).
- **Exact resume.** :meth:`~EpochBatchSampler.state_dict` records ``(epoch, batches already consumed)``;
  after :meth:`~EpochBatchSampler.load_state_dict`, iteration continues with exactly the batches an
  uninterrupted run would have produced.

DataLoader workers prefetch: the sampler is iterated ahead of what the training loop has consumed. Pass
the number of batches the loop actually took from the loader since the epoch's iteration began to
``state_dict(batches_consumed=n)``; without it the sampler's own count (exact only when nothing
prefetches) is used.
"""

from __future__ import annotations

import abc
import math
from typing import Iterator, Optional, Sequence

import numpy as np

__all__ = ["EpochBatchSampler", "DynamicBucketSampler", "FixedSizeSampler", "padding_fraction"]


def padding_fraction(lengths: Sequence[float]) -> float:
    """Share of a right-padded batch that is padding: ``1 − sum / (max · count)`` (0.0 for no lengths)."""
    if len(lengths) == 0:
        return 0.0
    longest = max(lengths)
    if longest <= 0:
        return 0.0
    return 1.0 - float(sum(lengths)) / (float(longest) * len(lengths))


def _rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, stream]))


class EpochBatchSampler(abc.ABC):
    """Distribution across ranks, epochs and resume state; subclasses only form an epoch's global batches."""

    def __init__(self, *, shuffle: bool, seed: int, rank: int, world_size: int, drop_last: bool) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self._resume_at = 0  # batches of `epoch` to skip at the next __iter__
        self._iter_start = 0  # where the current/last iteration began
        self._yielded = 0  # batches of `epoch` handed out so far (including skipped ones)
        self._cache: Optional[tuple[int, list[list[int]]]] = None

    @abc.abstractmethod
    def _global_batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch``, before distribution (must depend only on seed, epoch and arguments)."""

    def _state_key(self) -> dict:
        """Arguments that must match for a saved state to be loadable."""
        return {"seed": self.seed, "world_size": self.world_size, "drop_last": self.drop_last}

    def rank_batches(self, epoch: Optional[int] = None) -> list[list[int]]:
        """The batches this rank gets in ``epoch`` (default: the current epoch), in order."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        batches = self._global_batches(epoch)
        world = self.world_size
        if len(batches) % world:
            if self.drop_last:
                batches = batches[: len(batches) - len(batches) % world]
            elif batches:
                missing = world - len(batches) % world
                batches = batches + [batches[i % len(batches)] for i in range(missing)]
        mine = batches[self.rank :: world]
        self._cache = (epoch, mine)
        return mine

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration produces. A state loaded for this same epoch is kept."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self._resume_at = self._iter_start = self._yielded = 0

    def __len__(self) -> int:
        """Batches per rank in the current epoch (the same on every rank)."""
        return len(self.rank_batches())

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.rank_batches()
        start = self._resume_at
        self._resume_at = 0
        self._iter_start = self._yielded = start
        for batch in batches[start:]:
            self._yielded += 1
            yield list(batch)

    def state_dict(self, batches_consumed: Optional[int] = None) -> dict:
        """``{"epoch", "batches_yielded", …}``: where the current epoch stands.

        ``batches_consumed``: batches the training loop took from the DataLoader since this epoch's
        iteration began (needed with prefetching workers); the resume offset is added automatically.
        """
        position = self._yielded if batches_consumed is None else self._iter_start + int(batches_consumed)
        return {"epoch": self.epoch, "batches_yielded": position, **self._state_key()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`: the next iteration resumes epoch ``state["epoch"]`` after the
        batches already yielded. Raises ``ValueError`` if the sampler was built differently."""
        for key, value in self._state_key().items():
            if key in state and state[key] != value:
                raise ValueError(f"sampler state was saved with {key}={state[key]!r}, this one has {value!r}")
        self.epoch = int(state["epoch"])
        self._resume_at = self._iter_start = self._yielded = int(state["batches_yielded"])


class DynamicBucketSampler(EpochBatchSampler):
    """Duration-bucketed dynamic batches under a budget of audio seconds.

    Utterances are sorted by duration and split into ``num_buckets`` buckets of equal count. Each epoch,
    with ``shuffle``, the utterances are shuffled *within* their bucket, the buckets are concatenated from
    short to long and cut greedily into batches whose total duration is at most ``max_seconds`` (and with
    at most ``max_utterances`` utterances); the batch order is then shuffled. Batches thus hold utterances
    of similar length (little padding) while every epoch differs. A single utterance longer than
    ``max_seconds`` becomes a batch of its own (filter such utterances out when reading the manifest).
    Without ``drop_last``, every utterance appears in exactly one global batch per epoch.
    """

    def __init__(
        self,
        durations: Sequence[float],
        *,
        max_seconds: float,
        max_utterances: Optional[int] = None,
        num_buckets: int = 10,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        super().__init__(shuffle=shuffle, seed=seed, rank=rank, world_size=world_size, drop_last=drop_last)
        if max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {max_seconds}")
        if max_utterances is not None and max_utterances < 1:
            raise ValueError(f"max_utterances must be at least 1, got {max_utterances}")
        if num_buckets < 1:
            raise ValueError(f"num_buckets must be at least 1, got {num_buckets}")
        self.durations = np.asarray(durations, dtype=np.float64)
        self.max_seconds = float(max_seconds)
        self.max_utterances = max_utterances
        self.num_buckets = num_buckets
        order = np.argsort(self.durations, kind="stable")
        self._buckets = [b for b in np.array_split(order, min(num_buckets, max(len(order), 1))) if len(b)]

    def _state_key(self) -> dict:
        return {**super()._state_key(), "num_utterances": len(self.durations), "max_seconds": self.max_seconds}

    def _global_batches(self, epoch: int) -> list[list[int]]:
        rng = _rng(self.seed, epoch, 0)
        order = [rng.permutation(b) if self.shuffle else b for b in self._buckets]
        batches: list[list[int]] = []
        current: list[int] = []
        total = 0.0
        cap = self.max_utterances or math.inf
        for index in (int(i) for bucket in order for i in bucket):
            seconds = float(self.durations[index])
            if current and (total + seconds > self.max_seconds or len(current) >= cap):
                batches.append(current)
                current, total = [], 0.0
            current.append(index)
            total += seconds
        if current:
            batches.append(current)
        if self.shuffle:
            batches = [batches[i] for i in _rng(self.seed, epoch, 1).permutation(len(batches))]
        return batches


class FixedSizeSampler(EpochBatchSampler):
    """The official static batching: ``batch_size`` utterances per batch, in (seeded) random order.

    With ``drop_last`` the final incomplete batch is dropped too (the original's ``drop_last=True``).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        super().__init__(shuffle=shuffle, seed=seed, rank=rank, world_size=world_size, drop_last=drop_last)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.n = int(n)
        self.batch_size = batch_size

    def _state_key(self) -> dict:
        return {**super()._state_key(), "num_utterances": self.n, "batch_size": self.batch_size}

    def _global_batches(self, epoch: int) -> list[list[int]]:
        order = _rng(self.seed, epoch, 0).permutation(self.n) if self.shuffle else np.arange(self.n)
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, self.n, self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches
