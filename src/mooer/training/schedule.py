"""Learning-rate schedules as ``torch.optim.lr_scheduler.LambdaLR`` factories.

``it`` is the number of optimizer steps already taken (LambdaLR's ``last_epoch``); the learning rate of the
next step is ``peak · factor(it)``.

- :func:`official_factor` — DeepSpeed ``WarmupDecayLR`` with ``warmup_type=log`` as used by MooER
  (docs/design.md §6): ``ln(it+1)/ln(warmup)`` for ``it < warmup`` (so the first step runs at lr 0, as in the
  original), then a linear decay to 0 at ``total``.
- :func:`cosine_factor` — linear warm-up from 0, then a half cosine down to ``min_ratio · peak``.
- constant — 1.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch.optim.lr_scheduler import LambdaLR


def official_factor(it: int, warmup: int, total: int) -> float:
    """MooER's log warm-up + linear decay, as a fraction of the peak learning rate."""
    if warmup > 1 and it < warmup:
        return math.log(it + 1) / math.log(warmup)
    if total <= warmup:
        return 1.0
    return max(0.0, (total - it) / (total - warmup))


def cosine_factor(it: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``."""
    if warmup > 0 and it < warmup:
        return (it + 1) / warmup
    if total <= warmup:
        return 1.0
    progress = min(1.0, (it - warmup) / (total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def constant_factor(it: int) -> float:
    return 1.0


def schedule_factor(name: str, warmup: int, total: int, min_ratio: float = 0.0):
    """The ``it → factor`` function of a schedule name (``official``, ``cosine``, ``constant``)."""
    if name == "official":
        return partial(official_factor, warmup=warmup, total=total)
    if name == "cosine":
        return partial(cosine_factor, warmup=warmup, total=total, min_ratio=min_ratio)
    if name == "constant":
        return constant_factor
    raise ValueError(f"unknown schedule {name!r}; choose official, cosine or constant")


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, warmup: int, total: int,
                    min_ratio: float = 0.0) -> LambdaLR:
    """A LambdaLR over ``optimizer`` whose ``step()`` is called once per optimizer step."""
    return LambdaLR(optimizer, schedule_factor(name, warmup, total, min_ratio))
