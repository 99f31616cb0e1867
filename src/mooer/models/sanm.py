"""The Paraformer SANM encoder (docs/design.md §2), with FunASR's state-dict key names.

Pre-LN blocks; layer 0 (``encoders0.0``) maps the 560-dim LFR input to d_model and has no attention
residual; every attention is multi-head self-attention plus an FSMN memory (a depthwise 1-D conv over the
value stream). The input is scaled by sqrt(d_model) and gets a sinusoidal position encoding of the *input*
width with positions starting at 1, computed in float32.

Dropout (training only, FunASR's ``dropout_rate``/``attention_dropout_rate``; 0 unless
:meth:`SANMEncoder.set_dropout` is called) acts on the input after the position encoding, the attention
probabilities, the feed-forward hidden layer and each sub-layer output before its residual sum.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SANMEncoderConfig:
    input_size: int = 560
    d_model: int = 512
    attention_heads: int = 4
    linear_units: int = 2048
    num_blocks: int = 50
    kernel_size: int = 11
    sanm_shift: int = 0
    layer_norm_eps: float = 1e-12

    def to_dict(self) -> dict:
        return asdict(self)


def sinusoidal_position_encoding(length: int, dim: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """(length, dim) encoding for positions 1..length, layout [sin(dim/2) | cos(dim/2)], as FunASR's
    ``SinusoidalPositionEncoder``."""
    positions = torch.arange(1, length + 1, dtype=dtype, device=device)
    half = dim // 2
    increment = math.log(10000.0) / (half - 1)
    inv_timescales = torch.exp(torch.arange(half, dtype=dtype, device=device) * -increment)
    scaled = positions[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


class SANMAttention(nn.Module):
    """MultiHeadedAttentionSANM: attention over q/k/v plus an FSMN memory block on v."""

    def __init__(self, in_dim: int, d_model: int, heads: int, kernel_size: int, shift: int):
        super().__init__()
        if heads < 1 or d_model % heads:
            raise ValueError(f"attention_heads {heads} does not divide d_model {d_model}")
        self.heads = heads
        self.d_k = d_model // heads
        self.d_model = d_model
        self.linear_q_k_v = nn.Linear(in_dim, 3 * d_model)
        self.linear_out = nn.Linear(d_model, d_model)
        self.fsmn_block = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model, bias=False)
        # FunASR's MultiHeadedAttentionSANM: the shift moves the window right only; a negative one is ignored.
        left = (kernel_size - 1) // 2 + max(shift, 0)
        if left > kernel_size - 1:
            raise ValueError(f"sanm_shift {shift} is too large for FSMN kernel {kernel_size}")
        self.fsmn_padding = (left, kernel_size - 1 - left)
        self.attention_dropout = 0.0

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, T, in_dim); mask: (B, T) bool, True on valid frames."""
        b, t, _ = x.shape
        q, k, v = self.linear_q_k_v(x).split(self.d_model, dim=-1)
        frame_mask = mask.unsqueeze(-1).to(v.dtype)
        # FSMN memory on the unsplit value stream; padded frames zeroed before and after.
        vm = v * frame_mask
        memory = self.fsmn_block(F.pad(vm.transpose(1, 2), self.fsmn_padding)).transpose(1, 2)
        memory = (memory + vm) * frame_mask
        # Attention; padded keys are excluded (softmax over valid keys only).
        q, k, v = (z.view(b, t, self.heads, self.d_k).transpose(1, 2) for z in (q, k, v))
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :],
                                              dropout_p=self.attention_dropout if self.training else 0.0)
        attn = attn.transpose(1, 2).reshape(b, t, self.d_model)
        return self.linear_out(attn) + memory


class FeedForward(nn.Module):
    def __init__(self, d_model: int, units: int):
        super().__init__()
        self.w_1 = nn.Linear(d_model, units)
        self.w_2 = nn.Linear(units, d_model)
        self.dropout = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.dropout(F.relu(self.w_1(x))))


