"""The linear adapter (docs/design.md §2): stack k encoder frames, Linear → ReLU → Linear."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class AdapterConfig:
    encoder_dim: int = 512
    llm_dim: int = 3584
    downsample_rate: int = 2  # 2/3/4 = 120/180/240 ms per audio token
    hidden_dim: int = 2048

    def to_dict(self) -> dict:
        return asdict(self)


class LinearAdapter(nn.Module):
    """Maps (B, T, encoder_dim) encoder frames to (B, T // k, llm_dim) audio embeddings.

    The last ``T mod k`` frames of the (padded) batch are dropped; token t is the concatenation
    ``[enc[k t]; ...; enc[k t + k - 1]]``.
    """

    def __init__(self, config: AdapterConfig):
        super().__init__()
        self.config = config
        self.k = config.downsample_rate
        self.linear1 = nn.Linear(config.encoder_dim * self.k, config.hidden_dim)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(config.hidden_dim, config.llm_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        t = t - t % self.k
        x = x[:, :t].contiguous().view(b, t // self.k, d * self.k)
        return self.linear2(self.relu(self.linear1(x)))
