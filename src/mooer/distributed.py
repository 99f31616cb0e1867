"""Process topology under ``torchrun``: who am I, how many are we, which items are mine.

Used by training (DDP / DeepSpeed ranks) and by sharded decoding (:mod:`mooer.inference.sharded`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["DistInfo", "dist_info", "shard"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_info(env: dict | None = None) -> DistInfo:
    """Rank, world size and local rank from the torchrun environment (single process when unset)."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1") or 1)
    rank = int(env.get("RANK", "0") or 0)
    local = int(env.get("LOCAL_RANK", str(rank)) or 0)
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return DistInfo(rank, world, local)


def shard(n: int, rank: int, world_size: int, strided: bool = True) -> list[int]:
    """Positions of ``n`` items that ``rank`` takes: every ``world_size``-th (strided, balances lengths when
    the list is sorted) or one contiguous block."""
    if strided:
        return list(range(rank, n, world_size))
    per, extra = divmod(n, world_size)
    start = rank * per + min(rank, extra)
    return list(range(start, start + per + (rank < extra)))