class SANMEncoderLayer(nn.Module):
    def __init__(self, in_dim: int, config: SANMEncoderConfig):
        super().__init__()
        d = config.d_model
        self.self_attn = SANMAttention(in_dim, d, config.attention_heads, config.kernel_size, config.sanm_shift)
        self.feed_forward = FeedForward(d, config.linear_units)
        self.norm1 = nn.LayerNorm(in_dim, eps=config.layer_norm_eps)
        self.norm2 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.residual = in_dim == d  # layer 0 (560 -> d) has no attention residual
        self.dropout = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a = self.dropout(self.self_attn(self.norm1(x), mask))
        x = x + a if self.residual else a
        return x + self.dropout(self.feed_forward(self.norm2(x)))


class SANMEncoder(nn.Module):
    """(B, T6, 560) features + lengths → (B, T6, d_model) hidden states (after ``after_norm``)."""

    def __init__(self, config: SANMEncoderConfig):
        super().__init__()
        self.config = config
        self.encoders0 = nn.ModuleList([SANMEncoderLayer(config.input_size, config)])
        self.encoders = nn.ModuleList([SANMEncoderLayer(config.d_model, config) for _ in range(config.num_blocks - 1)])
        self.after_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.input_dropout = nn.Dropout(0.0)
        # unlike the original's, checkpointing never changes key names (which left its non-strict loads empty)
        self.gradient_checkpointing = False

    def set_dropout(self, p: float) -> None:
        """Set every dropout of the encoder to ``p`` (a training setting: not saved with the weights)."""
        if not 0.0 <= p < 1.0:
            raise ValueError(f"encoder dropout must be in [0, 1), got {p}")
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = p
            elif isinstance(module, SANMAttention):
                module.attention_dropout = p

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        t = features.shape[1]
        mask = torch.arange(t, device=features.device)[None, :] < lengths.to(features.device)[:, None]
        pe = sinusoidal_position_encoding(t, features.shape[-1], torch.float32, features.device)
        x = self.input_dropout((features.float() * math.sqrt(self.config.d_model) + pe).to(features.dtype))
        for layer in (*self.encoders0, *self.encoders):
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, mask, use_reentrant=False)
            else:
                x = layer(x, mask)
        return self.after_norm(x)

    @staticmethod
    def shapes_from_state_dict(state_dict: dict) -> dict[str, tuple[int, str]]:
        """What the tensor shapes determine: ``{field: (value, evidence)}``, the evidence naming the tensor
        and its shape (for errors). The head count and the FSMN shift leave no trace in the shapes."""
        qkv0 = "encoders0.0.self_attn.linear_q_k_v.weight"
        w1 = "encoders0.0.feed_forward.w_1.weight"
        fsmn = "encoders0.0.self_attn.fsmn_block.weight"
        later = sorted({int(k.split(".")[1]) for k in state_dict if k.startswith("encoders.")})

        def shape(key):
            return f"{key} has shape {tuple(state_dict[key].shape)}"

        return {
            "input_size": (state_dict[qkv0].shape[1], shape(qkv0)),
            "d_model": (state_dict[qkv0].shape[0] // 3, shape(qkv0)),
            "linear_units": (state_dict[w1].shape[0], shape(w1)),
            "num_blocks": (1 + len(later), f"the weights hold encoders0.0 and {len(later)} layers encoders.N"),
            "kernel_size": (state_dict[fsmn].shape[-1], shape(fsmn)),
        }

    @staticmethod
    def config_from_state_dict(state_dict: dict, **overrides) -> SANMEncoderConfig:
        """The architecture that the shapes determine (width, depth, FFN, kernel), plus ``overrides`` for
        what they cannot (``attention_heads``, ``sanm_shift``: otherwise the Paraformer-large defaults)."""
        fields = {name: value for name, (value, _) in SANMEncoder.shapes_from_state_dict(state_dict).items()}
        fields.update(overrides)
        return SANMEncoderConfig(**fields)
